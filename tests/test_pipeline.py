"""The one pipeline call: streaming events, the result's shape, determinism, encoder passes."""
import pytest
import torch

from app.attacks import AttackConfig
from app.flows.pipeline import run, run_pipeline
from app.flows.request import Request
from app.defences import PurifyConfig
from tests.conftest import CLASSES


def test_events_stream_then_result(noise_image):
    events = list(run(Request(noise_image, CLASSES, "tiny-random", "single"), AttackConfig(attack="PGD", eps=8, steps=4),
                      PurifyConfig(steps=6)))
    phases = [e.phase for e in events]
    assert phases[0] == "prepare" and phases[-1] == "done"
    # CLIPure's clean answer labels the attack, so the clean trajectory comes first
    assert phases.index("purify-clean") < phases.index("attack") < phases.index("purify-adv")
    attack_steps = [e for e in events if e.phase == "attack-step"]
    assert [e.message for e in attack_steps] == [f"PGD: step {k}/4" for k in range(1, 5)]   # one per PGD step
    adv_steps = [e.step.step for e in events if e.phase == "purify-adv"]
    assert adv_steps == list(range(7))                  # steps + 1 points, in order
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    res = events[-1].result
    assert res.adv_trajectory.embeddings.shape == (7, 1, 64)
    assert res.clean_trajectory.probs.shape == (7, 1, len(CLASSES))
    assert res.meaningless and res.purified.label == CLASSES[res.adv_trajectory.top1[-1, 0]]
    assert abs(sum(res.clean.probs) - 1) < 1e-5
    assert res.attack.linf_255 <= 8 + 1e-4


def test_same_seed_same_result(noise_image):
    kw = dict(attack=AttackConfig(attack="APGD-CE", eps=8, steps=5, seed=3, threat_model="adaptive"),
              purify=PurifyConfig(steps=4, step_size=0.5), backbone="tiny-random", template_set="single")
    a, b = run_pipeline(noise_image, CLASSES, **kw), run_pipeline(noise_image, CLASSES, **kw)
    assert torch.equal(a.x_adv, b.x_adv)
    assert torch.equal(a.adv_trajectory.embeddings, b.adv_trajectory.embeddings)
    assert a.purified == b.purified


def test_no_attack_means_clean_only(noise_image):
    res = run_pipeline(noise_image, CLASSES, attack=None, backbone="tiny-random", template_set="single")
    assert res.attack is None and res.adv_trajectory is None and res.clean_trajectory.steps == 10


def test_bad_settings_are_refused_before_any_text_encoding(noise_image, tiny, monkeypatch):
    import pytest

    from app.common.errors import InvalidImageError, OutOfRangeError
    calls = []
    monkeypatch.setattr(tiny.model, "encode_text", lambda *a, **k: calls.append(1))
    names = ["never", "encoded", "names"]          # not in the cache: encoding them would call encode_text
    with pytest.raises(OutOfRangeError, match="L-inf eps"):
        run_pipeline(noise_image, names, AttackConfig(eps=99), backbone="tiny-random", template_set="ensemble")
    with pytest.raises(InvalidImageError):
        run_pipeline(b"not an image", names, AttackConfig(), backbone="tiny-random", template_set="ensemble")
    assert calls == []


@pytest.mark.parametrize("attack, own", [("FGSM", 1), ("PGD", 3)])
def test_each_image_is_encoded_once_per_request(noise_image, tiny, monkeypatch, attack, own):
    """Encoder calls per request = the attack's own forward passes + 2 (clean and adversarial)."""
    run_pipeline(noise_image, CLASSES, attack=None, backbone="tiny-random", template_set="single")  # warm caches
    calls = []
    encode_image = tiny.model.encode_image
    monkeypatch.setattr(tiny.model, "encode_image", lambda *a, **k: calls.append(1) or encode_image(*a, **k))
    cfg = AttackConfig(attack=attack, eps=8, steps=own, threat_model="adaptive")
    res = run_pipeline(noise_image, CLASSES, cfg, backbone="tiny-random", template_set="single", diagnose=False)
    assert res.attack.forwards == own
    assert len(calls) == own + 2
    calls.clear()   # gradient diagnostics: two more passes, the attacker's gradient and the exact one
    res = run_pipeline(noise_image, CLASSES, cfg, backbone="tiny-random", template_set="single")
    assert len(calls) == own + 2 + 2 and res.gradient.norm > 0


def test_compare_encodes_the_clean_image_once(noise_image, tiny, monkeypatch):
    from app.flows.pipeline import compare_threat_models
    from app.attacks.threat_models import THREAT_MODELS
    run_pipeline(noise_image, CLASSES, attack=None, backbone="tiny-random", template_set="single")
    calls = []
    encode_image = tiny.model.encode_image
    monkeypatch.setattr(tiny.model, "encode_image", lambda *a, **k: calls.append(1) or encode_image(*a, **k))
    results = compare_threat_models(Request(noise_image, CLASSES, "tiny-random", "single"),
                                    AttackConfig(attack="FGSM", eps=8))
    assert [r.attack_config.threat_model for r in results] == list(THREAT_MODELS)
    # clean once; per threat model: FGSM + x_adv, and the gradient diagnostics (the attacker's and the exact)
    assert len(calls) == 1 + len(THREAT_MODELS) * (1 + 1 + 2)
    assert all(r.gradient is not None for r in results)
    assert all(r.clean_trajectory is results[0].clean_trajectory for r in results)


def test_cold_text_encoding_reports_progress_and_a_closed_stream_stops_it(noise_image, tiny, monkeypatch):
    import threading
    import time

    from app.common.budget import Budget
    names = ["alpha", "beta", "gamma", "delta", "epsilon"]       # 5 x 80 templates: two chunks of prompts
    events = list(run(Request(noise_image, names, "tiny-random", "ensemble"), None))
    progress = [e.message for e in events if e.message.startswith("Encoding the class names")]
    assert progress and progress[-1] == "Encoding the class names: 5/5"

    encode_text = tiny.model.encode_text
    monkeypatch.setattr(tiny.model, "encode_text", lambda *a, **k: time.sleep(0.4) or encode_text(*a, **k))
    stream = run(Request(noise_image, ["one", "two", "three", "four"], "tiny-random", "ensemble"), None,
                 budget=Budget(60))
    while next(stream).phase != "heartbeat":   # the encoding has started in its worker
        pass
    stream.close()                              # what Gradio does on a cancel or a disconnect
    deadline = time.monotonic() + 2.0
    while any(t.name == "clipure-prepare" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(t.name == "clipure-prepare" for t in threading.enumerate())


def test_autoattack_progress_names_its_apgd_run_and_step():
    """torchattacks reports nothing inside AutoAttack: the pipeline's progress still says which APGD
    run (restart or target class) and which step it is at, and moves forward."""
    from app.flows.pipeline import run
    from app.views.presets import EXAMPLES_DIR
    names = "red circle, blue square, green triangle, yellow cross, red square"
    events = [e for e in run(Request(EXAMPLES_DIR / "toy-red-circle.png", names, "toy-shapes", "single", "fp16"),
                             AttackConfig(attack="AutoAttack-custom", eps=4, steps=3, threat_model="official"),
                             diagnose=False)
              if e.phase == "attack-step"]
    messages = [e.message for e in events]
    assert "AutoAttack-custom: APGD-CE restart 1/5, step 0/3" in messages
    assert any(m.startswith("AutoAttack-custom: APGD-T target 1/") for m in messages), messages
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and 0.05 <= fractions[0] < fractions[-1] <= 0.75


def test_compare_reports_each_row_as_it_starts(noise_image, tiny):
    from app.flows.pipeline import compare_threat_models
    said = []
    compare_threat_models(Request(noise_image, CLASSES, "tiny-random", "single"), AttackConfig(attack="FGSM", eps=8),
                          on_progress=lambda f, m: said.append((f, m)))
    rows = [m for _, m in said if m.startswith("row ") and "," not in m]
    assert rows == ["row 1/4: undefended", "row 2/4: official", "row 3/4: adaptive", "row 4/4: bpda"]
    assert any(m.startswith("row 2/4: official, FGSM forward pass") for _, m in said)
