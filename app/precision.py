"""Precision: fp32, or the official evaluation's mixed-precision recipe in fp16 (or bf16).

The recipe matters: in it the `official` threat model's masked gradient underflows to exactly
zero (README, "Where the paper's robustness most likely comes from").
"""
from __future__ import annotations

import os

import torch
from open_clip.model import convert_weights_to_lp

from app.errors import UnsupportedError
from app.registry import Registry

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


# The official evaluation's mixed precision (DESIGN.md, "Precision"): the model is created in
# half precision (open_clip rounds its Linear, Conv, attention and projection weights), brought
# back with .float(), then every parameter whose name holds one of these parts is cast to half
# again, LayerNorms ("ln_") excepted. Embeddings, LayerNorms and logit_scale stay fp32.
HALF_PARTS = ("mlp", "attn", "conv1", "visual.proj", "text_projection", "q_proj", "proj.bias", "proj")


def half_params(model: torch.nn.Module):
    return [(n, p) for n, p in model.named_parameters()
            if "ln_" not in n and any(part in n for part in HALF_PARTS)]


def apply_precision(model: torch.nn.Module, precision: str) -> torch.nn.Module:
    """Cast an fp32 open_clip CLIP to the official recipe at `precision` (fp16 or bf16), in place."""
    if precision == "fp32":
        return model
    dtype = PRECISIONS[precision]
    convert_weights_to_lp(model, dtype)
    model.float()
    for _, p in half_params(model):
        p.data = p.data.to(dtype)
    return model
