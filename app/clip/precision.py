"""Precision: fp32, or the official evaluation's mixed-precision recipe in fp16 (or bf16).

The recipe matters: in it the `official` threat model's masked gradient underflows to exactly
zero (docs/official-code.md, "Where the paper's robustness most likely comes from").
"""
from __future__ import annotations

import os

import torch
import torch.nn as nn
from open_clip.model import convert_weights_to_lp
from open_clip.transformer import LayerNorm, LayerNormFp32

from app.common.errors import UnsupportedError
from app.common.registry import Registry

PRECISIONS = Registry("precision", {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16})


def pick_precision(device: torch.device, precision: str | None = None) -> str:
    """fp32 unless asked otherwise, on every device, CUDA included: in the official fp16 recipe the
    masked gradient of the `official` threat model underflows to exactly zero, so fp16 is a setting
    to study that, not a default. Purification and the zero-shot head run in fp32 whatever the
    encoders' precision (as in the official code)."""
    precision = precision or os.environ.get("CLIPURE_PRECISION", "fp32")
    dtype = PRECISIONS[precision]
    if precision != "fp32":
        try:   # a half-precision matmul: the op the encoders need most
            torch.ones(2, 2, dtype=dtype, device=device) @ torch.ones(2, 2, dtype=dtype, device=device)
        except (RuntimeError, TypeError):
            raise UnsupportedError(f"This {device.type} device cannot compute in {precision}; use fp32.") from None
    return precision


# The official evaluation's mixed precision (docs/design.md, "The official recipe"): the model is created in
# half precision (open_clip rounds its Linear, Conv, attention and projection weights, and builds
# every norm as LayerNormFp32), brought back with .float(), then every parameter whose name holds
# one of these parts is cast to half again, LayerNorms ("ln_") excepted. Embeddings, LayerNorms
# and logit_scale stay fp32.
HALF_PARTS = ("mlp", "attn", "conv1", "visual.proj", "text_projection", "q_proj", "proj.bias", "proj")


def half_params(model: torch.nn.Module):
    return [(n, p) for n, p in model.named_parameters()
            if "ln_" not in n and any(part in n for part in HALF_PARTS)]


class GradModeAttention(nn.MultiheadAttention):
    """torch's MultiheadAttention, always on the path it takes under gradients.

    The official code runs every forward under torch.enable_grad with weights that require grad,
    so torch never takes its fused inference kernel (the "fast path" of nn.MultiheadAttention,
    taken in eval mode when gradients are off or no argument requires grad). The app's weights are
    frozen and it scores under no_grad, where self-attention would take that kernel, which rounds
    differently in half precision (on the toy model, fp16 unit embeddings up to 3.8e-4 apart, with
    LayerNormFp32 on both sides). Here a self-attention
    call that would record no graph runs on a detached copy of its input that requires grad, then
    returns the values detached: the same kernels as under gradients, and nothing kept. A call that
    records a graph (the attacks) is left as it is: it is on that path already."""

    def forward(self, query, key, value, *args, **kwargs):
        if query is not key or key is not value or (torch.is_grad_enabled() and any(
                t is not None and t.requires_grad for t in (query, *self.parameters()))):
            return super().forward(query, key, value, *args, **kwargs)
        leaf = query.detach().requires_grad_(True)
        with torch.enable_grad():
            out, weights = super().forward(leaf, leaf, leaf, *args, **kwargs)
        return out.detach(), None if weights is None else weights.detach()


def official_modules(model: torch.nn.Module) -> torch.nn.Module:
    """Give an fp32-built open_clip CLIP the module types of the official route, in place, keeping
    every weight: open_clip's precision="fp16" (or "bf16") creation builds its norms as
    LayerNormFp32 (the input cast to fp32 before the norm, as OpenAI's CLIP), the fp32 creation
    as LayerNorm (the norm on the half-precision input, fp32 weights); and attention on its
    gradient path (GradModeAttention). Only the class changes: both are nn.LayerNorm (and
    nn.MultiheadAttention) with the same attributes."""
    for m in model.modules():
        if type(m) is LayerNorm:
            m.__class__ = LayerNormFp32
        elif type(m) is nn.MultiheadAttention:
            m.__class__ = GradModeAttention
    return model


def apply_precision(model: torch.nn.Module, precision: str) -> torch.nn.Module:
    """Cast an fp32 open_clip CLIP to the official recipe at `precision` (fp16 or bf16), in place:
    the module types of open_clip's creation at that precision (official_modules), its weight
    rounding, .float(), then the half cast of half_params. The model is built in fp32 and cast,
    rather than created at that precision, so that every precision loads through one route
    (models._create) and its weights are checked equal to the official route's by a test."""
    if precision == "fp32":
        return model
    dtype = PRECISIONS[precision]
    official_modules(model)
    convert_weights_to_lp(model, dtype)
    model.float()
    for _, p in half_params(model):
        p.data = p.data.to(dtype)
    return model
