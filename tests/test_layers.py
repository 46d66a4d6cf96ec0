"""The package's layering (.importlinter): import-linter's contracts hold, and every module of
app/ sits in a layer, so a new module cannot slip past the contract unnamed."""
import configparser
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _contracts() -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    parser.read(ROOT / ".importlinter")
    return parser


def _layers() -> list[list[str]]:
    """Top to bottom: the modules of each layer."""
    raw = _contracts()["importlinter:contract:layers"]["layers"]
    return [[m.strip() for m in line.replace("|", ":").split(":")] for line in raw.strip().splitlines()]


def _modules() -> list[str]:
    """Every module of the package, by dotted name (packages by their __init__)."""
    out = []
    for path in sorted((ROOT / "app").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out.append(".".join(parts[:-1] if parts[-1] in ("__init__", "__main__") else parts))
    return sorted(set(out) - {"app"})   # the package root holds only the public surface


def test_import_linter_keeps_every_contract():
    pytest.importorskip("importlinter")
    lint = Path(sys.executable).with_name("lint-imports")   # the console script beside this interpreter
    out = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-1000:]
    assert "3 kept, 0 broken" in out.stdout


def test_every_module_is_in_exactly_one_layer_in_the_documented_order():
    layers = _layers()
    named = [m for layer in layers for m in layer]
    assert len(named) == len(set(named)), "a module is named in two layers"
    for module in _modules():
        owners = [m for m in named if module == m or module.startswith(m + ".")]
        assert len(owners) == 1, f"{module} is in {owners or 'no layer'} of .importlinter"
    # the order the design names (docs/design.md, "Architecture"): each package over the ones it uses
    where = {m: i for i, layer in enumerate(layers) for m in layer}
    order = ["app.bench", "app.ui", "app.views", "app.evaluate", "app.audit", "app.flows", "app.attacks",
             "app.defences", "app.clip", "app.common"]
    assert [where[m] for m in order] == sorted(where[m] for m in order)
    assert len({where[m] for m in order}) == len(order), "two of the named layers were merged"
    # the layers are packages (or a command module), not loose files: app/ holds no other module
    assert {p.stem for p in (ROOT / "app").glob("*.py")} == {"__init__", "audit"}


def test_the_engine_may_import_neither_the_ui_nor_gradio():
    forbidden = _contracts()["importlinter:contract:engine-knows-no-gradio"]
    sources = set(forbidden["source_modules"].split())
    assert {"app.ui", "gradio"} <= set(forbidden["forbidden_modules"].split())
    engine = {m for layer in _layers()[2:] for m in layer}   # below the tools and the UI
    assert engine == sources
