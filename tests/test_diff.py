"""CLIPure-Diff: the prior, the purifier, its backward modes, EOT, and the toy prior's training."""
import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from app.common.errors import OutOfRangeError, UnsupportedError, WeightsUnavailableError
from app.defences import DEFENCES, PurifyConfig, purify, seeded, trace
from app.defences.diff import clipure_diff_iter, prior_gradient
from app.defences.eot import check_eot, eot_gradient
from app.defences.prior import DiffusionPrior, PriorConfig, check_timesteps
from app.defences.priors import ASSET_DIR, PRIORS, load_prior, load_state

TINY = PriorConfig(dim=64, depth=2, dim_head=32, heads=4, text_positions=5)


def frozen(prior):
    prior.eval()
    for p in prior.parameters():
        p.requires_grad_(False)
    return prior


@pytest.fixture(scope="module")
def tiny_prior():
    torch.manual_seed(0)
    return frozen(DiffusionPrior(TINY))


@pytest.fixture(scope="module")
def toy_prior():
    return load_prior("toy-shapes")


def unit(n, d, seed=0):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def run(z, prior, seed, **kw):
    steps = list(clipure_diff_iter(z, prior, generator=torch.Generator().manual_seed(seed), **kw))
    return torch.stack([s[0] for s in steps]), torch.stack([s[1]["prior_loss"] for s in steps])


def test_registered_and_randomised():
    assert DEFENCES["clipure-diff"].randomised
    assert set(PRIORS) == {"ViT-L-14-quickgelu/openai", "toy-shapes"}


def test_backbone_without_prior_is_one_sentence():
    with pytest.raises(UnsupportedError, match="toy-shapes") as e:
        load_prior("ViT-B-32-quickgelu/openai")
    assert str(e.value).count(". ") == 0 and str(e.value).endswith(".")


def test_real_prior_offline_raises_typed_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError, match="HF_HUB_OFFLINE"):
        PRIORS["ViT-L-14-quickgelu/openai"].load(PRIORS["ViT-L-14-quickgelu/openai"].config)


def test_timestep_range_checked(tiny_prior):
    assert check_timesteps(900, 999, tiny_prior) == (900, 999)
    for lo, hi in [(900, 1000), (-1, 10), (500, 400), (1.5, 10), ("a", 3)]:
        with pytest.raises(OutOfRangeError):
            check_timesteps(lo, hi, tiny_prior)
    with pytest.raises(OutOfRangeError, match="timestep"):
        run(unit(1, 64), tiny_prior, 0, steps=1, timesteps=(0, 1000))


def test_eot_bounds():
    assert check_eot(1) == 1 and check_eot(32) == 32
    for k in (0, 33, 2.5):
        with pytest.raises(OutOfRangeError):
            check_eot(k)


def test_state_dict_keys_follow_dalle2_pytorch(tiny_prior):
    keys = set(tiny_prior.state_dict())
    for k in ["net.learned_query", "net.to_time_embeds.0.weight",
              "net.causal_transformer.rel_pos_bias.relative_attention_bias.weight",
              "net.causal_transformer.layers.0.0.null_kv", "net.causal_transformer.layers.0.0.to_q.weight",
              "net.causal_transformer.layers.0.0.to_kv.weight", "net.causal_transformer.layers.0.0.to_out.0.weight",
              "net.causal_transformer.layers.0.0.norm.gamma", "net.causal_transformer.layers.1.1.1.weight",
              "net.causal_transformer.layers.1.1.3.gamma", "net.causal_transformer.layers.1.1.5.weight",
              "net.causal_transformer.norm.gamma", "net.causal_transformer.project_out.weight"]:
        assert k in keys, k


def test_checkpoint_loader_accepts_both_layouts_and_refuses_misfits(tiny_prior):
    z, t, noise = unit(2, 64), torch.tensor([950, 950]), torch.randn(2, 64)
    want = tiny_prior.p_losses(z * tiny_prior.image_embed_scale, t, noise)
    old = dict(tiny_prior.state_dict())
    old["noise_scheduler.betas"] = torch.zeros(1000)                 # recomputed, ignored
    new = {(k[:-6] + ".g" if k.endswith(".gamma") else k): v for k, v in tiny_prior.state_dict().items()
           if not k.endswith(".beta")}
    for state in (old, new):
        loaded = frozen(load_state(DiffusionPrior(TINY), state, "test prior"))
        assert torch.allclose(loaded.p_losses(z * loaded.image_embed_scale, t, noise), want)
    broken = {k: v for k, v in old.items() if "learned_query" not in k}
    with pytest.raises(WeightsUnavailableError, match="1 missing"):
        load_state(DiffusionPrior(TINY), broken, "test prior")


def test_only_three_tokens_matter_text_positions_do(tiny_prior):
    """Unconditional: the masked text tokens only shift positions, which the null key's bias sees."""
    moved = frozen(DiffusionPrior(PriorConfig(**{**TINY.__dict__, "text_positions": 40})))
    moved.load_state_dict(tiny_prior.state_dict())
    z, t, noise = unit(2, 64), torch.tensor([950, 950]), torch.randn(2, 64)
    a = tiny_prior.p_losses(z * 8, t, noise)
    assert not torch.allclose(a, moved.p_losses(z * 8, t, noise))


@pytest.mark.parametrize("which", ["tiny", "toy"])
def test_small_eta_lowers_prior_loss(which, request):
    """With a small step the loss, averaged over draws, falls along the trajectory."""
    prior = request.getfixturevalue(f"{which}_prior")
    z = unit(32, prior.cfg.dim, seed=3)
    losses = torch.stack([run(z, prior, seed, steps=6, step_size=0.1)[1].mean(1) for seed in range(2)]).mean(0)
    assert losses[-1] < losses[0], losses


def test_same_seed_same_trajectory_different_seeds_differ(toy_prior):
    z = unit(3, 64)
    a, la = run(z, toy_prior, 7, steps=4)
    b, lb = run(z, toy_prior, 7, steps=4)
    c, _ = run(z, toy_prior, 8, steps=4)
    assert torch.equal(a, b) and torch.equal(la, lb)
    assert not torch.allclose(a[1:], c[1:])


def test_trace_records_prior_loss_and_seed(toy_prior):
    z = unit(2, 64)
    cfg = PurifyConfig(defence="clipure-diff", steps=3, seed=5)
    steps = list(trace(z, torch.zeros(64), cfg, backbone="toy-shapes"))
    assert len(steps) == 4 and all(s.prior_loss.shape == (2,) for s in steps)
    again = list(trace(z, torch.zeros(64), cfg, backbone="toy-shapes"))
    assert all(torch.equal(s.embedding, t.embedding) for s, t in zip(steps, again))
    with pytest.raises(UnsupportedError):
        list(trace(z, torch.zeros(64), cfg, backbone="tiny-random"))


def test_purify_skips_only_the_shown_last_loss(toy_prior):
    """purify() never looks at the loss at z_T: it skips that forward pass, yet returns the same z_T
    and leaves a shared generator exactly where trace() leaves it (an attacker's later draws agree)."""
    z = unit(3, 64)
    cfg = PurifyConfig(defence="clipure-diff", steps=3, seed=5)
    g_seen, g_skip = seeded(cfg), seeded(cfg)
    calls = []
    hook = toy_prior.net.register_forward_hook(lambda *_: calls.append(1))
    try:
        shown = list(trace(z, torch.zeros(64), cfg, backbone="toy-shapes", generator=g_seen))
        n_trace = len(calls)
        out = purify(z, torch.zeros(64), cfg, backbone="toy-shapes", generator=g_skip)
    finally:
        hook.remove()
    assert (n_trace, len(calls) - n_trace) == (4, 3)          # T + 1 forward passes against T
    assert torch.equal(out, shown[-1].embedding) and shown[-1].prior_loss is not None
    assert torch.equal(g_seen.get_state(), g_skip.get_state())
    *_, (_, last) = clipure_diff_iter(z, toy_prior, steps=2, generator=torch.Generator().manual_seed(0),
                                      measure_last=False)
    assert last["prior_loss"] is None


def test_norm_is_kept_and_steps_are_unit_rotations(tiny_prior):
    z = 3.0 * unit(4, 64)
    zs, _ = run(z, tiny_prior, 0, steps=3)
    assert torch.allclose(zs.norm(dim=-1), torch.full((4, 4), 3.0), atol=1e-5)


def _reference_adaptive(z, prior, seed, steps, eta):
    """Unrolled by hand with create_graph=True, the official update written out."""
    g = torch.Generator().manual_seed(seed)
    r = z.norm(dim=-1, keepdim=True)
    u = z / r
    m = torch.zeros_like(u)
    for _ in range(steps):
        t = torch.randint(900, 1000, (1,), generator=g).expand(z.shape[0])
        noise = torch.randn(z.shape, generator=g)
        s = r * u * prior.image_embed_scale
        loss = prior.p_losses(s, t, noise).sum()
        grad, = torch.autograd.grad(loss, s, create_graph=True)
        g_u = r * grad
        m = -g_u / g_u.norm(dim=-1, keepdim=True)
        u = u + eta * m
        u = u / u.norm(dim=-1, keepdim=True)
    return r * u


def test_adaptive_gradient_matches_create_graph_reference(tiny_prior):
    w = torch.randn(64, 5, generator=torch.Generator().manual_seed(1))
    z0 = unit(2, 64, seed=2)

    def grad_of(fn):
        z = z0.clone().requires_grad_(True)
        (fn(z) @ w).square().sum().backward()
        return z.grad

    def ours(z):
        out = None
        for out, _ in clipure_diff_iter(z, tiny_prior, steps=3, step_size=0.5, backward="adaptive",
                                        generator=torch.Generator().manual_seed(4)):
            pass
        return out

    got, want = grad_of(ours), grad_of(lambda z: _reference_adaptive(z, tiny_prior, 4, 3, 0.5))
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-6), (got - want).abs().max()
    # The official backward (each gradient a constant) gives a different, masked gradient.
    official = grad_of(lambda z: _official(z, tiny_prior))
    assert not torch.allclose(official, got)


def _official(z, prior):
    out = None
    for out, _ in clipure_diff_iter(z, prior, steps=3, step_size=0.5, backward="official",
                                    generator=torch.Generator().manual_seed(4)):
        pass
    return out


def test_official_backward_treats_each_gradient_as_constant(tiny_prior):
    z = unit(2, 64).requires_grad_(True)
    t, noise = torch.tensor([950, 950]), torch.randn(2, 64)
    grad, _ = prior_gradient(tiny_prior, z, t, noise, create_graph=False)
    assert not grad.requires_grad
    grad, _ = prior_gradient(tiny_prior, z, t, noise, create_graph=True)
    assert grad.requires_grad


def test_eot_gradient_is_mean_of_single_draws(toy_prior):
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 4)
    blank = torch.zeros(64)
    cfg = PurifyConfig(defence="clipure-diff", steps=2, step_size=0.5)

    def model_with(gen):
        return lambda x: lin(purify(x, blank, cfg, "adaptive", "toy-shapes", gen))

    x, y = unit(3, 64, seed=9), torch.tensor([0, 1, 2])
    got = eot_gradient(model_with(seeded(cfg)), x, y, 4)
    gen = seeded(cfg)
    singles = [eot_gradient(model_with(gen), x, y, 1) for _ in range(4)]
    assert torch.allclose(got, torch.stack(singles).mean(0), atol=1e-6)
    assert not torch.allclose(singles[0], singles[1])     # the draws differ: averaging has work to do


def test_bundled_prior_assets():
    state = load_file(str(ASSET_DIR / "prior.safetensors"))
    size = (ASSET_DIR / "prior.safetensors").stat().st_size
    assert size <= 5 * 2**20
    assert PriorConfig.from_json(ASSET_DIR / "prior.json").dim == 64
    assert "net.learned_query" in state
    log = json.loads((ASSET_DIR / "prior_train_log.json").read_text())
    final = log["summary"]["final"]
    assert final["held_out_t900"] < final["random_t900"]      # the prior prefers real embeddings


@pytest.mark.slow
def test_training_script_few_steps(tmp_path):
    from app.tools.train_prior import main
    main(["--steps", "3", "--pool", "64", "--batch-size", "16", "--log-every", "1", "--out", str(tmp_path)])
    log = json.loads((tmp_path / "prior_train_log.json").read_text())
    assert len(log["log"]) == 3
    prior = frozen(load_state(DiffusionPrior(PriorConfig.from_json(tmp_path / "prior.json")),
                              load_file(str(tmp_path / "prior.safetensors")), "smoke prior"))
    assert prior.cfg.dim == 64


def test_eot_is_wired_into_the_attacks_that_can_average(tiny_setup):
    """K > 1 builds torchattacks' EOT variants; attacks without one refuse K > 1 in one sentence."""
    import torchattacks

    from app.attacks import ATTACKS, AttackConfig, validate_attack
    from app.common.errors import OutOfRangeError, UnsupportedError
    from tests.conftest import CLASSES
    clf, _ = tiny_setup
    cfg = validate_attack(AttackConfig(attack="PGD", eot=4), CLASSES)
    assert isinstance(ATTACKS["PGD"].build(cfg, clf, len(CLASSES)), torchattacks.EOTPGD)
    cfg = validate_attack(AttackConfig(attack="APGD-CE", eot=4), CLASSES)
    assert ATTACKS["APGD-CE"].build(cfg, clf, len(CLASSES)).eot_iter == 4
    with pytest.raises(UnsupportedError, match="FGSM cannot average gradients.*PGD"):
        validate_attack(AttackConfig(attack="FGSM", eot=2), CLASSES)
    with pytest.raises(OutOfRangeError, match="EOT count"):
        validate_attack(AttackConfig(attack="PGD", eot=0), CLASSES)


def test_clipure_diff_through_the_pipeline_and_its_bad_input():
    from app.attacks import AttackConfig
    from app.common.errors import OutOfRangeError, UnsupportedError
    from app.flows.pipeline import run_pipeline
    from app.views.presets import EXAMPLES_DIR
    image = EXAMPLES_DIR / "toy-red-circle.png"
    names = "red circle, blue square, green triangle, yellow cross"
    pcfg = PurifyConfig(defence="clipure-diff", steps=3, step_size=0.5, seed=3)
    r = run_pipeline(image, names, AttackConfig(attack="PGD", eps=8, steps=2, threat_model="adaptive", eot=2),
                     pcfg, backbone="toy-shapes", template_set="single")
    assert r.adv_trajectory.prior_loss.shape == (4, 1) and r.attack.forwards == 2 * 2
    again = run_pipeline(image, names, AttackConfig(attack="PGD", eps=8, steps=2, threat_model="adaptive", eot=2),
                         pcfg, backbone="toy-shapes", template_set="single")
    assert torch.equal(r.adv_trajectory.embeddings, again.adv_trajectory.embeddings)   # the seed fixes the draws
    with pytest.raises(UnsupportedError, match="toy-shapes"):
        run_pipeline(image, names, None, pcfg, backbone="tiny-random", template_set="single")
    with pytest.raises(OutOfRangeError, match="diffusion timestep"):
        run_pipeline(image, names, None, PurifyConfig(defence="clipure-diff", diffusion_timesteps=(900, 1200)),
                     backbone="toy-shapes", template_set="single")


def test_eot_only_where_the_attacked_model_draws():
    """K > 1 against a model that draws nothing is one sentence; compare runs the undefended row
    with K = 1 and the rows through CLIPure-Diff with K."""
    from app.attacks import AttackConfig
    from app.flows.pipeline import compare_threat_models, run_pipeline
    from app.views.presets import EXAMPLES_DIR
    image = EXAMPLES_DIR / "toy-red-circle.png"
    names = "red circle, blue square, green triangle, yellow cross"
    diff = PurifyConfig(defence="clipure-diff", steps=2, step_size=0.5)
    import app.flows.request
    from app.flows.request import Request
    for tm, pcfg, who in [("undefended", diff, "bare CLIP"), ("adaptive", PurifyConfig(), "CLIPure-Cos draws none")]:
        with pytest.MonkeyPatch.context() as mp, pytest.raises(UnsupportedError, match=who) as e:
            mp.setattr(app.flows.request, "build_classifier", None)      # refused before any text is encoded
            run_pipeline(image, names, AttackConfig(attack="PGD", eps=8, steps=1, threat_model=tm, eot=3), pcfg,
                         backbone="toy-shapes", template_set="single")
        assert str(e.value).count(". ") == 0 and "must be 1" in str(e.value)
    rows = compare_threat_models(Request(image, names, "toy-shapes", "single"),
                                 AttackConfig(attack="PGD", eps=8, steps=1, eot=3), diff)
    assert {r.attack_config.threat_model: r.attack_config.eot for r in rows} == {
        "undefended": 1, "official": 3, "adaptive": 3, "bpda": 3}
    assert [r.attack.forwards for r in rows] == [1, 3, 3, 3]


def test_diagnostics_average_the_attackers_draws_against_the_scored_draw(toy_prior):
    """The attacker's gradient is the mean of its own K draws (stream 1); the reference is the
    exact gradient of the draw the defence scores (stream 0), so they differ for K = 1 too."""
    from app.attacks.gradients import _input_gradient, gradient_diagnostics
    from app.views.presets import EXAMPLES_DIR
    from app.flows.request import Request, prepare
    from app.attacks.threat_models import attacked_model
    prep, _ = prepare(Request(EXAMPLES_DIR / "toy-red-circle.png",
                              "red circle, blue square, green triangle, yellow cross", "toy-shapes", "single"))
    cfg = PurifyConfig(defence="clipure-diff", steps=2, step_size=0.5)
    y = torch.tensor([0])
    diff = prep.defence(cfg)
    d1, d4 = (gradient_diagnostics("adaptive", diff, prep.x, y, diff, eot=k) for k in (1, 4))
    assert (d1.draws, d4.draws, d1.randomised) == (1, 4, True)
    attacker = attacked_model("adaptive", diff)
    mean4 = torch.stack([_input_gradient(attacker, prep.x, y) for _ in range(4)]).mean(0)
    scored = _input_gradient(attacked_model("adaptive", diff, stream=0), prep.x, y)
    assert d4.norm == pytest.approx(mean4.norm().item(), rel=1e-4)
    assert d4.cos_to_exact == pytest.approx(F.cosine_similarity(mean4.flatten(), scored.flatten(), 0).item(), abs=1e-4)
    assert d1.cos_to_exact < 0.9999
    cos_defence = prep.defence(PurifyConfig())
    cos = gradient_diagnostics("adaptive", cos_defence, prep.x, y, cos_defence, eot=1)
    assert not cos.randomised and cos.cos_to_exact == pytest.approx(1.0, abs=1e-5)


def test_audit_of_clipure_diff_uses_eot_and_names_its_settings():
    from app.audit import audit_image
    from app.views.presets import EXAMPLES_DIR
    from app.flows.request import Request
    request = Request(EXAMPLES_DIR / "toy-red-circle.png", "red circle, blue square, green triangle, yellow cross",
                      "toy-shapes", "single", "fp32")
    res = audit_image(request, "adaptive", PurifyConfig(defence="clipure-diff", steps=2, step_size=0.5, seed=4),
                      eps=8, steps=2, eot=2)
    d = json.loads(json.dumps(res.to_dict()))
    assert d["purify"]["defence"] == "clipure-diff" and d["purify"]["seed"] == 4
    assert (d["attack"]["attack"], d["attack"]["eot"], d["attack"]["steps"]) == ("PGD", 2, 2)
    assert d["gradient"]["draws"] == 2 and d["backbone"] == "toy-shapes"
    assert "EOT K=2" in next(c for c in res.checks if c.name == "b").detail
    with pytest.raises(UnsupportedError, match="must be 1"):
        audit_image(Request(EXAMPLES_DIR / "toy-red-circle.png", "red circle, blue square", "toy-shapes", "single",
                            "fp32"), "undefended", PurifyConfig(defence="clipure-diff"), eot=2)
