"""Zero-shot head against a reference computation; the text cache; the blank target."""
import torch
import torch.nn.functional as F

from app.clip.zeroshot import TEMPLATE_SETS, TextEmbeddingCache, build_classifier
from tests.conftest import CLASSES


def test_logits_are_scale_times_cosine(tiny, noise_image):
    clf = build_classifier(tiny, CLASSES, "single")
    x = tiny.to_pixels(noise_image)
    with torch.no_grad():
        mean = torch.tensor(tiny.mean).view(1, 3, 1, 1)
        std = torch.tensor(tiny.std).view(1, 3, 1, 1)
        img = tiny.model.encode_image((x - mean) / std)
        txt = tiny.model.encode_text(tiny.tokenizer([f"a photo of a {c}." for c in CLASSES]))
        ref = tiny.model.logit_scale.exp() * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T
        torch.testing.assert_close(clf(x), ref, atol=1e-4, rtol=1e-4)
    assert x.shape == (1, 3, tiny.image_size, tiny.image_size) and 0 <= x.min() and x.max() <= 1


def test_ensemble_is_the_mean_of_normalised_prompts_and_blank_is_not_renormalised(tiny):
    cache = TextEmbeddingCache()
    templates = TEMPLATE_SETS["ensemble"]
    assert len(templates) == 80
    with torch.no_grad():
        def mean_emb(name):
            t = tiny.model.encode_text(tiny.tokenizer([tpl(name) for tpl in templates]))
            return F.normalize(t, dim=-1).mean(0)
        torch.testing.assert_close(cache.class_embeddings(tiny, ["cat", "dog"], "ensemble")[1],
                                   F.normalize(mean_emb("dog"), dim=0), atol=1e-5, rtol=1e-5)
        blank = cache.blank_embedding(tiny, "ensemble")
        torch.testing.assert_close(blank, mean_emb(""), atol=1e-5, rtol=1e-5)
        assert blank.norm() < 0.999   # a mean of unit vectors, left as is
    single = cache.blank_embedding(tiny, "single")
    with torch.no_grad():
        ref = F.normalize(tiny.model.encode_text(tiny.tokenizer(["a photo of a ."])), dim=-1)[0]
    torch.testing.assert_close(single, ref, atol=1e-5, rtol=1e-5)


def test_text_cache_is_hit_and_skips_the_text_encoder(tiny, monkeypatch):
    cache = TextEmbeddingCache()
    first = cache.class_embeddings(tiny, ["red", "blue", "green"], "single")
    calls = []
    original = tiny.model.encode_text
    monkeypatch.setattr(tiny.model, "encode_text", lambda *a, **k: calls.append(1) or original(*a, **k))
    again = cache.class_embeddings(tiny, ["red", "blue", "green"], "single")
    assert again is first and cache.hits == 1 and cache.misses == 1 and calls == []
    cache.class_embeddings(tiny, ["red", "blue"], "single")   # a different list is a new entry
    assert cache.misses == 2 and calls


def test_cache_is_bounded(tiny):
    cache = TextEmbeddingCache(max_entries=2)
    for names in (["a", "b"], ["c", "d"], ["e", "f"]):
        cache.class_embeddings(tiny, names, "single")
    cache.class_embeddings(tiny, ["a", "b"], "single")
    assert cache.misses == 4 and cache.hits == 0
