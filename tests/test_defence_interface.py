"""The defence interface (app/defences/spec.py): outside app/defences/, no code asks which defence
runs, every defence declares what the rest reads, and an undeclared cost is refused."""
import ast
from pathlib import Path

import pytest

from app.defences import DEFENCES, PurifyConfig
from app.defences.spec import DefenceSpec

ROOT = Path(__file__).resolve().parent.parent
# Data that names a defence to run is not a branch: the lessons' and presets' settings, the toy tables,
# the benchmarks (each measures one named defence), and the package's public surface.
DATA = {"app/views/presets.py", "app/ui/lessons.py", "app/tools/eval_toy.py", "app/evaluate/protocols.py"}


def _outside_defences():
    for path in sorted((ROOT / "app").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if not rel.startswith(("app/defences/", "app/bench/")) and rel not in DATA:
            yield rel, ast.parse(path.read_text())


def test_nothing_outside_the_defences_branches_on_a_defence():
    keys = set(DEFENCES)
    found = []
    for rel, tree in _outside_defences():
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):   # x == "ttc", x in ("clipure-cos", ...)
                for c in ast.walk(node):
                    if isinstance(c, ast.Constant) and c.value in keys:
                        found.append(f"{rel}:{node.lineno} compares with {c.value!r}")
            if isinstance(node, ast.Attribute) and node.attr in ("pixel", "space", "official", "counter"):
                found.append(f"{rel}:{node.lineno} reads .{node.attr}")
            if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and node.slice.value in keys:
                found.append(f"{rel}:{node.lineno} looks up {node.slice.value!r}")
    assert not found, "\n".join(found)


@pytest.mark.parametrize("key", list(DEFENCES))
def test_every_defence_declares_what_the_rest_reads(key):
    spec, cfg = DEFENCES[key], PurifyConfig(defence=key)
    assert spec.label and spec.description.endswith(".")
    assert spec.default_threat_model in spec.threat_models
    for missing in {"undefended", "official", "adaptive", "bpda"} - set(spec.threat_models):
        assert spec.lacks[missing].endswith("."), f"{key} lacks {missing} without a sentence"
    assert spec.length(cfg) >= 1 and spec.point(cfg, 0) == "the input"
    bare = spec.query_cost(cfg, False)
    graded = spec.query_cost(cfg, True)
    assert graded.backwards > bare.backwards >= 0 and graded.forwards >= bare.forwards >= 1
    assert spec.score_cost(cfg).forwards >= 1
    assert isinstance(spec.describe(cfg), str) and isinstance(spec.record(cfg), dict)
    assert set(spec.reads) <= {f for f in PurifyConfig.__dataclass_fields__}


def test_a_defence_without_a_cost_or_threat_model_is_refused_at_registration():
    spec = DEFENCES["clipure-cos"]
    with pytest.raises(AssertionError, match="cost"):
        DefenceSpec("X", "x.", "pixel", spec.steps, spec.attacked, ("undefended",), "undefended", query_cost=None)
    with pytest.raises(AssertionError, match="default threat model"):
        DefenceSpec("X", "x.", "pixel", spec.steps, spec.attacked, ("undefended",), "adaptive")


def test_an_attack_without_a_cost_is_refused_at_registration():
    from app.attacks import ATTACKS, AttackSpec
    pgd = ATTACKS["PGD"]
    with pytest.raises(AssertionError, match="cost"):
        AttackSpec("X", "linf", pgd.build)


def test_the_dry_run_and_zerogpu_read_one_cost_model():
    """The evaluator's count and ZeroGPU's duration both grow with the defence's declared cost."""
    from app.flows.cost import attack_cost
    ttc = PurifyConfig(defence="ttc")
    k = ttc.own().steps
    # PGD-10 through TTC, adaptive: every forward is a query (K + 2 passes), every backward adds K + 2
    assert attack_cost("PGD", 10, 16, "adaptive", ttc) .forwards == 10 * (k + 2)
    assert attack_cost("PGD", 10, 16, "undefended", ttc).forwards == 10   # bare CLIP is attacked
