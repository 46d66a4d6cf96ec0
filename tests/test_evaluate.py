"""The batch evaluator: outputs, resume after a kill, refusal of a changed config, 2-process sharding,
Wilson intervals, and one-sentence errors with exit status 2."""
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from app.common.errors import CLIPureError
from app.evaluate import PROTOCOLS, EvalConfig, run_evaluation
from app.evaluate.cli import main
from app.evaluate.runner import batch_seed
from app.evaluate.store import completed
from app.evaluate.tables import Z95, wilson
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
FAST = ["--data", "toy", "--backbone", "toy-shapes", "--template-set", "single", "--defences", "none,clipure-cos",
        "--attacks", "PGD", "--eps", "8", "--steps", "2", "--threat-models", "undefended,adaptive", "--no-progress"]
FILES = ("config.json", "results.jsonl", "summary.json", "table.md", "robust_vs_eps.png", "threat_models.png",
         "card.json")


def fast_cfg(**kw) -> EvalConfig:
    base = dict(data="toy", n=4, backbone="toy-shapes", template_set="single", batch_size=2,
                defences=("none", "clipure-cos"), attacks=("PGD",), eps=(8.0,), steps=2,
                threat_models=("undefended", "adaptive"))
    return EvalConfig(**{**base, **kw})


def results(out: Path) -> list[str]:
    """Sorted lines without the timing field, the part of a result that may differ between runs."""
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return sorted(json.dumps({k: v for k, v in r.items() if k != "seconds"}, sort_keys=True) for r in rows)


def env() -> dict:
    e = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        e.pop(k, None)
    return e


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted single-process run of fast_cfg()."""
    out = tmp_path_factory.mktemp("reference")
    stats = run_evaluation(fast_cfg(), out, progress=False)
    return out, stats


def test_wilson_interval_matches_its_closed_form():
    z = Z95
    for k, n in [(0, 10), (3, 10), (10, 10), (208, 500), (1, 1), (731, 1000)]:
        p = k / n
        # The Wilson interval's ends are the roots of (p - p_hat)^2 = z^2 p (1 - p) / n.
        roots = sorted(np.roots([1 + z * z / n, -(2 * p + z * z / n), p * p]).real)
        lo, hi = wilson(k, n)
        assert lo == pytest.approx(max(roots[0], 0.0), abs=1e-12) and hi == pytest.approx(min(roots[1], 1.0), abs=1e-12)
    assert wilson(0, 10)[1] == pytest.approx(z * z / 10 / (1 + z * z / 10))   # k = 0: upper end z^2/(n+z^2)
    assert wilson(5, 0) == (0.0, 1.0)


def test_every_output_file_is_written(reference):
    out, stats = reference
    for name in FILES:
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    keys = [r["setting"] for r in summary["rows"]]
    assert keys == ["none|PGD|8|undefended", "clipure-cos(eta=30)|PGD|8|undefended",
                    "clipure-cos(eta=30)|PGD|8|adaptive"]
    for r in summary["rows"]:
        assert r["n"] == 4 and r["robust_correct"] <= 4
        assert list(wilson(r["robust_correct"], 4)) == r["robust_ci95"]
    assert len(results(out)) == 12 and stats["result_lines_computed"] == 12
    line = json.loads((out / "results.jsonl").read_text().splitlines()[0])
    for field in ("image_id", "label", "defence", "attack", "eps", "threat_model", "clean_correct", "correct",
                  "pred", "linf_255", "l2", "seconds", "diagnostics"):
        assert field in line, field
    assert all(json.loads(x)["linf_255"] <= 8 + 1e-3 for x in results(out))
    card = json.loads((out / "card.json").read_text())
    assert card["versions"]["torch"] and card["device"]["device"] == "cpu" and card["backbone"]["precision"] == "fp32"
    assert card["seeds"]["batch_seeds"] == [batch_seed(0, [0, 1]), batch_seed(0, [2, 3])]
    assert card["run"]["images_per_second"] > 0 and card["config"]["eps"] == [8.0]
    table = (out / "table.md").read_text()
    assert "clipure-cos(eta=30) | PGD | 8 | adaptive | 4 |" in table
    assert (out / "robust_vs_eps.png").read_bytes()[:4] == b"\x89PNG"


def test_a_rerun_recomputes_nothing_and_a_changed_config_is_refused(reference, tmp_path):
    out, _ = reference
    before = (out / "results.jsonl").read_text()
    stats = run_evaluation(fast_cfg(), out, progress=False)
    assert stats["result_lines_computed"] == 0 and (out / "results.jsonl").read_text() == before
    with pytest.raises(CLIPureError, match=r"different configuration \(changed: eps\)"):
        run_evaluation(fast_cfg(eps=(4.0,)), out, progress=False)
    assert main(["--data", "toy", "--n", "4", "--batch-size", "2", "--out", str(out), *FAST[2:], "--eps", "4"]) == 2
    assert (out / "results.jsonl").read_text() == before


def test_partial_groups_are_dropped_on_resume():
    lines = [{"batch": 0, "setting": "a"}, {"batch": 0, "setting": "a"}, {"batch": 0, "setting": "b"},
             {"batch": 1, "setting": "a"}]
    done, keep = completed(lines, {0: 2, 1: 1})
    assert done == {(0, "a"), (1, "a")} and len(keep) == 3


# About 30 s (two processes). Its fast ones resume in-process: the rerun test above and
# tests/test_evaluate_store.py's cut at any offset.
@pytest.mark.slow
def test_resume_after_sigkill_equals_an_uninterrupted_run(tmp_path):
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "app.evaluate", "--n", "6", "--batch-size", "1", "--out", str(out), *FAST]
    proc = subprocess.Popen(args, cwd=ROOT, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    res = out / "results.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if res.exists() and len(res.read_text().splitlines()) >= 3:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed: " + proc.stderr.read().decode()[-500:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = [json.loads(x) for x in res.read_text().splitlines() if x.endswith("}")]
    assert 3 <= len(kept) < 18
    done = subprocess.run(args, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout.strip().splitlines()[-1])
    # Batch size 1: each line is a whole group. Lines on disk before the kill stay as they were,
    # timing included (so they were not recomputed), and only the rest is computed.
    assert stats["result_lines_computed"] == 18 - len(kept)
    after = [json.loads(x) for x in res.read_text().splitlines()]
    for r in kept:
        assert r in after
    fresh = tmp_path / "fresh"
    assert main(["--n", "6", "--batch-size", "1", "--out", str(fresh), *FAST]) == 0
    assert results(out) == results(fresh)


def _torchrun(out: Path, extra: list[str], nproc: int = 2) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
            "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
            "-m", "app.evaluate", "--out", str(out), *extra]
    return subprocess.run(args, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300)


def test_two_gloo_processes_equal_one(reference, tmp_path):
    """Two gloo processes write what one writes (the fast one of the 2-process tests; the
    batch-coupled one below is `slow`)."""
    out, _ = reference
    done = _torchrun(tmp_path / "two", ["--num-images", "4", "--batch-size", "2", *FAST])
    assert done.returncode == 0, done.stderr[-2000:]
    stats = json.loads(done.stdout.strip().splitlines()[-1])
    assert stats["world_size"] == 2 and stats["backend"] == "gloo"
    assert results(tmp_path / "two") == results(out)
    for name in FILES:
        assert (tmp_path / "two" / name).exists(), name


@pytest.mark.slow   # about 40 s
def test_two_processes_equal_one_with_the_official_batch_coupling(tmp_path):
    """Batch-coupled gradient norm (batch mates share a norm): sharding must keep batches whole."""
    extra = ["--data", "toy", "--model", "tiny-random", "--templates", "single", "--defences", "clipure-cos",
             "--eta", "30,0.5", "--grad-scope", "batch", "--attacks", "PGD,APGD-CE", "--eps", "4,8", "--steps", "2",
             "--threat-models", "official,bpda", "--batch-size", "3", "--no-progress"]
    assert _torchrun(tmp_path / "two", ["--num-images", "9", *extra]).returncode == 0
    assert main(["--n", "9", "--out", str(tmp_path / "one"), *extra]) == 0
    assert results(tmp_path / "two") == results(tmp_path / "one")


@pytest.mark.parametrize("argv, pattern", [
    (["--eps", "x"], r"--eps takes numbers"),
    (["--bogus"], r"unrecognized arguments: --bogus"),
    (["--n", "many"], r"invalid int value"),
    (["--data", "/no/such/folder"], r"is not toy, cifar10, cifar100 or an existing folder"),
    (["--data", "cifar10"], r"needs --root"),
    (["--attacks", "Nope"], r"Unknown attack 'Nope'; choose one of: none, FGSM"),
    (["--defences", "clipure-magic"], r"Unknown defence 'clipure-magic'; choose one of: none, clipure-cos"),
    (["--threat-models", "psychic"], r"Unknown threat model"),
    (["--model", "ViT-Z"], r"Unknown backbone"),
    (["--protocol", "folklore"], r"Unknown protocol 'folklore'; choose one of: paper"),
    (["--data", "toy"], r"--out is required"),
])
def test_bad_input_gives_one_sentence_and_exit_2(argv, pattern, capsys, tmp_path):
    out = [] if pattern == "--out is required" else ["--out", str(tmp_path / "out")]
    assert main(argv + out) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.endswith(".") and __import__("re").search(pattern, err), err


def test_dry_run_counts_passes_and_estimates_time(capsys):
    assert main(["--dry-run", "--n", "4", "--batch-size", "2", *FAST]) == 0
    text = capsys.readouterr().out
    # PGD-2 per image: undefended (shared by both defences) and adaptive -> 2 attacks x 2 backward passes;
    # forwards, upper bounds from the one cost model: those 2 x 2 queries, each defence's clean scoring
    # (bare CLIP and CLIPure-Cos: 1 pass each) and the scoring of each setting's x_adv (3 settings): 9 an image.
    assert "backward_passes: 16" in text and "forward_passes: 36" in text and "estimated time" in text


def test_the_paper_protocol_is_defined_once_and_flags_override_it(tmp_path):
    from app.evaluate.cli import config_from_args, parser
    p = PROTOCOLS["paper"].values
    assert (p["attacks"], p["eps"], p["steps"], p["batch_size"], p["precision"], p["threat_models"]) == (
        ("AutoAttack-custom",), (4.0,), 100, 2, "fp16", ("official",))
    assert (p["purify_step_sizes"], p["purify_steps"], p["momentum"], p["grad_scope"], p["template_set"]) == (
        (30.0,), 10, 0.0, "batch", "ensemble")
    cfg = config_from_args(parser().parse_args(["--protocol", "paper", "--data", "toy", "--precision", "fp32"]))
    assert cfg.precision == "fp32" and cfg.steps == 100 and cfg.protocol == "paper"


def test_the_protocol_attack_runs_apgd_ce_then_apgd_t(tmp_path):
    cfg = fast_cfg(n=2, defences=("none",), attacks=("AutoAttack-custom",), steps=2, threat_models=("undefended",))
    run_evaluation(cfg, tmp_path, progress=False)
    rows = json.loads((tmp_path / "summary.json").read_text())["rows"]
    assert rows[0]["n"] == 2 and rows[0]["robust_correct"] <= rows[0]["clean_correct"]


def test_batch_seeds_depend_on_the_seed_and_image_ids_only():
    assert batch_seed(0, [0, 1]) == batch_seed(0, [0, 1]) != batch_seed(1, [0, 1]) != batch_seed(0, [2, 3])
    assert 0 <= batch_seed(7, ["n01440764/x.JPEG"]) < 2**31 - 1 and math.isfinite(batch_seed(0, []))


def test_image_folder_with_a_classnames_file(tmp_path):
    from PIL import Image

    from app.evaluate.data import open_dataset
    for k, folder in enumerate(["a_cat", "b_dog"]):
        (tmp_path / "data" / folder).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (40, 30), (100 * k, 50, 50 * i)).save(tmp_path / "data" / folder / f"{i}.png")
    (tmp_path / "names.txt").write_text("cat\ndog\n")
    ds = open_dataset(str(tmp_path / "data"), n=3, classnames=str(tmp_path / "names.txt"))
    assert ds.classnames == ["cat", "dog"] and len(ds) == 3
    assert all(ds.labels[i] == (0 if ds.ids[i].startswith("a_cat") else 1) for i in range(3))
    with pytest.raises(CLIPureError, match="1,000 synset folders"):
        open_dataset(str(tmp_path / "data"), classnames="imagenet")


def test_fp16_official_is_flagged_from_the_diagnostics_and_randomised_defences_get_eot(tmp_path):
    """--diagnostics: each line carries the attacker's gradient; fp16 `official` gets exactly-zero
    gradients, so the summary's masking check (a) flags it. CLIPure-Diff is attacked with EOT 10."""
    cfg = EvalConfig(data="toy", n=4, backbone="toy-shapes", precision="fp16", template_set="single", batch_size=2,
                     defences=("clipure-cos",), attacks=("PGD",), eps=(8.0,), steps=2,
                     threat_models=("official", "adaptive"), diagnostics=True)
    run_evaluation(cfg, tmp_path / "a", progress=False)
    lines = [json.loads(x) for x in (tmp_path / "a" / "results.jsonl").read_text().splitlines()]
    official = [ln for ln in lines if ln["threat_model"] == "official"]
    assert official and all(ln["diagnostics"]["zero_fraction"] == 1.0 for ln in official)
    assert all(ln["diagnostics"]["norm"] > 0 for ln in lines if ln["threat_model"] == "adaptive")
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert {"check": "a", "setting": "clipure-cos(eta=30)|PGD|8|official"} in [
        {k: f[k] for k in ("check", "setting")} for f in summary["audit_flags"]]
    assert "masking check (a)" in (tmp_path / "a" / "table.md").read_text()

    from app.evaluate.data import open_dataset
    from app.evaluate.runner import Evaluator
    diff = EvalConfig(data="toy", n=2, backbone="toy-shapes", template_set="single", batch_size=2,
                      defences=("clipure-diff",), attacks=("PGD",), eps=(8.0,), steps=1,
                      threat_models=("undefended", "adaptive"))
    ev = Evaluator(diff, open_dataset("toy", 2, None, None))
    eots = {s.threat_model: ev._attack_config(s, 0).eot for s in diff.settings()}
    assert eots == {"undefended": 1, "adaptive": 10}
