"""The install route lifts torchattacks' pinned requests (and its urllib3, idna) to fixed releases."""
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version


@pytest.mark.parametrize("package, floor", [("requests", "2.32.4"), ("urllib3", "2.5.0"), ("idna", "3.7")])
def test_no_known_vulnerable_versions(package, floor):
    assert Version(version(package)) >= Version(floor), f"{package} {version(package)} < {floor}"


def test_torchattacks_is_the_pinned_release():
    assert version("torchattacks") == "3.5.1"


ROOT = Path(__file__).resolve().parent.parent


def requirements(path: Path) -> dict[str, Requirement]:
    """name -> Requirement for each requirement line of a pip requirements file."""
    reqs = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            req = Requirement(line)
            reqs[canonicalize_name(req.name)] = req
    return reqs


def test_the_first_install_resolves_the_torch_that_requirements_accepts():
    """torchattacks accepts any torch: without the pins in pre-requirements.txt, its install
    resolves the newest torch and requirements.txt then replaces it (two torch stacks)."""
    pre, main = requirements(ROOT / "pre-requirements.txt"), requirements(ROOT / "requirements.txt")
    for name in ("torch", "torchvision"):
        assert name in pre, f"{name} is not pinned in pre-requirements.txt"
        assert pre[name].specifier == main[name].specifier, (name, str(pre[name]), str(main[name]))
    assert "torchattacks" in pre and pre["torchattacks"].specifier == SpecifierSet("==3.5.1")


def test_the_space_runs_zerogpus_python_and_the_code_needs_no_newer_one():
    """ZeroGPU documents Python 3.10.13; vermin finds the oldest Python each file needs."""
    head = (ROOT / "README.md").read_text().split("---")[1]
    fields = dict(line.split(": ", 1) for line in head.strip().splitlines())
    assert fields["python_version"].strip('"').startswith("3.10"), fields["python_version"]
    pytest.importorskip("vermin")
    vermin = Path(sys.executable).with_name("vermin")   # the console script beside this interpreter
    out = subprocess.run([str(vermin), "--no-tips", "--violations", "-t=3.10-",
                          "--eval-annotations",
                          "app", "tests", "scripts", "app.py"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-1000:]
