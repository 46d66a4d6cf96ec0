"""Backbone registry and loading: caching, frozen eval models, typed errors offline."""
import pytest
import torch

from app.common.errors import UnknownNameError, WeightsUnavailableError
from app.clip.models import BACKBONES, DEFAULT_BACKBONE, get_spec, load_backbone


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

    from app.clip.models import _create
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


def test_fp16_is_the_official_recipe_on_cpu_and_bad_precisions_get_one_sentence(monkeypatch):
    import torch

    from app.common.errors import UnsupportedError
    bb = load_backbone("tiny-random", precision="fp16")
    dtypes = {n: p.dtype for n, p in bb.model.named_parameters()}
    assert dtypes["visual.conv1.weight"] == torch.float16 and dtypes["visual.ln_pre.weight"] == torch.float32
    assert dtypes["visual.positional_embedding"] == torch.float32 and dtypes["logit_scale"] == torch.float32
    assert bb is not load_backbone("tiny-random") and bb.precision == "fp16"   # precision is part of the key
    with pytest.raises(UnknownNameError, match="fp32, fp16, bf16"):
        load_backbone("tiny-random", precision="fp8")
    real_ones = torch.ones

    def no_half(*a, dtype=None, **k):
        if dtype in (torch.float16, torch.bfloat16):
            raise RuntimeError("not implemented for 'Half'")
        return real_ones(*a, dtype=dtype, **k)
    monkeypatch.setattr(torch, "ones", no_half)
    with pytest.raises(UnsupportedError, match="cannot compute in bf16; use fp32"):
        load_backbone("toy-shapes", precision="bf16")


@pytest.mark.weights
def test_real_weights_classify_a_drawn_image():
    """Runs only where the weights can be had (not in CI, which is offline)."""
    from PIL import Image, ImageDraw

    from app.flows.pipeline import run_pipeline
    try:
        load_backbone(DEFAULT_BACKBONE)
    except WeightsUnavailableError as e:
        pytest.skip(f"real weights unavailable offline: {e}")
    img = Image.new("RGB", (224, 224), "white")
    ImageDraw.Draw(img).ellipse((40, 40, 184, 184), fill="red")
    res = run_pipeline(img, "a red circle, a blue square, a green triangle", attack=None, model=DEFAULT_BACKBONE)
    assert res.clean.label == "a red circle"


def test_least_recently_used_backbones_are_dropped_beyond_the_limit(monkeypatch):
    from dataclasses import replace

    import app.common.limits
    import app.clip.models as models
    monkeypatch.setattr(models, "_CACHE", {})
    monkeypatch.setattr(models, "_PINNED", set())   # a launched server's warm start pins its own
    monkeypatch.setattr(app.common.limits, "LIMITS", replace(app.common.limits.LIMITS, max_loaded_backbones=2))
    a = load_backbone("tiny-random")
    toy = load_backbone("toy-shapes")
    assert load_backbone("tiny-random") is a               # a hit moves it to the recent end
    held = load_backbone("toy-shapes", precision="fp16")   # third: the least recently used (toy fp32) goes
    assert len(models._CACHE) == 2
    assert load_backbone("tiny-random") is a and load_backbone("toy-shapes", precision="fp16") is held
    assert load_backbone("toy-shapes") is not toy           # it was dropped and loads anew
    assert toy.model.logit_scale is not None                 # a caller still holding it keeps a working model


def test_a_diffusion_prior_goes_with_the_last_copy_of_its_backbone(monkeypatch):
    from dataclasses import replace

    import app.common.limits
    import app.clip.models as models
    import app.defences.priors as priors
    monkeypatch.setattr(models, "_CACHE", {})
    monkeypatch.setattr(models, "_PINNED", set())   # a launched server's warm start pins its own
    monkeypatch.setattr(priors, "_CACHE", {})
    monkeypatch.setattr(app.common.limits, "LIMITS", replace(app.common.limits.LIMITS, max_loaded_backbones=2))
    load_backbone("toy-shapes")
    prior = priors.load_prior("toy-shapes")
    load_backbone("toy-shapes", precision="fp16")
    load_backbone("tiny-random")                          # drops toy-shapes fp32; the fp16 copy stays
    assert priors.load_prior("toy-shapes") is prior
    load_backbone("tiny-random", precision="fp16")        # drops the last toy-shapes: its prior goes
    assert "toy-shapes" not in models.loaded_names() and not priors._CACHE
    assert priors.load_prior("toy-shapes") is not prior


def test_backbones_and_text_embeddings_pinned_at_the_start_are_never_dropped(monkeypatch):
    """The warm start's backbones (models.pin) and text entries (TEXT_CACHE.pinned) stay loaded
    and do not count towards the limits; the others are dropped least recently used first."""
    from dataclasses import replace

    import app.common.limits
    import app.clip.models as models
    from app.clip.zeroshot import TextEmbeddingCache
    monkeypatch.setattr(models, "_CACHE", {})
    monkeypatch.setattr(models, "_PINNED", set())
    monkeypatch.setattr(app.common.limits, "LIMITS", replace(app.common.limits.LIMITS, max_loaded_backbones=1))
    warm = load_backbone("tiny-random")
    models.pin(warm)
    load_backbone("toy-shapes")
    load_backbone("toy-shapes", precision="fp16")           # drops toy fp32, never the pinned one
    assert models.is_loaded("tiny-random") and not models.is_loaded("toy-shapes")
    assert load_backbone("tiny-random") is warm and models.is_loaded("toy-shapes", precision="fp16")
    cache = TextEmbeddingCache(max_entries=1)
    with cache.pinned():
        pinned = cache.blank_embedding(warm, "single")
    cache.class_embeddings(warm, ["cat", "dog"], "single")
    cache.class_embeddings(warm, ["car", "tree"], "single")  # drops cat/dog, never the pinned blank
    misses = cache.misses
    assert cache.blank_embedding(warm, "single") is pinned and cache.misses == misses
    cache.class_embeddings(warm, ["cat", "dog"], "single")
    assert cache.misses == misses + 1
