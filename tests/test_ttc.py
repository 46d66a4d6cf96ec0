"""TTC (test-time counterattacks), the second training-free defence: its update against a re-typed
reference of the official one, tau and the weight switch at their closed forms, seeded repeats,
the adaptive gradient against a create_graph reference, and every threat model end to end."""
import json
import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from app.attacks import AttackConfig
from app.defences.defence import Defence
from app.common.errors import CLIPureError, UnsupportedError
from app.defences import PurifyConfig, TTCConfig, seeded
from app.defences.ttc import counterattack, relative_change, step_weights
from app.flows.scoring import score
from app.attacks.threat_models import attacked_model, offered

TTC = PurifyConfig(defence="ttc")
RED_CIRCLE = "assets/examples/toy-red-circle.png"
TOY_NAMES = "red circle, blue square, green triangle, yellow cross"


def official_counterattack(encode, x, delta0, eps, alpha, steps, tau_thres, beta):
    """The official update, re-typed from its description (test_time_counterattack.py): the start
    delta0 is given (the official code draws it with uniform_ and clamps it to the image range)."""
    delta = delta0.clone().requires_grad_(True)
    with torch.no_grad():
        ori = encode(x)
    deltas = [delta.data.clone()]
    tau = None
    for step in range(steps):
        att = encode(x + delta)
        if step == 0:
            tau = torch.norm(att - ori, dim=-1) / torch.norm(ori, dim=-1)
        sign = (tau_thres - tau).sign()
        grad = torch.autograd.grad(((att - ori) ** 2).sum(1).sum(), delta)[0]
        d = torch.clamp(delta + alpha * torch.sign(grad), min=-eps, max=eps)
        d = torch.max(torch.min(d, 1 - x), -x)
        delta.data = d.data
        deltas.append(delta.data.clone())
    k = torch.arange(steps + 1).unsqueeze(0).expand(x.size(0), -1).float()
    w = torch.exp(sign.view(-1, 1) * k * beta)
    w = w / w.sum(dim=1, keepdim=True)
    hard = torch.zeros_like(w)
    hard[:, 0] = 1.0
    w = torch.where(sign.unsqueeze(1) > 0, w, hard)
    return torch.stack(deltas, 1), tau, w, x + (w.view(x.size(0), steps + 1, 1, 1, 1) * torch.stack(deltas, 1)).sum(1)


@pytest.fixture(scope="module")
def tiny_ttc(tiny_setup):
    clf, blank = tiny_setup
    return Defence(clf, blank, TTC, "tiny-random")


def _images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.rand((n, 3, size, size), generator=torch.Generator().manual_seed(seed))


def test_the_counterattack_is_the_official_update(tiny_ttc, tiny):
    x = _images(3, tiny.image_size)
    x[0, :, :4] = 0.0   # pixels on the image's edge: the clamp to the image range matters there
    cfg = TTCConfig()
    done = counterattack(x, tiny_ttc.classifier.encode, cfg, torch.Generator().manual_seed(5))
    delta0 = done.points[0] - x
    deltas, tau, w, x_ttc = official_counterattack(tiny_ttc.classifier.encode, x, delta0, 4 / 255, 1 / 255, 2,
                                                   0.2, 2.0)
    ours = torch.stack([p - x for p in done.points], 1)
    assert torch.allclose(ours, deltas, atol=1e-6)           # float32: x + delta - x is delta to 1 ulp of 1
    assert torch.allclose(done.tau, tau, rtol=1e-5) and torch.allclose(done.weights, w, atol=1e-7)   # softmax vs exp/sum
    assert torch.allclose(done.x_ttc, x_ttc, atol=1e-6)
    # a convex mix of images in [0, 1]: inside it up to float32 rounding (the official code does not clip x_ttc)
    assert (ours.abs() <= 4 / 255 + 1e-6).all() and (done.x_ttc >= -1e-6).all() and (done.x_ttc <= 1 + 1e-6).all()
    # the start: uniform within eps, clipped to the image
    assert (delta0 >= -x - 1e-7).all() and delta0.abs().max() <= 4 / 255 + 1e-7 and delta0.abs().max() > 3 / 255


def test_tau_and_the_weight_switch_at_their_closed_forms():
    f_x, f_n = torch.tensor([[3.0, 4.0]]), torch.tensor([[3.0, 5.0]])
    assert relative_change(f_x, f_n).item() == pytest.approx(1 / 5)
    tau = torch.tensor([0.05, 0.2, 0.7])
    w = step_weights(tau, steps=2, tau_thres=0.2, beta=2.0)
    z = 1 + math.exp(2) + math.exp(4)
    assert w[0].tolist() == pytest.approx([1 / z, math.exp(2) / z, math.exp(4) / z], rel=1e-6)   # falsely stable
    assert w[1].tolist() == [1.0, 0.0, 0.0] and w[2].tolist() == [1.0, 0.0, 0.0]   # tau >= tau_thres: delta_0 only
    assert step_weights(torch.tensor([0.1]), steps=2, tau_thres=0.2, beta=0.0)[0].tolist() == pytest.approx([1 / 3] * 3)


def test_seeded_runs_repeat_and_other_seeds_differ(tiny_ttc, tiny):
    x = _images(2, tiny.image_size, seed=1)
    a, b = score(tiny_ttc, x), score(tiny_ttc, x)
    other = score(tiny_ttc.with_purify(PurifyConfig(defence="ttc", seed=1)), x)
    assert torch.equal(a.trajectory.pixels, b.trajectory.pixels) and torch.equal(a.trajectory.probs, b.trajectory.probs)
    assert not torch.equal(a.trajectory.pixels[1], other.trajectory.pixels[1])
    # the trajectory: x, x + delta_0 .. x + delta_K, x_ttc; step 0 is bare CLIP
    assert a.trajectory.steps == TTCConfig().steps + 2 and torch.equal(a.trajectory.pixels[0], x)
    assert torch.allclose(a.trajectory.probs[0], tiny_ttc.classifier(x).softmax(-1), atol=1e-6)
    # the counterattack's own features serve the trajectory: K + 3 encoder passes, each point's
    # embedding that of its image (fp32, up to the attention kernel's rounding)
    from app.bench.ttc import counted
    with counted(tiny_ttc.classifier) as calls:
        traj = score(tiny_ttc, x).trajectory
    assert calls["forwards"] == TTCConfig().steps + 3
    with torch.no_grad():
        fresh = torch.stack([F.normalize(tiny_ttc.classifier.encode(p), dim=-1) for p in traj.pixels])
    assert torch.allclose(traj.embeddings, fresh, atol=1e-5)


def _reference_logits(defence: Defence, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The whole defence with create_graph through both steps and nothing detached (tau, f(x))."""
    cfg, enc = defence.purify.own(), defence.classifier.encode
    eps, alpha = cfg.eps / 255, cfg.step_size / 255
    noise = (torch.rand(x.shape, generator=generator) * 2 - 1) * eps
    delta = torch.max(torch.min(noise, 1 - x), -x)
    f_x, deltas, tau = enc(x), [delta], None
    for _ in range(cfg.steps):
        f = enc(x + deltas[-1])
        tau = (f - f_x).norm(dim=-1) / f_x.norm(dim=-1) if tau is None else tau
        (g,) = torch.autograd.grad(((f - f_x) ** 2).sum(), deltas[-1], create_graph=True)
        d = torch.clamp(deltas[-1] + alpha * torch.sign(g), -eps, eps)
        deltas.append(torch.max(torch.min(d, 1 - x), -x))
    w = step_weights(tau, cfg.steps, cfg.tau_thres, cfg.beta)
    return defence.classifier(x + (w[:, :, None, None, None] * torch.stack(deltas, 1)).sum(1))


def test_the_adaptive_gradient_is_the_create_graph_gradient(tiny_ttc, tiny):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    x = _images(2, tiny.image_size, seed=2)
    y = torch.tensor([0, 3])
    model = attacked_model("adaptive", tiny_ttc)
    xa = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(xa), y), xa)
    xr = x.clone().requires_grad_(True)
    with sdpa_kernel([SDPBackend.MATH]):   # the fused CPU kernel has no second derivative
        ref = _reference_logits(tiny_ttc, xr, seeded(TTC, "cpu", stream=1))   # the attacker's stream
    (g_ref,) = torch.autograd.grad(F.cross_entropy(ref, y), xr)
    # fp32 through two attention kernels (the reference's final forward is the math one): equal to a
    # few float32 roundings of the whole vector
    assert g.norm() > 0 and (g - g_ref).norm() <= 1e-5 * g_ref.norm()
    # BPDA: the counterattack's backward is the identity, so its gradient is bare CLIP's at x_ttc
    bpda = attacked_model("bpda", tiny_ttc)
    xb = x.clone().requires_grad_(True)
    (g_b,) = torch.autograd.grad(F.cross_entropy(bpda(xb), y), xb)
    done = counterattack(x, tiny_ttc.classifier.encode, TTCConfig(), seeded(TTC, "cpu", stream=1))
    xt = done.x_ttc.clone().requires_grad_(True)
    (g_t,) = torch.autograd.grad(F.cross_entropy(tiny_ttc.classifier(xt), y), xt)
    assert torch.allclose(g_b, g_t, rtol=1e-5, atol=1e-10)


def test_eot_averages_draws_of_the_random_start_where_the_attacker_queries_ttc(tiny_ttc, tiny):
    from app.attacks.gradients import gradient_diagnostics
    from app.attacks.threat_models import eot_for, randomised
    assert randomised("adaptive", TTC) and randomised("bpda", TTC) and not randomised("undefended", TTC)
    assert eot_for(4, "adaptive", TTC) == 4 and eot_for(4, "undefended", TTC) == 1
    x, y = _images(1, tiny.image_size, seed=3), torch.tensor([1])
    one, four = (gradient_diagnostics("adaptive", tiny_ttc, x, y, tiny_ttc, eot=k) for k in (1, 4))
    assert (one.draws, four.draws, four.randomised) == (1, 4, True)
    assert one.norm != four.norm   # four draws of the start average to another gradient


def test_ttc_has_no_official_threat_model():
    assert offered(TTC) == ["undefended", "adaptive", "bpda"]
    assert "official" in offered(PurifyConfig())
    from app.flows.pipeline import run_pipeline
    with pytest.raises(UnsupportedError, match="no official threat model") as e:
        run_pipeline(RED_CIRCLE, TOY_NAMES, AttackConfig(attack="PGD", eps=4, steps=1, threat_model="official"), TTC,
                     backbone="toy-shapes", template_set="single")
    assert str(e.value).count(". ") == 0


@pytest.mark.parametrize("threat_model", ["undefended", "adaptive", "bpda"])
def test_each_threat_model_end_to_end_on_the_bundled_model(threat_model):
    from app.views import export, report
    from app.flows.pipeline import run_pipeline
    r = run_pipeline(RED_CIRCLE, TOY_NAMES, AttackConfig(attack="PGD", eps=4, steps=10, threat_model=threat_model),
                     TTC, backbone="toy-shapes", template_set="single")
    assert r.clean.label == "red circle"
    # through the defence the attack breaks TTC on this image; attacking bare CLIP (TTC's own evaluation) does not
    assert r.outcome.fooled_defence == (threat_model != "undefended")
    d = export.to_dict(r, embeddings=False)
    assert set(d["counterattack"]) == {"clean", "adversarial"} and len(d["counterattack"]["clean"]["weights"]) == 3
    assert "TTC on the adversarial image" in report.stats_markdown(r, 1.0) and "against TTC" in report.stats_markdown(r, 1.0)
    assert "ttc eps 4/255, 2 steps of 1/255" in report.caption(r)
    assert r.gradient is not None and r.gradient.norm > 0 and r.gradient.zero_fraction < 0.5


def test_compare_audit_and_evaluator_take_ttc(tmp_path):
    from app.flows.pipeline import compare_threat_models
    from app.flows.request import Request
    rows = compare_threat_models(Request(RED_CIRCLE, TOY_NAMES, "toy-shapes", "single"),
                                 AttackConfig(attack="PGD", eps=4, steps=5), TTC)
    assert [r.attack_config.threat_model for r in rows] == ["undefended", "adaptive", "bpda"]
    from app.views import comparison
    assert "TTC (attacked)" in comparison.compare_table(rows)["headers"]
    out = subprocess.run([sys.executable, "-m", "app.audit", RED_CIRCLE, "--classes", TOY_NAMES, "--backbone",
                          "toy-shapes", "--method", "ttc", "--threat-model", "undefended", "--eps", "4", "--steps", "5",
                          "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    audit = json.loads(out.stdout.strip().splitlines()[-1])
    assert audit["purify"]["defence"] == "ttc" and audit["checks"][1]["flagged"]   # (b): adaptive/BPDA break it
    from app.evaluate import EvalConfig, run_evaluation
    cfg = EvalConfig(data="toy", n=4, backbone="toy-shapes", template_set="single", batch_size=4,
                     defences=("none", "clipure-cos", "ttc"), eps=(4.0,), steps=2,
                     threat_models=("undefended", "official", "adaptive", "bpda"))
    keys = [s.key for s in cfg.settings()]
    assert "ttc|PGD|4|official" not in keys and "ttc|PGD|4|adaptive" in keys and "clipure-cos(eta=30)|PGD|4|official" in keys
    run_evaluation(cfg, tmp_path, progress=False)
    rows = {r["setting"]: r for r in json.loads((tmp_path / "summary.json").read_text())["rows"]}
    assert rows["ttc|PGD|4|bpda"]["n"] == 4 and rows["ttc|PGD|4|bpda"]["purify_step_size"] is None
    with pytest.raises(CLIPureError, match="no official threat model"):
        EvalConfig(defences=("ttc",), threat_models=("official",)).validate()


def test_bad_ttc_settings_get_one_sentence():
    with pytest.raises(CLIPureError, match="TTC's counterattack steps"):
        PurifyConfig(defence="ttc", params=TTCConfig(steps=-1)).validate()
    with pytest.raises(CLIPureError, match="TTC's eps"):
        PurifyConfig(defence="ttc", params=TTCConfig(eps=1000)).validate()
    with pytest.raises(UnsupportedError, match="defends the image"):
        from app.defences import purify
        purify(torch.randn(1, 8), torch.randn(8), TTC)
