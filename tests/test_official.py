"""`official` is the official code's pipeline, at its precision.

The reference below is an independent re-typing of CLIP_eval/CLIPure_Cos.py in the public
repository TMLResearchGroup-CAS/CLIPure (commit 5b59554, lines as counted in the copy read here):
`model_dtype_half` (lines 84-95), `ClassificationModel.__init__`'s blank (113-121),
`embed_image` (152-156), `purify_zi` (159-191) and `forward` (194-204), plus the script's
model set-up (`precision="fp16"` at creation, then `model.float()`). It uses autograd exactly as
the official code does, so it shares no code with app/purifiers/cos.py.
"""
import open_clip
import pytest
import torch
import torch.nn.functional as F
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

from app.models import TOY_CLASSNAMES, TOY_DIR, load_backbone
from app.purifiers import PAPER_DEFAULTS
from app.threat_models import PurifiedClassifier
from app.toy.evaluate import heldout
from app.zeroshot import TEXT_CACHE, build_classifier

NAMES = list(TOY_CLASSNAMES)
TEMPLATES = [lambda c: f"a photo of a {c}."]


def official_model(precision: str) -> torch.nn.Module:
    """The script: create (in fp16), .float(), then model_dtype_half inside ClassificationModel."""
    open_clip.add_model_config(TOY_DIR / "toy-shapes.json")
    model = open_clip.create_model("toy-shapes", pretrained=str(TOY_DIR / "toy-shapes.safetensors"),
                                   precision="fp16" if precision == "fp16" else "fp32")
    model.float()
    if precision == "fp16":   # model_dtype_half
        for name, param in model.named_parameters():
            if "ln_" in name:
                continue
            if any(k in name for k in ["mlp", "attn", "conv1", "visual.proj", "text_projection", "q_proj",
                                       "proj.bias", "proj"]):
                if param.dtype != torch.float16:
                    param.data = param.data.half()
    return model.eval()


def official_blank(model, tokenizer) -> torch.Tensor:
    """temp_emb_all: each blank template's embedding normalised, then the mean (not re-normalised)."""
    embs = []
    for temp in [t("") for t in TEMPLATES]:
        e = F.normalize(model.encode_text(tokenizer([temp])).float(), dim=-1)
        embs.append(e / e.norm())
    return torch.stack(embs, dim=1).mean(dim=1)                        # (1, D)


def official_purify_zi(img_emb, blank, iters=10, step_size=30.0):
    text_embed = blank.repeat(img_emb.shape[0], 1)
    momentum = torch.zeros_like(img_emb)
    gamma = 0.0
    for _ in range(iters):
        r = torch.norm(img_emb, dim=1, keepdim=True)
        u = img_emb / r
        loss = -F.cosine_similarity(img_emb, text_embed, dim=1)
        grad = torch.autograd.grad(loss, img_emb, torch.ones_like(loss), retain_graph=True)[0]
        grad_u = r * grad
        momentum = gamma * momentum - (1 - gamma) * grad_u / torch.norm(grad_u, p=2)   # "L2"
        u = u + step_size * momentum
        u = u / torch.norm(u, dim=1, keepdim=True)
        img_emb = r * u
    return img_emb


def official_forward(model, x, mean, std, blank, text_embedding, half: bool):
    with torch.enable_grad():
        image = (x - mean) / std                                       # input_normalize
        z = model.encode_image(image.half() if half else image)
        z = F.normalize(z.float(), dim=-1)                             # embed_image's l2norm
        if not z.requires_grad:
            z.requires_grad = True
        z = official_purify_zi(z, blank)
    return z @ text_embedding * model.logit_scale.exp()


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_official_threat_model_agrees_with_the_retyped_official_code(precision):
    bb = load_backbone("toy-shapes", precision=precision)
    clf = build_classifier(bb, NAMES, "single")
    blank = TEXT_CACHE.blank_embedding(bb, "single")
    ref_model = official_model(precision)
    tok = open_clip.get_tokenizer("toy-shapes")
    # the recipe: same dtypes and values, parameter by parameter
    ours = dict(bb.model.named_parameters())
    for name, p in ref_model.named_parameters():
        assert ours[name].dtype == p.dtype and torch.equal(ours[name], p), name
    with torch.no_grad():
        ref_blank = official_blank(ref_model, tok)
        # class embeddings: encoded before the half cast, per class normalise, mean, normalise
        class_emb = torch.stack([F.normalize(F.normalize(official_model("fp32").encode_text(tok(
            [t(c) for t in TEMPLATES])).float(), dim=-1).mean(0), dim=0) for c in NAMES], dim=1)   # (D, C)
    torch.testing.assert_close(blank[None], ref_blank, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(clf.class_embeddings.T, class_emb, atol=1e-6, rtol=1e-5)

    x, y = heldout(2, bb.image_size)                                   # the official batch size: 2
    mean, std = clf.mean, clf.std
    xa = x.clone().requires_grad_(True)
    ref_logits = official_forward(ref_model, xa, mean, std, ref_blank, class_emb, precision == "fp16")
    ref_grad = torch.autograd.grad(F.cross_entropy(ref_logits, y), xa)[0]
    xb = x.clone().requires_grad_(True)
    logits = PurifiedClassifier(clf, blank, PAPER_DEFAULTS, "official")(xb)
    grad = torch.autograd.grad(F.cross_entropy(logits, y), xb)[0]
    torch.testing.assert_close(logits, ref_logits, atol=2e-3, rtol=1e-4)
    if precision == "fp16":
        assert torch.count_nonzero(ref_grad) == 0 and torch.count_nonzero(grad) == 0   # underflow, both
    else:   # about 1e-10: rounding noise of the same size in both (the float64 test compares directions)
        assert 0 < grad.norm() < 1e-8 and 0 < ref_grad.norm() < 1e-8, (grad.norm(), ref_grad.norm())


@pytest.mark.parametrize("seed, steps, eta", [(0, 3, 0.7), (1, 4, 2.0), (2, 10, 30.0)])
def test_official_backward_is_the_official_graph_in_float64(seed, steps, eta):
    """From the unit embedding on: purify_zi's graph and the unnormalised head. At the paper's
    T = 10, eta = 30 the gradient is ~1e-14, at float64's rounding floor: compared in size only."""
    from app.purifiers import purify
    g = torch.Generator().manual_seed(seed)
    d, c = 32, 5
    blank = torch.randn(d, generator=g, dtype=torch.float64)
    text = F.normalize(torch.randn(c, d, generator=g, dtype=torch.float64), dim=-1)   # (C, D)
    e = torch.randn(2, d, generator=g, dtype=torch.float64)
    y = torch.tensor([1, 3])

    ea = e.clone().requires_grad_(True)
    ref = official_purify_zi(F.normalize(ea, dim=-1), blank[None], steps, eta) @ text.T * 100.0
    ref_grad = torch.autograd.grad(F.cross_entropy(ref, y), ea)[0]
    eb = e.clone().requires_grad_(True)
    cfg = PAPER_DEFAULTS.__class__(steps=steps, step_size=eta, grad_scope="batch")
    ours = purify(F.normalize(eb, dim=-1), blank, cfg, backward="official") @ text.T * 100.0
    grad = torch.autograd.grad(F.cross_entropy(ours, y), eb)[0]
    torch.testing.assert_close(ours, ref, atol=1e-9, rtol=1e-9)
    if eta < 30:
        torch.testing.assert_close(grad, ref_grad, atol=1e-12, rtol=1e-7)
    else:   # masked: about (1 + 30^2)^(-5) = 1.7e-15 times an unmasked gradient, in both
        assert 0 < grad.norm() < 1e-12 and 0 < ref_grad.norm() < 1e-12
