"""JPEG compression (Guo et al. 2018), the third defence, declared in one file: the round trip is
Pillow's libjpeg, the exact gradient through it is zero (shattered gradients), BPDA's is bare CLIP's
at x_jpeg, and the masking audit flags it; every threat model end to end on the bundled model."""
import io
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from app.attacks import AttackConfig
from app.attacks.threat_models import attacked_model, check_threat_model
from app.common.errors import CLIPureError, UnsupportedError
from app.defences import JPEGConfig, PurifyConfig
from app.defences.defence import Defence
from app.defences.jpeg import compress
from app.flows.scoring import score

JPEG = PurifyConfig(defence="jpeg")
RED_CIRCLE = "assets/examples/toy-red-circle.png"
TOY_NAMES = "red circle, blue square, green triangle, yellow cross"


@pytest.fixture(scope="module")
def tiny_jpeg(tiny_setup):
    clf, blank = tiny_setup
    return Defence(clf, blank, JPEG, "tiny-random")


def _images(n, size, seed=0):
    return torch.rand((n, 3, size, size), generator=torch.Generator().manual_seed(seed))


def test_the_round_trip_is_pillows_libjpeg_at_the_quality_given():
    x = _images(2, 32)
    for q in (75, 20):
        pixels = (x[1] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="JPEG", quality=q)
        want = np.asarray(Image.open(buf).convert("RGB"), dtype=np.float32) / 255
        assert torch.equal(compress(x, q)[1], torch.from_numpy(want).permute(2, 0, 1))
    assert not torch.equal(compress(x, 75), compress(x, 20))
    with pytest.raises(CLIPureError, match="JPEG quality"):
        PurifyConfig(defence="jpeg", params=JPEGConfig(quality=0)).validate()


def test_the_exact_gradient_is_zero_and_bpda_is_bare_clips_at_x_jpeg(tiny_jpeg, tiny):
    size = tiny.image_size
    x = _images(2, size, 1)
    y = torch.tensor([0, 1])
    grads = {}
    for tm in ("adaptive", "bpda"):
        xx = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(attacked_model(tm, tiny_jpeg)(xx), y), xx)
        grads[tm] = g
    assert torch.count_nonzero(grads["adaptive"]) == 0        # shattered: piecewise constant in x
    xj = compress(x, 75).requires_grad_(True)
    (ref,) = torch.autograd.grad(F.cross_entropy(tiny_jpeg.classifier(xj), y), xj)
    assert torch.allclose(grads["bpda"], ref, atol=1e-6) and ref.abs().sum() > 0


def test_its_trajectory_is_the_input_and_the_compressed_image(tiny_jpeg, tiny):
    size = tiny.image_size
    x = _images(3, size, 2)
    s = score(tiny_jpeg, x)
    assert s.trajectory.steps == 1 and torch.equal(s.trajectory.pixels[0], x)
    assert torch.equal(s.trajectory.pixels[1], compress(x, 75))
    assert torch.equal(s.bare, tiny_jpeg.classifier(x).argmax(-1))
    assert torch.equal(s.purified, tiny_jpeg.classifier(compress(x, 75)).argmax(-1))


def test_jpeg_has_no_official_threat_model_and_defaults_to_adaptive():
    assert check_threat_model(None, JPEG) == "adaptive"
    with pytest.raises(UnsupportedError, match="JPEG has no official threat model"):
        check_threat_model("official", JPEG)


@pytest.mark.parametrize("threat_model", ["undefended", "adaptive", "bpda"])
def test_each_threat_model_end_to_end_on_the_bundled_model(threat_model):
    from app.flows.pipeline import run_pipeline
    from app.views import export, report
    r = run_pipeline(RED_CIRCLE, TOY_NAMES, AttackConfig(attack="PGD", eps=8, steps=5, threat_model=threat_model),
                     JPEG, backbone="toy-shapes", template_set="single")
    d = export.to_dict(r, embeddings=False)
    assert d["defence"] == {"name": "jpeg", "label": "JPEG", "quality": 75}
    assert "CLIPure" not in report.stats_markdown(r, 1.0) + report.caption(r) + json.dumps(d)
    if threat_model == "adaptive":   # PGD never leaves its random start: the gradient is exactly zero
        assert r.gradient.zero_fraction == 1.0


def test_the_audit_flags_jpegs_exact_gradient_without_a_threat_model_given():
    out = subprocess.run([sys.executable, "-m", "app.audit", RED_CIRCLE, "--classes", TOY_NAMES, "--backbone",
                          "toy-shapes", "--defence", "jpeg", "--eps", "8", "--steps", "3", "--json"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    audit = json.loads(out.stdout.strip().splitlines()[-1])
    assert audit["threat_model"] == "adaptive" and audit["checks"][0]["flagged"]   # (a): the gradient vanishes


def test_the_views_measured_from_the_blank_say_they_do_not_apply():
    from app.flows.pipeline import run_pipeline
    from app.views import report
    r = run_pipeline(RED_CIRCLE, TOY_NAMES, None, JPEG, backbone="toy-shapes", template_set="single")
    for name in ("cos_plot", "rot_plot"):
        fig = report.figure(r, name)
        texts = " ".join(t.get_text() for ax in fig.axes for t in ax.texts)
        assert "JPEG does not move the embedding towards the blank" in texts
    assert report.drawn(r) == ("prob_plot", "map_plot")
