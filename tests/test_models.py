"""Backbone registry and loading: caching, frozen eval models, typed errors offline."""
import pytest
import torch

from app.errors import UnknownNameError, WeightsUnavailableError
from app.models import BACKBONES, DEFAULT_BACKBONE, get_spec, load_backbone


def test_registry_has_the_required_backbones():
    for name in ("ViT-B-32-quickgelu/openai", "ViT-B-16-quickgelu/openai", "ViT-L-14-quickgelu/openai",
                 "hf-hub:chs20/fare2-clip", "hf-hub:chs20/tecoa4-clip",
                 "hf-hub:chs20/FARE4-ViT-B-32-laion2B-s34B-b79K", "tiny-random", "toy-shapes"):
        assert name in BACKBONES
    assert get_spec("tiny-random").meaningless and "MEANINGLESS" in get_spec("tiny-random").description
    for name, spec in BACKBONES.items():
        if spec.pretrained == "openai":
            assert "quickgelu" in spec.arch, name   # OpenAI weights need QuickGELU


def test_loaded_once_in_eval_mode_with_frozen_parameters(tiny):
    assert load_backbone("tiny-random") is tiny
    assert not tiny.model.training
    assert not any(p.requires_grad for p in tiny.model.parameters())
    assert tiny.device == torch.device("cpu") and tiny.precision == "fp32"


def test_tiny_random_is_the_same_in_every_build():
    """Random weights come from a fixed seed: two fresh builds (no cache) are equal, and the
    global RNG is left as it was."""
    import torch

    from app.models import _create
    state = torch.random.get_rng_state()
    a, _ = _create(get_spec("tiny-random"), "tiny-random", torch.device("cpu"), "fp32", pretrained=False)
    torch.rand(3)                                   # move the global RNG between the builds
    b, _ = _create(get_spec("tiny-random"), "tiny-random", torch.device("cpu"), "fp32", pretrained=False)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert load_backbone("tiny-random", pretrained=False) is load_backbone("tiny-random")   # one cache entry
    torch.random.set_rng_state(state)


def test_unknown_model_lists_valid_names():
    with pytest.raises(UnknownNameError) as e:
        load_backbone("ViT-Q-1")
    for name in BACKBONES:
        assert name in str(e.value)


def test_offline_download_raises_a_typed_error_naming_model_and_fix():
    with pytest.raises(WeightsUnavailableError) as e:
        load_backbone("ViT-B-32-quickgelu/openai")
    assert "ViT-B-32-quickgelu/openai" in str(e.value) and "toy-shapes" in str(e.value)


def test_precision_other_than_fp32_needs_cuda():
    from app.errors import UnsupportedError
    with pytest.raises(UnsupportedError, match="CUDA"):
        load_backbone("tiny-random", precision="fp16")


@pytest.mark.weights
def test_real_weights_classify_a_drawn_image():
    """Runs only where the weights can be had (not in CI, which is offline)."""
    from PIL import Image, ImageDraw

    from app.pipeline import run_pipeline
    try:
        load_backbone(DEFAULT_BACKBONE)
    except WeightsUnavailableError as e:
        pytest.skip(f"real weights unavailable offline: {e}")
    img = Image.new("RGB", (224, 224), "white")
    ImageDraw.Draw(img).ellipse((40, 40, 184, 184), fill="red")
    res = run_pipeline(img, "a red circle, a blue square, a green triangle", attack=None, model=DEFAULT_BACKBONE)
    assert res.clean.label == "a red circle"
