"""The dependency audit runs offline and fails when an installed package is below its floor."""
import subprocess
import sys
try:  # Python 3.11+; on 3.10 (ZeroGPU's Python) the same parser from PyPI
    import tomllib  # novermin: the 3.10 branch below
except ModuleNotFoundError:
    import tomli as tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "audit_deps.py"
PACKAGES = ["gradio", "starlette", "fastapi", "python-multipart", "h11", "pillow", "jinja2", "requests",
            "urllib3", "idna", "torch"]


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


def test_floors_cover_the_request_path_and_cite_their_advisories():
    floors = tomllib.loads((ROOT / "security" / "floors.toml").read_text())
    assert sorted(floors) == sorted(PACKAGES)
    for name, floor in floors.items():
        assert floor["min"] and floor["advisories"] and floor["source"].strip(), name


def test_installed_versions_meet_the_floors():
    out = run()
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == len(PACKAGES) and all(line.split()[0] in ("ok", "absent") for line in lines)


def test_a_version_below_its_floor_fails(tmp_path):
    floors = tmp_path / "floors.toml"
    floors.write_text('[pillow]\nmin = "999.0"\nadvisories = ["TEST-1"]\nsource = "test"\n'
                      '[no-such-package-xyz]\nmin = "1.0"\nadvisories = ["TEST-2"]\nsource = "test"\n')
    out = run("--floors", str(floors))
    assert out.returncode == 1
    assert "LOW    pillow" in out.stdout and "TEST-1" in out.stdout
    assert "absent no-such-package-xyz" in out.stdout
