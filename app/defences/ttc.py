"""Test-time counterattacks (TTC; Xing et al., CVPR 2025): a training-free defence of CLIP in pixel
space, beside CLIPure's latent purification (docs/design.md, "A second defence: TTC").

Per image x (pixels in [0, 1]; f = CLIP's image encoder, unnormalised features), with the official
code's defaults (eps 4/255, 2 steps of 1/255, tau_thres 0.2, beta 2):

    delta_0 = clip(U(-eps, eps), -x, 1 - x)                       the random start
    tau     = ||f(x + delta_0) - f(x)|| / ||f(x)||                  how far the noise moves the embedding
    delta_k = clip(clip(delta_{k-1} + alpha sign(g_k), -eps, eps), -x, 1 - x),
              g_k = grad_delta ||f(x + delta) - f(x)||^2 at delta_{k-1}   (the counterattack: away from f(x))
    w       = softmax_k(sign(tau_thres - tau) * k * beta)  if tau < tau_thres ("falsely stable")
              else (1, 0, ..., 0)                          (only the random start)
    x_ttc   = x + sum_k w_k delta_k                          zero-shot CLIP classifies x_ttc

What an attacker's exact gradient (create_graph through the two steps) sees: sign() and the weight
switch are piecewise constant, so their derivative is zero almost everywhere; the gradient reaches
x through x itself and through the clips to the image range (where a delta sits on -x or 1 - x),
never through the direction of a counterattack step or through tau. BPDA takes the whole
counterattack as the identity.
"""
from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from app.common.errors import check_int, check_range
from app.defences.spec import DefenceSpec, Passes, seeded
from app.defences.trajectory import TrajectoryStep

Encoder = Callable[[torch.Tensor], torch.Tensor]   # (N, 3, S, S) pixels in [0, 1] -> (N, D) features


@dataclass(frozen=True)
class TTCConfig:
    """TTC's parameters, the official code's defaults (test_time_counterattack.py's arguments)."""
    eps: float = 4.0          # eps_ttc, L-inf, in 1/255: how far the counterattack may move the image
    steps: int = 2            # K, counterattack steps: each one a forward and a backward of the encoder
    step_size: float = 1.0    # alpha, in 1/255: one signed step away from f(x)
    tau_thres: float = 0.2    # below it, the noise barely moved f(x): "falsely stable", so counterattack
    beta: float = 2.0         # how strongly the weights favour later steps when falsely stable

    def validate(self) -> "TTCConfig":
        return TTCConfig(eps=check_range("TTC's eps", self.eps, 0, 32),
                         steps=check_int("TTC's counterattack steps", self.steps, 0, 20),
                         step_size=check_range("TTC's step size", self.step_size, 0, 32),
                         tau_thres=check_range("TTC's tau threshold", self.tau_thres, 0, 10),
                         beta=check_range("TTC's beta", self.beta, 0, 50))


@dataclass
class Counterattack:
    """What TTC did to a batch of N images."""
    points: list[torch.Tensor]   # K+1 images (N, 3, S, S): x + delta_0 (the random start), ..., x + delta_K
    tau: torch.Tensor            # (N,)
    weights: torch.Tensor        # (N, K+1), rows sum to 1
    x_ttc: torch.Tensor          # (N, 3, S, S) x + sum_k w_k delta_k: what CLIP classifies
    # The encoder features the counterattack computed, detached: f(x), then f at its first points
    # (x + delta_0, ...) in order; whoever draws the trajectory need not encode those again.
    features: list[torch.Tensor] = field(default_factory=list)


def relative_change(f_x: torch.Tensor, f_noisy: torch.Tensor) -> torch.Tensor:
    """tau (N,): ||f(x + delta_0) - f(x)|| / ||f(x)||."""
    return (f_noisy - f_x).norm(dim=-1) / f_x.norm(dim=-1)


def step_weights(tau: torch.Tensor, steps: int, tau_thres: float, beta: float) -> torch.Tensor:
    """(N, K+1): softmax over k of sign(tau_thres - tau) * k * beta where tau < tau_thres, else all
    weight on the random start (k = 0). Piecewise constant in tau."""
    sign = torch.sign(tau_thres - tau)                                  # (N,)
    k = torch.arange(steps + 1, device=tau.device, dtype=tau.dtype)
    soft = torch.softmax(sign[:, None] * k[None, :] * beta, dim=1)
    hard = torch.zeros_like(soft)
    hard[:, 0] = 1.0
    return torch.where(sign[:, None] > 0, soft, hard)


def counter_start(x: torch.Tensor, eps: float, generator: torch.Generator | None) -> torch.Tensor:
    """delta_0 (N, 3, S, S): uniform in [-eps, eps] (eps in [0, 1] units), clipped so x + delta_0 stays an image."""
    device = generator.device if generator is not None else x.device
    noise = (torch.rand(x.shape, generator=generator, device=device).to(x.device, x.dtype) * 2 - 1) * eps
    return torch.clamp(noise, -x, 1 - x)


def counterattack(x: torch.Tensor, encode: Encoder, cfg: TTCConfig = TTCConfig(),
                  generator: torch.Generator | None = None, backward: str = "none") -> Counterattack:
    """TTC on x (N, 3, S, S). backward: "none" (no graph), "adaptive" (create_graph through the
    counterattack steps, so an attacker differentiates all of it) or "bpda" (computed without a
    graph, x_ttc = x + (counterattack).detach(): the identity backward)."""
    eps, alpha = cfg.eps / 255, cfg.step_size / 255
    exact = backward == "adaptive" and torch.is_grad_enabled()   # a query without gradients needs no graph
    # create_graph through the encoder's backward needs its second derivative, which the fused CPU
    # attention kernel does not have; the math kernel does (same values up to rounding).
    kernel = sdpa_kernel([SDPBackend.MATH]) if exact else contextlib.nullcontext()
    with torch.set_grad_enabled(exact), kernel:
        x_in = x if exact else x.detach()
        deltas = [counter_start(x_in, eps, generator)]
        f_x = encode(x_in) if exact else encode(x_in).detach()
        features, tau = [f_x.detach()], None
        for _ in range(cfg.steps):
            with torch.enable_grad():
                d = deltas[-1] if exact and deltas[-1].requires_grad else deltas[-1].detach().requires_grad_(True)
                f = encode(x_in + d)
                features.append(f.detach())
                if tau is None:   # at delta_0: how far the noise alone moved the embedding
                    tau = relative_change(f_x, f).detach()
                (g,) = torch.autograd.grad(((f - f_x) ** 2).sum(), d, create_graph=exact)
            step = torch.clamp(torch.clamp(d + alpha * torch.sign(g), -eps, eps), -x_in, 1 - x_in)
            deltas.append(step if exact else step.detach())
        if tau is None:   # no steps: the random noise alone (tau is still measured)
            with torch.no_grad():
                features.append(encode(x_in + deltas[0]))
                tau = relative_change(f_x, features[-1])
        w = step_weights(tau, cfg.steps, cfg.tau_thres, cfg.beta)            # (N, K+1)
        shift = (w[:, :, None, None, None] * torch.stack(deltas, dim=1)).sum(dim=1)
    x_ttc = x + shift.detach() if backward == "bpda" else x_in + shift
    return Counterattack([(x_in + d).detach() for d in deltas], tau, w, x_ttc, features)


def params(cfg) -> TTCConfig:
    """TTC's own parameters from a PurifyConfig (its defaults when none are given)."""
    return cfg.params if cfg.params is not None else TTCConfig()


@torch.no_grad()
def _steps(defence, x: torch.Tensor, z: torch.Tensor | None = None) -> Iterator[TrajectoryStep]:
    """TTC's trajectory: step 0 is x (bare CLIP), steps 1 .. K+1 the counterattack's points
    x + delta_k, the last step x_ttc, the image the defence classifies. Its random start comes from
    stream 0 of the purification seed, the draw that scoring uses. The points the counterattack
    encoded itself (x, x + delta_0 .. x + delta_{K-1}) are not encoded again: K + 3 encoder passes."""
    clf = defence.classifier
    generator = seeded(defence.purify, defence.class_embeddings.device, stream=0)
    done = counterattack(x, clf.encode, params(defence.purify), generator, "none")
    b = defence.blank.float()
    for t, image in enumerate([x, *done.points, done.x_ttc]):
        f = done.features[t] if t < len(done.features) else clf.encode(image)
        e = F.normalize(f, dim=-1)
        yield TrajectoryStep(t, e, F.cosine_similarity(e, b.expand_as(e), dim=-1),
                             clf.logits_from_embedding(e).float().softmax(-1), pixels=image.detach(),
                             tau=done.tau, weights=done.weights)


def _attacked(defence, x: torch.Tensor, backward: str, generator: torch.Generator) -> torch.Tensor:
    """The counterattack on x, then zero-shot CLIP on x_ttc."""
    done = counterattack(x, defence.classifier.encode, params(defence.purify), generator, backward)
    return defence.classifier(done.x_ttc)


def _point(cfg, t: int) -> str:
    last = params(cfg).steps + 2
    return ("the input" if t == 0 else "the random start x + δ_0" if t == 1 else
            "x_ttc, the weighted image TTC classifies" if t == last else f"counterattack step {t - 1}")


def _describe(cfg) -> str:
    p = params(cfg)
    return f"eps {p.eps:g}/255, {p.steps} steps of {p.step_size:g}/255, tau_thres {p.tau_thres:g}, beta {p.beta:g}"


def _decision(cfg, trajectory) -> str | None:
    """TTC's decision on one image (image 0 of a trajectory): tau against tau_thres, and the weights."""
    if trajectory.tau is None:
        return None
    tau, w, thres = float(trajectory.tau[0]), trajectory.weights[0].tolist(), params(cfg).tau_thres
    weights = " · ".join(f"{v:.3f}" for v in w)
    if tau < thres:
        return (f"τ = **{tau:.3f}** < τ_thres {thres:g}: falsely stable, so the counterattack counts "
                f"(weights of δ_0 … δ_{len(w) - 1}: {weights})")
    return f"τ = **{tau:.3f}** ≥ τ_thres {thres:g}: only the random start δ_0 is used (weights {weights})"


def _query_cost(cfg, attacked: bool) -> Passes:
    """One query: f(x), K steps (a forward and a backward each) and the classification of x_ttc; an
    attacker's gradient adds a backward through each of the K + 2 forwards."""
    k = params(cfg).steps
    return Passes(k + 2, k + (k + 2 if attacked else 0))


SPEC = DefenceSpec(
    "TTC", "Test-time counterattacks (Xing et al., CVPR 2025): a few signed steps that move the image's "
    "embedding away from itself, weighted by how stable it was; randomised (its start).",
    "pixel", _steps, _attacked, threat_models=("undefended", "adaptive", "bpda"), default_threat_model="adaptive",
    lacks={"official": "TTC has no official threat model: its own evaluation attacks bare CLIP (undefended) and "
                       "then defends; to attack through it, pick adaptive or bpda."},
    randomised=True, config=TTCConfig, reads=("seed",), length=lambda cfg: params(cfg).steps + 2, point=_point,
    axis="TTC point (0: the input; last: x_ttc)", blank=False, doing="Counterattacking the {} image",
    query_cost=_query_cost, score_cost=lambda cfg: Passes(params(cfg).steps + 3, params(cfg).steps),
    describe=_describe, record=lambda cfg: asdict(params(cfg)), decision=_decision)
