"""What people read and download: captions, the JSON and CSV exports, the compare table."""
import csv
import io
import json

import pytest

from app.views import comparison, export, report
from app.attacks import AttackConfig
from app.flows.pipeline import compare_threat_models, run_pipeline
from app.defences import PurifyConfig
from app.flows.request import Request
from tests.conftest import CLASSES


@pytest.fixture(scope="module")
def result(noise_image):
    return run_pipeline(noise_image, CLASSES, AttackConfig(attack="PGD", eps=8, steps=3, threat_model="bpda"),
                        PurifyConfig(steps=4, step_size=0.5), backbone="tiny-random", template_set="single")


def test_caption_names_everything_a_robustness_figure_needs(result):
    cap = report.caption(result)
    for part in ("threat model: bpda", "PGD", "L-inf eps 8/255", "3 steps", "tiny-random", "MEANINGLESS",
                 "clipure-cos T=4 eta=0.5 gamma=0"):
        assert part in cap, (part, cap)
    assert report.caption(result, threat_model="each row").startswith("threat model: each row |")


def test_json_carries_the_outcome_the_trajectories_and_the_configs(result):
    data = json.loads(export.to_json(result))
    assert data["attack_succeeded"] == {"bare_clip": result.outcome.fooled_clip,
                                        "defence": result.outcome.fooled_defence}
    assert data["defence_changed_clean"] == result.outcome.defence_changed_clean
    assert data["attack_config"]["threat_model"] == "bpda" and data["attack_config"]["eps"] == 8
    assert data["defence"]["steps"] == 4
    assert [r["step"] for r in data["trajectory"]] == [0, 1, 2, 3, 4] * 2
    assert len(data["embeddings"]["clean"]) == 5 and len(data["embeddings"]["clean"][0]) == 64
    assert data["purified"]["label"] == result.purified.label
    assert abs(data["perturbation"]["linf_255"] - result.attack.linf_255) < 1e-9 <= data["perturbation"]["linf_255"]


def test_csv_has_one_row_per_step_and_probabilities_that_sum_to_one(result):
    rows = list(csv.DictReader(io.StringIO(export.to_csv(result))))
    assert len(rows) == 2 * 5
    for row in rows:
        total = sum(float(v) for k, v in row.items() if k.startswith("p["))
        assert abs(total - 1) < 1e-4
        assert row["top1"] in CLASSES


def test_export_writes_the_files_and_the_png_is_exactly_the_evaluated_image(result, tmp_path):
    import numpy as np
    from PIL import Image
    files = export.export(result, tmp_path)
    for key in ("adversarial", "clean", "perturbation", "json", "csv"):
        assert files[key].is_file()
    png = np.asarray(Image.open(files["adversarial"]), dtype=np.float32) / 255
    x_adv = result.x_adv[0].permute(1, 2, 0).numpy()
    assert np.abs(png - x_adv).max() < 1e-6


def test_compare_table_has_a_row_per_threat_model(noise_image):
    results = compare_threat_models(Request(noise_image, CLASSES, "tiny-random", "single"),
                                    AttackConfig(attack="FGSM", eps=8))
    table = comparison.compare_table(results)
    assert table["headers"] == [c.replace("the defence", "CLIPure-Cos") for c in comparison.COMPARE_COLUMNS]
    from app.attacks.threat_models import THREAT_MODELS
    assert [row[0] for row in table["data"]] == [tm.label for tm in THREAT_MODELS.values()]
    for row, r in zip(table["data"], results):    # the yes/no columns are the scorer's Outcome
        assert row[3] == ("yes" if r.outcome.fooled_clip else "no")
        assert row[4] == ("yes" if r.outcome.fooled_defence else "no")


@pytest.fixture(scope="module")
def changed_clean():
    """CLIPure-Diff with the small toy prior moves the red circle to yellow square before any attack."""
    from app.views.presets import EXAMPLES_DIR
    names = "red circle, red square, yellow square, yellow circle, blue square, green triangle"
    r = run_pipeline(EXAMPLES_DIR / "toy-red-circle.png", names, AttackConfig(attack="PGD", eps=4, steps=1),
                     PurifyConfig(defence="clipure-diff", seed=0), backbone="toy-shapes", template_set="single")
    assert r.outcome.defence_changed_clean and not r.outcome.fooled_defence, (r.clean.label, r.clean_purified.label)
    return r


def test_a_failed_attack_on_clipure_says_clipure_had_already_changed_the_clean_answer(changed_clean):
    r = changed_clean
    change = f"{r.clean.label} → {r.clean_purified.label}"
    assert report.clean_change(r) == change
    note = report.outcome_notes(r)["purified_note"]
    assert "**failed**" in note and "already changed the clean answer" in note and change in note, note
    assert f"only means it stayed on {r.clean_purified.label}" in note
    assert any("already changed the clean answer" in c and change in c for c in report.caveats(r))


def test_the_clean_change_is_said_exactly_when_the_outcome_has_it(result):
    changed = result.outcome.defence_changed_clean
    assert (report.clean_change(result) is not None) == changed
    assert ("already changed" in report.outcome_notes(result)["purified_note"]) == changed


def test_the_record_says_what_ran(tmp_path):
    """The JSON names the app's version and commit, the packages, the device, the precision, the
    upload's SHA-256 and the evaluated pixels' (those of the exported clean.png); under `official` the
    caption and the JSON say the attacked graph ran the batch norm, whatever the page's scope."""
    import hashlib
    from importlib.metadata import version

    import numpy as np
    from PIL import Image

    import app
    from app.clip.models import TOY_DIR
    image = TOY_DIR.parent / "examples" / "toy-red-circle.png"
    r = run_pipeline(image, "red circle, blue square, green triangle", AttackConfig(attack="PGD", eps=4, steps=1,
                     threat_model="official"), PurifyConfig(grad_scope="sample"), backbone="toy-shapes",
                     template_set="single")
    data = json.loads(export.to_json(r))
    run = data["run"]
    assert run["app_version"] == app.__version__ and run["precision"] == "fp32" and run["device"] == "cpu"
    assert run["commit"] is None or len(run["commit"].split("-")[0]) == 40
    assert run["packages"]["torch"] == version("torch") and run["packages"]["open_clip_torch"] == version("open_clip_torch")
    assert run["input_sha256"] == hashlib.sha256(image.read_bytes()).hexdigest()
    files = export.export(r, tmp_path)
    pixels = np.asarray(Image.open(files["clean"]).convert("RGB")).tobytes()
    assert run["pixels_sha256"] == hashlib.sha256(pixels).hexdigest()
    assert data["defence"]["grad_scope"] == "sample" and data["defence"]["grad_scope_attacked"] == "batch"
    assert "the attacked graph: batch" in data["caption"]
    bpda = run_pipeline(image, "red circle, blue square, green triangle", AttackConfig(attack="PGD", eps=4, steps=1,
                        threat_model="bpda"), backbone="toy-shapes", template_set="single")
    assert "attacked graph" not in report.caption(bpda) and export.to_dict(bpda)["defence"]["grad_scope_attacked"] == "sample"


def test_words_the_model_does_not_know_get_a_notice_and_no_verdict():
    """The bundled model gives each of five unknown words 20%: the page says it does not know them,
    lists what it knows, and reports no attack verdict; a known vocabulary gets none of that."""
    from app.clip.models import TOY_CLASSNAMES, TOY_DIR
    from app.flows.scoring import near_uniform
    from app.ui import callbacks as cb
    image = TOY_DIR.parent / "examples" / "toy-green-circle.png"
    r = run_pipeline(image, "cat, dog, car, plane, tree", AttackConfig(attack="PGD", eps=4, steps=2),
                     backbone="toy-shapes", template_set="single")
    assert near_uniform(r.clean.probs)
    notes = report.outcome_notes(r)
    assert "does not know these class names" in notes["clean_note"] and TOY_CLASSNAMES[0] in notes["clean_note"]
    assert notes["adv_note"].startswith("**No verdict") and "succeeded" not in notes["purified_note"]
    assert "succeeded" not in cb.done_status(r, 1.0) and "No attack verdict" in cb.done_status(r, 1.0)
    assert "No attack verdict" in report.stats_markdown(r, 1.0) and "Attack succeeded" not in report.stats_markdown(r, 1.0)
    assert export.to_dict(r)["verdict_meaningful"] is False
    assert any("knows only its 16 shape names" in w and "'cat'" in w for w in r.warnings)
    row = comparison.threat_model_row(r)
    assert row["fooled bare CLIP"] == row["fooled the defence"] == "no verdict"
    known = run_pipeline(image, "red circle, green circle, blue square", AttackConfig(attack="PGD", eps=4, steps=2),
                         backbone="toy-shapes", template_set="single")
    assert not near_uniform(known.clean.probs) and export.to_dict(known)["verdict_meaningful"] is True
    assert not known.warnings and "does not know" not in report.outcome_notes(known)["clean_note"]
    assert near_uniform([0.5, 0.5]) and near_uniform([0.22, 0.2, 0.2, 0.19, 0.19]) and not near_uniform([0.7, 0.3])
