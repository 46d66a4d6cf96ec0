"""What people read and download: captions, the JSON and CSV exports, the compare table."""
import csv
import io
import json

import pytest

from app import report
from app.attacks import AttackConfig
from app.pipeline import compare_threat_models, run_pipeline
from app.purifiers import PurifyConfig
from tests.conftest import CLASSES


@pytest.fixture(scope="module")
def result(noise_image):
    return run_pipeline(noise_image, CLASSES, AttackConfig(attack="PGD", eps=8, steps=3, threat_model="bpda"),
                        PurifyConfig(steps=4, step_size=0.5), model="tiny-random", template_set="single")


def test_caption_names_everything_a_robustness_figure_needs(result):
    cap = report.caption(result)
    for part in ("threat model: bpda", "PGD", "L-inf eps 8/255", "3 steps", "tiny-random", "MEANINGLESS",
                 "clipure-cos T=4 eta=0.5 gamma=0"):
        assert part in cap, (part, cap)
    assert report.caption(result, threat_model="each row").startswith("threat model: each row |")


def test_json_carries_the_outcome_the_trajectories_and_the_configs(result):
    data = json.loads(report.to_json(result))
    assert data["attack_succeeded"] == {"bare_clip": result.outcome.fooled_clip,
                                        "clipure": result.outcome.fooled_clipure}
    assert data["clipure_changed_clean"] == result.outcome.clipure_changed_clean
    assert data["attack_config"]["threat_model"] == "bpda" and data["attack_config"]["eps"] == 8
    assert data["purify_config"]["steps"] == 4
    assert [r["step"] for r in data["trajectory"]] == [0, 1, 2, 3, 4] * 2
    assert len(data["embeddings"]["clean"]) == 5 and len(data["embeddings"]["clean"][0]) == 64
    assert data["purified"]["label"] == result.purified.label
    assert abs(data["perturbation"]["linf_255"] - result.attack.linf_255) < 1e-9 <= data["perturbation"]["linf_255"]


def test_csv_has_one_row_per_step_and_probabilities_that_sum_to_one(result):
    rows = list(csv.DictReader(io.StringIO(report.to_csv(result))))
    assert len(rows) == 2 * 5
    for row in rows:
        total = sum(float(v) for k, v in row.items() if k.startswith("p["))
        assert abs(total - 1) < 1e-4
        assert row["top1"] in CLASSES


def test_export_writes_the_files_and_the_png_is_exactly_the_evaluated_image(result, tmp_path):
    import numpy as np
    from PIL import Image
    files = report.export(result, tmp_path)
    for key in ("adversarial", "clean", "perturbation", "json", "csv"):
        assert files[key].is_file()
    png = np.asarray(Image.open(files["adversarial"]), dtype=np.float32) / 255
    x_adv = result.x_adv[0].permute(1, 2, 0).numpy()
    assert np.abs(png - x_adv).max() < 1e-6


def test_compare_table_has_a_row_per_threat_model(noise_image):
    results = compare_threat_models(noise_image, CLASSES, AttackConfig(attack="FGSM", eps=8), model="tiny-random",
                                    template_set="single")
    table = report.compare_table(results)
    assert table["headers"] == report.COMPARE_COLUMNS
    from app.threat_models import THREAT_MODELS
    assert [row[0] for row in table["data"]] == [tm.label for tm in THREAT_MODELS.values()]
    for row, r in zip(table["data"], results):    # the yes/no columns are the scorer's Outcome
        assert row[3] == ("yes" if r.outcome.fooled_clip else "no")
        assert row[4] == ("yes" if r.outcome.fooled_clipure else "no")


@pytest.fixture(scope="module")
def changed_clean():
    """CLIPure-Diff with the small toy prior moves the red circle to yellow square before any attack."""
    from app.presets import EXAMPLES_DIR
    names = "red circle, red square, yellow square, yellow circle, blue square, green triangle"
    r = run_pipeline(EXAMPLES_DIR / "toy-red-circle.png", names, AttackConfig(attack="PGD", eps=4, steps=1),
                     PurifyConfig(method="clipure-diff", seed=0), model="toy-shapes", template_set="single")
    assert r.outcome.clipure_changed_clean and not r.outcome.fooled_clipure, (r.clean.label, r.clean_purified.label)
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
    changed = result.outcome.clipure_changed_clean
    assert (report.clean_change(result) is not None) == changed
    assert ("already changed" in report.outcome_notes(result)["purified_note"]) == changed
