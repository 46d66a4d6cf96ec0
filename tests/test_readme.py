"""The README's engine snippet runs as written, and its API snippet matches the endpoints."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
LIMITS = (ROOT / "docs" / "limits.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_engine_snippet_runs(capsys):
    snippet = next(b for b in BLOCKS if "run_pipeline(" in b)
    exec(compile(snippet, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "-> purified:" in out and "L-inf 8.0/255" in out
    assert "official fp16 gradient, share of exact zeros: 1.0" in out


def test_api_snippet_names_real_endpoints():
    snippet = next(b for b in BLOCKS if "gradio_client" in b)
    for name in re.findall(r'api_name="(/\w+)"', snippet):
        assert name in ("/classify", "/attack", "/purify", "/run", "/compare", "/audit", "/paper_preset")


def test_readme_has_the_two_commands_and_ci_runs_the_test_one():
    ci = (ROOT / ".ci" / "run").read_text()
    test_cmd = next(line for line in README.splitlines() if line.endswith("python -m pytest -q"))
    assert test_cmd.replace(" -q", "") in ci.replace(" -q", "")
    assert any(line.endswith("python app.py") for line in README.splitlines())


def test_limits_table_matches_the_code():
    """Every field of app/common/limits.py is in docs/limits.md's table, with its default."""
    from dataclasses import fields

    from app.common.limits import Limits
    table = LIMITS[LIMITS.index("## The limits"):LIMITS.index("## Queue and cancelling")]
    for f in fields(Limits):
        row = next((line for line in table.splitlines() if f"`{f.name}`" in line), None)
        assert row is not None, f.name
        assert f"{f.default:,g}".replace(",", "") in row.replace(",", ""), (f.name, f.default, row)


def test_api_snippet_runs_against_a_launched_server(server, capsys):
    snippet = next(b for b in BLOCKS if "gradio_client" in b)
    exec(compile(snippet.replace("http://127.0.0.1:7860/", server), "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "threat model: adaptive" in out and "('a', True)" in out and "AutoAttack-custom" in out
