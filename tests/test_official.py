"""`official` is the official code's pipeline, at its precision.

The reference below is an independent re-typing of CLIP_eval/CLIPure_Cos.py in the public
repository TMLResearchGroup-CAS/CLIPure (commit 5b59554, lines as counted in the copy read here):
`model_dtype_half` (lines 84-95), `ClassificationModel.__init__`'s blank (113-121),
`embed_image` (152-156), `purify_zi` (159-191) and `forward` (194-204), plus the script's
model set-up (`precision="fp16"` at creation, then `model.float()`). It uses autograd exactly as
the official code does, so it shares no code with app/defences/cos.py.
"""
import open_clip
import pytest
import torch
import torch.nn.functional as F

from app.defences.defence import Defence
from app.clip.models import TOY_CLASSNAMES, TOY_DIR, load_backbone
from app.clip.precision import GradModeAttention
from app.defences import PAPER_DEFAULTS
from app.attacks.threat_models import DefendedClassifier
from app.toy.heldout import heldout
from app.clip.zeroshot import TEXT_CACHE, TextEmbeddingCache, build_classifier, get_templates

NAMES = list(TOY_CLASSNAMES)
DEFAULT_THREADS = torch.get_num_threads()   # as conftest.py leaves it
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


def official_blank(model, tokenizer, templates=TEMPLATES) -> torch.Tensor:
    """temp_emb_all: each blank template encoded alone, its embedding normalised (l2norm, then
    divided by its norm), then the mean (not re-normalised)."""
    embs = []
    for temp in [t("") for t in templates]:
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


@pytest.fixture(params=[1, "default"], ids=["1-thread", "default-threads"])
def threads(request):
    """Reduced precision is not bit-stable across thread counts: run under one and under the default."""
    before = torch.get_num_threads()
    torch.set_num_threads(1 if request.param == 1 else DEFAULT_THREADS)
    yield torch.get_num_threads()
    torch.set_num_threads(before)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_official_threat_model_agrees_with_the_retyped_official_code(precision, threads):
    bb = load_backbone("toy-shapes", precision=precision)
    clf = build_classifier(bb, NAMES, "single")
    texts = TextEmbeddingCache()   # the blank encoded afresh, under this test's thread count
    blank = texts.blank_embedding(bb, "single")
    ref_model = official_model(precision)
    tok = open_clip.get_tokenizer("toy-shapes")
    # the recipe: same dtypes and values, parameter by parameter
    ours = dict(bb.model.named_parameters())
    for name, p in ref_model.named_parameters():
        assert ours[name].dtype == p.dtype and torch.equal(ours[name], p), name
    # and the same module types (LayerNormFp32 where open_clip's fp16 creation puts it), attention
    # aside: at fp16 the app's is GradModeAttention, torch's MultiheadAttention held on the path it
    # takes under gradients, where the official code (weights requiring grad) always runs it
    modules = dict(bb.model.named_modules())
    for name, m in ref_model.named_modules():
        if precision == "fp16" and type(m) is torch.nn.MultiheadAttention:
            assert type(modules[name]) is GradModeAttention, name
        else:
            assert type(modules[name]) is type(m), (name, type(modules[name]), type(m))
    with torch.no_grad():
        ref_blank = official_blank(ref_model, tok)
        ref_blank80 = official_blank(ref_model, tok, get_templates("ensemble"))
        # class embeddings: encoded before the half cast, per class normalise, mean, normalise
        class_emb = torch.stack([F.normalize(F.normalize(official_model("fp32").encode_text(tok(
            [t(c) for t in TEMPLATES])).float(), dim=-1).mean(0), dim=0) for c in NAMES], dim=1)   # (D, C)
    blank80 = texts.blank_embedding(bb, "ensemble")
    if precision == "fp16":   # each prompt encoded alone, as the official code: bit for bit, 1 and 80 templates
        assert torch.equal(blank[None], ref_blank) and torch.equal(blank80[None], ref_blank80)
    else:                     # fp32 keeps the 80 prompts in one batch: fp32 rounding apart
        torch.testing.assert_close(blank[None], ref_blank, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(blank80[None], ref_blank80, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(clf.class_embeddings.T, class_emb, atol=1e-6, rtol=1e-5)

    x, y = heldout(2, bb.image_size)                                   # the official batch size: 2
    mean, std = clf.mean, clf.std
    xa = x.clone().requires_grad_(True)
    ref_logits = official_forward(ref_model, xa, mean, std, ref_blank, class_emb, precision == "fp16")
    ref_grad = torch.autograd.grad(F.cross_entropy(ref_logits, y), xa)[0]
    xb = x.clone().requires_grad_(True)
    logits = DefendedClassifier(Defence(clf, blank, PAPER_DEFAULTS), "official")(xb)
    grad = torch.autograd.grad(F.cross_entropy(logits, y), xb)[0]
    assert torch.equal(logits.argmax(1), ref_logits.argmax(1))
    if precision == "fp16":
        # The encoder and the blank, bit for bit: the app's encoder with and without gradients (the
        # attacks' forward and the scoring's) against the official forward's, and the official
        # forward run on the app's model and blank against the reference's, logits included. Equal
        # by construction, not by luck of kernels: the same weights, module types and op sequence
        # on the same kernels (fp16 rounding, or a thread count, would have to differ between them).
        with torch.enable_grad():
            ref_z = ref_model.encode_image(((xa - mean) / std).half()).float()
        with torch.no_grad():
            z_scored = clf.encode(x)
        assert torch.equal(clf.encode(x.clone().requires_grad_(True)), ref_z) and torch.equal(z_scored, ref_z)
        same = official_forward(bb.model, x.clone().requires_grad_(True), mean, std, blank[None], class_emb, True)
        assert torch.equal(same, ref_logits)
    # The app's purification is its own fp32 code (closed-form steps, not autograd.grad), so its
    # logits and the reference's differ by fp32 op order only, at fp16 as at fp32 (the fp16 encoder
    # output being equal): within 64 fp32 eps (2^-17) of the cosine times the logit scale.
    tol = ref_model.logit_scale.exp().item() * 64 * torch.finfo(torch.float32).eps
    torch.testing.assert_close(logits, ref_logits, atol=tol, rtol=0)
    if precision == "fp16":
        assert torch.count_nonzero(ref_grad) == 0 and torch.count_nonzero(grad) == 0   # underflow, both
    else:   # about 1e-10: rounding noise of the same size in both (the float64 test compares directions)
        assert 0 < grad.norm() < 1e-8 and 0 < ref_grad.norm() < 1e-8, (grad.norm(), ref_grad.norm())


def test_bf16_backbone_is_open_clips_bf16_creation_by_the_same_recipe():
    """bf16 by the fp16 recipe: open_clip's precision="bf16" creation, .float(), the half cast in
    bf16: the same parameters and module types (LayerNormFp32), attention on its gradient path."""
    from app.clip.precision import half_params
    bb = load_backbone("toy-shapes", precision="bf16")
    open_clip.add_model_config(TOY_DIR / "toy-shapes.json")
    ref = open_clip.create_model("toy-shapes", pretrained=str(TOY_DIR / "toy-shapes.safetensors"), precision="bf16")
    ref.float()
    for _, p in half_params(ref):
        p.data = p.data.to(torch.bfloat16)
    ours = dict(bb.model.named_parameters())
    for name, p in ref.named_parameters():
        assert ours[name].dtype == p.dtype and torch.equal(ours[name], p), name
    modules = dict(bb.model.named_modules())
    for name, m in ref.named_modules():
        want = GradModeAttention if type(m) is torch.nn.MultiheadAttention else type(m)
        assert type(modules[name]) is want, (name, type(modules[name]), type(m))
    assert any(type(m) is open_clip.transformer.LayerNormFp32 for m in modules.values())
    x, _ = heldout(4, bb.image_size)
    clf = build_classifier(bb, NAMES, "single")
    with torch.enable_grad():
        ref_z = ref.encode_image(((x - clf.mean) / clf.std).to(torch.bfloat16).requires_grad_(True)).float()
    with torch.no_grad():
        assert torch.equal(clf.encode(x), ref_z)


@pytest.mark.parametrize("seed, steps, eta", [(0, 3, 0.7), (1, 4, 2.0), (2, 10, 30.0)])
def test_official_backward_is_the_official_graph_in_float64(seed, steps, eta):
    """From the unit embedding on: purify_zi's graph and the unnormalised head. At the paper's
    T = 10, eta = 30 the gradient is ~1e-14, at float64's rounding floor: compared in size only."""
    from app.defences import purify
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


@pytest.fixture(scope="module")
def toy16():
    """16 held-out toy images and the classifiers at fp16 (the official recipe) and fp32."""
    out = {}
    for precision in ("fp16", "fp32"):
        bb = load_backbone("toy-shapes", precision=precision)
        out[precision] = Defence(build_classifier(bb, NAMES, "single"), TEXT_CACHE.blank_embedding(bb, "single"),
                                 PAPER_DEFAULTS, "toy-shapes")
    x, y = heldout(16, 32)
    return out, x, y


def test_fp16_official_gradient_is_exactly_zero_and_adaptive_is_not(toy16):
    from app.attacks.gradients import gradient_diagnostics
    setups, x, y = toy16
    for i in range(len(y)):
        xi, yi = x[i:i + 1], y[i:i + 1]
        official = gradient_diagnostics("official", setups["fp16"], xi, yi, setups["fp32"])
        adaptive = gradient_diagnostics("adaptive", setups["fp16"], xi, yi, setups["fp32"])
        assert official.norm == 0 and official.zero_fraction == 1.0, (i, official)
        assert adaptive.norm > 0 and adaptive.zero_fraction < 0.5, (i, adaptive)


@pytest.mark.slow   # about 40 s; its fast one: the exact-zero gradient test above, on the same 16 images
def test_pgd_under_fp16_official_leaves_clean_accuracy_and_adaptive_lowers_it(toy16):
    from app.attacks import AttackConfig
    from app.flows.scoring import attack_and_score
    setups, x, y = toy16
    acc = {}
    for tm in ("official", "adaptive"):
        a = attack_and_score(AttackConfig(attack="PGD", eps=8, steps=10, threat_model=tm), setups["fp16"], x,
                             NAMES, labels=y)
        acc["clean"] = (a.clean.purified == y).sum().item()
        acc[tm] = (a.adversarial.purified == y).sum().item()
    assert abs(acc["official"] - acc["clean"]) <= 1, acc      # no image leaves its random start for good
    assert acc["adaptive"] <= acc["clean"] - 4, acc


# About 25 s (two whole audits); its fast ones: check (a) below, with the attacks stubbed, and the
# /audit endpoint in tests/test_app_e2e.py on tiny-random.
@pytest.mark.slow
def test_audit_flags_fp16_official_and_not_bare_clip():
    from app.audit import audit_image
    from app.flows.request import Request
    image = TOY_DIR.parent / "examples" / "toy-red-circle.png"
    names = "red circle, blue square, green triangle, yellow cross, red square, blue circle"
    res = audit_image(Request(image, names, "toy-shapes", "single", "fp16"), "official")
    flags = {c.name: c.flagged for c in res.checks}
    assert flags["a"] and flags["b"], res.checks
    bare = audit_image(Request(image, names, "toy-shapes", "single", "fp32"), "undefended")
    flags = {c.name: c.flagged for c in bare.checks}
    assert not flags["a"] and not flags["b"], bare.checks


def test_audit_check_a_reports_the_attackers_and_the_exact_gradient_at_clean_and_random_start(monkeypatch):
    """fp16 leaves even the exact (adaptive) gradient at zero where the clean answer is confident: on
    the red circle among 4 classes CLIPure's p is 0.9999992, the cross-entropy's gradient 1 - p, and
    the fp16 encoder's backward rounds it to zero (fp16's smallest subnormal is 6e-8). Check (a)
    reports the attacker's gradient beside the exact fp32 one, at the clean input and, where the
    attacker's is zero there, at PGD's random start; the attacks are stubbed (checks b-f not run)."""
    from types import SimpleNamespace

    import app.audit as audit_mod
    from app.attacks.gradients import exact_defence, pgd_start
    from app.flows.request import Request, prepare
    image = TOY_DIR.parent / "examples" / "toy-red-circle.png"
    names = "red circle, blue square, green triangle, yellow cross"

    def unattacked(cfg, defence, x, classnames, labels=None, clean=None):
        return SimpleNamespace(outcomes=[SimpleNamespace(fooled_defence=False)],
                               adversarial=SimpleNamespace(trajectory=clean.trajectory))
    monkeypatch.setattr(audit_mod, "attack_and_score", unattacked)
    out = {}
    for precision in ("fp16", "fp32"):
        prep, _ = prepare(Request(image, names, "toy-shapes", "single", precision))
        defence = prep.defence(PAPER_DEFAULTS)
        exact = exact_defence(defence, prep.classnames, "single", precision)
        out[precision] = audit_mod.audit(defence, prep.x, prep.classnames, "adaptive", exact,
                                         precision=precision).to_dict()
    fp16, fp32 = out["fp16"], out["fp32"]
    assert fp16["clean_confidence"] > 0.99999 and fp16["checks"][0]["flagged"]
    assert fp16["gradient"]["norm"] == 0 and fp16["gradient"]["zero_fraction"] == 1.0
    assert fp16["gradient"]["exact_norm"] > 0 and fp16["gradient"]["exact_zero_fraction"] == 0.0   # fp32: not zero
    start = fp16["gradient_at_random_start"]
    assert start is not None and start["exact_norm"] > 0 and start["exact_zero_fraction"] == 0.0
    detail = fp16["checks"][0]["detail"]
    assert "exact fp32 gradient" in detail and "random start" in detail and "clean confidence" in detail
    # fp32: the same exact gradient, the attacker's is it, nothing flagged, no random start needed
    assert not fp32["checks"][0]["flagged"] and fp32["gradient_at_random_start"] is None
    assert fp32["gradient"]["norm"] == pytest.approx(fp16["gradient"]["exact_norm"], rel=1e-6)
    x = prepare(Request(image, names, "toy-shapes", "single"))[0].x
    xs = pgd_start(x, 8.0, 0)
    assert 0 < (xs - x).abs().max() <= 8 / 255 + 1e-7 and xs.min() >= 0 and xs.max() <= 1


# About 40 s (a whole audit in a fresh process); its fast one is the refusal below, through the CLI's main.
@pytest.mark.slow
def test_audit_cli_prints_one_json_line_last(tmp_path):
    import json
    import subprocess
    import sys
    image = TOY_DIR.parent / "examples" / "toy-blue-square.png"
    out = subprocess.run([sys.executable, "-m", "app.audit", str(image), "--classes",
                          "red circle, blue square, green triangle, yellow cross", "--backbone", "toy-shapes",
                          "--precision", "fp16", "--threat-model", "official", "--steps", "3", "--json"],
                         capture_output=True, text=True, timeout=300, env={**__import__("os").environ,
                                                                            "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(data["gradient"]) >= {"norm", "zero_fraction", "cos_to_exact"}
    assert [c["name"] for c in data["checks"]] == list("abcdef")
    assert data["gradient"]["zero_fraction"] == 1.0 and data["checks"][0]["flagged"]
    assert "exact_zero_fraction" in data["gradient"] and data["gradient_at_random_start"]["zero_fraction"] == 1.0


def test_audit_cli_refuses_a_bad_threat_model_with_exit_2(capsys):
    from app.audit import main
    image = TOY_DIR.parent / "examples" / "toy-blue-square.png"
    assert main([str(image), "--classes", "a, b", "--threat-model", "x"]) == 2
    assert "undefended, official, adaptive, bpda" in capsys.readouterr().err


def test_the_audit_refuses_settings_its_derived_attacks_cannot_run_before_any_work(monkeypatch):
    """Check (e) doubles the steps and (c) runs Square with 10x: a setting they cannot honour is
    refused in one sentence up front, and the eps sweep never passes the public limit."""
    from dataclasses import replace

    import app.audit as audit_mod
    from app.common.errors import OutOfRangeError
    from app.flows.request import Request, prepare
    image = TOY_DIR.parent / "examples" / "toy-red-circle.png"
    prep, _ = prepare(Request(image, "red circle, blue square, green triangle, yellow cross", "toy-shapes", "single"))
    calls = []
    monkeypatch.setattr(audit_mod, "attack_and_score", lambda *a, **k: calls.append(1))
    defence = prep.defence(PAPER_DEFAULTS)
    with pytest.raises(OutOfRangeError, match="doubles the attack steps"):
        audit_mod.audit(defence, prep.x, prep.classnames, "official", defence, precision="fp32", steps=150)
    assert calls == []
    assert audit_mod.sweep_eps(replace(audit_mod.LIMITS, max_linf_eps=16.0)) == (2.0, 8.0, 16.0)
    assert audit_mod.sweep_eps()[-1] == audit_mod.LIMITS.max_linf_eps
