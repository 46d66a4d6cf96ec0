"""JPEG compression (Guo et al., "Countering Adversarial Images using Input Transformations", ICLR
2018): the image is JPEG-compressed at quality q (their setting: 75) and decompressed before CLIP
sees it. A textbook case of obfuscated gradients (Athalye, Carlini & Wagner, ICML 2018).

    x_jpeg = decode(encode(round(255 x), q)) / 255        libjpeg through Pillow, per image

What each threat model's attacker differentiates:
- undefended: bare CLIP; x_adv is then compressed (the transfer setting).
- adaptive: the exact derivative of x -> x_jpeg. Both roundings (to 8 bits, and of each DCT
  coefficient to its quantisation step) are piecewise constant, so the function is piecewise
  constant in x and its derivative is zero almost everywhere: the attacker's gradient is exactly
  zero, and gradient attacks never leave their start (shattered gradients). autograd cannot see
  through libjpeg at all; the backward below returns that zero derivative, so the masking audit
  finds it.
- bpda: the identity in the backward pass (Athalye et al.'s attack): x_jpeg's value, x's gradient.
"""
from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from app.common.errors import check_int
from app.defences.spec import DefenceSpec, Passes
from app.defences.trajectory import TrajectoryStep


@dataclass(frozen=True)
class JPEGConfig:
    quality: int = 75   # libjpeg quality 1-95 (Guo et al.: 75); lower removes more of a perturbation and of the image

    def validate(self) -> "JPEGConfig":
        return JPEGConfig(quality=check_int("JPEG quality", self.quality, 1, 95))


def compress(x: torch.Tensor, quality: int = 75) -> torch.Tensor:
    """x (N, 3, S, S) in [0, 1] -> the same images after a JPEG round trip at `quality`, as x's dtype and device."""
    out = []
    for image in x.detach().float().cpu():
        pixels = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()   # (S, S, 3)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
        decoded = np.asarray(Image.open(buffer).convert("RGB"), dtype=np.float32) / 255
        out.append(torch.from_numpy(decoded.copy()).permute(2, 0, 1))
    return torch.stack(out).to(x.device, x.dtype)


class _ExactJPEG(torch.autograd.Function):
    """x -> x_jpeg with its exact derivative: zero almost everywhere (both roundings are piecewise constant)."""

    @staticmethod
    def forward(ctx, x, quality):
        return compress(x, quality)

    @staticmethod
    def backward(ctx, grad):
        return torch.zeros_like(grad), None


def jpeg(x: torch.Tensor, cfg: JPEGConfig = JPEGConfig(), backward: str = "none") -> torch.Tensor:
    """x_jpeg (N, 3, S, S). backward: "adaptive" (the exact, zero derivative), "bpda" (the identity) or "none"."""
    if backward == "bpda":
        return x + (compress(x, cfg.quality) - x).detach()
    if backward == "adaptive" and torch.is_grad_enabled():
        return _ExactJPEG.apply(x, cfg.quality)
    return compress(x, cfg.quality)


def params(cfg) -> JPEGConfig:
    """JPEG's own parameters from a PurifyConfig (its defaults when none are given)."""
    return cfg.params if cfg.params is not None else JPEGConfig()


@torch.no_grad()
def _steps(defence, x: torch.Tensor, z: torch.Tensor | None = None) -> Iterator[TrajectoryStep]:
    """Two points: x (bare CLIP, from z when the caller has it) and x_jpeg (what the defence classifies)."""
    clf, b = defence.classifier, defence.blank.float()
    for t, image in enumerate([x, jpeg(x, params(defence.purify))]):
        e = z if t == 0 and z is not None else F.normalize(clf.encode(image), dim=-1)
        yield TrajectoryStep(t, e, F.cosine_similarity(e, b.expand_as(e), dim=-1),
                             clf.logits_from_embedding(e).float().softmax(-1), pixels=image.detach())


def _attacked(defence, x: torch.Tensor, backward: str, generator: torch.Generator | None) -> torch.Tensor:
    return defence.classifier(jpeg(x, params(defence.purify), backward))


SPEC = DefenceSpec(
    "JPEG", "JPEG compression at quality q (Guo et al., ICLR 2018), broken by BPDA (Athalye et al., ICML 2018): "
    "its exact gradient is zero almost everywhere.",
    "pixel", _steps, _attacked, threat_models=("undefended", "adaptive", "bpda"), default_threat_model="adaptive",
    lacks={"official": "JPEG has no official threat model: Guo et al. attacked the undefended model and "
                       "compressed (undefended); to attack through it, pick adaptive or bpda."},
    config=JPEGConfig, reads=(), length=lambda cfg: 1,
    point=lambda cfg, t: "the input" if t == 0 else f"x_jpeg, compressed at quality {params(cfg).quality}",
    axis="JPEG (0: the input; 1: compressed)", blank=False, doing="Compressing the {} image",
    query_cost=lambda cfg, attacked: Passes(1, int(attacked)), score_cost=lambda cfg: Passes(2),
    describe=lambda cfg: f"quality {params(cfg).quality}", record=lambda cfg: asdict(params(cfg)))
