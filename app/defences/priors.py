"""Where each backbone's diffusion prior comes from (PRIORS), and loading its weights.

- "ViT-L-14-quickgelu/openai": the LAION prior the paper uses, downloaded from the Hugging Face
  hub (zenglishuci/conditioned-prior, vit-l-14/prior_aes_finetune.pth, its `ema_model` entry).
- "toy-shapes": a small prior of the same class trained by `python -m app.tools.train_prior` and
  bundled in assets/toy-shapes/ (works offline).

The network itself is app/defences/prior.py.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from app.common.errors import UnsupportedError, WeightsUnavailableError
from app.clip import models
from app.clip.models import TOY_BACKBONE
from app.defences.prior import LAION_VIT_L_14, DiffusionPrior, PriorConfig
from app.common.registry import Registry

ASSET_DIR = Path(__file__).resolve().parents[2] / "assets" / "toy-shapes"


_SCHEDULE_BUFFERS = ("betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
                     "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
                     "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
                     "posterior_mean_coef1", "posterior_mean_coef2", "p2_loss_weight", "_dummy")


def _our_key(key: str) -> str | None:
    """A dalle2_pytorch DiffusionPrior key -> ours, or None for what we recompute or never use."""
    base = key.rsplit(".", 1)[-1]
    if key.startswith("clip.") or base in _SCHEDULE_BUFFERS or key.endswith("rotary_emb.freqs"):
        return None   # the frozen CLIP, the noise schedule and rotary frequencies are fixed, not learned
    if key.endswith(".g"):
        return key[:-2] + ".gamma"    # later releases call the LayerNorm gain `g` and drop its zero bias
    return key


def load_state(prior: DiffusionPrior, state: dict[str, torch.Tensor], model: str) -> DiffusionPrior:
    """Load a dalle2_pytorch DiffusionPrior state dict; a missing or misfitting weight is an error."""
    ours = {}
    for k, v in state.items():
        name = _our_key(k)
        if name is not None:
            ours[name] = v
    own = prior.state_dict()
    for name, value in own.items():
        if name.endswith(".beta") and name not in ours:
            ours[name] = value       # the zero bias is a buffer that later releases do not save
    missing = [k for k in own if k not in ours and not k.endswith("rotary_emb.freqs")]
    unexpected = [k for k in ours if k not in own]
    wrong = [k for k in own if k in ours and ours[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        first = (missing or unexpected or wrong)[0]
        raise WeightsUnavailableError(model, f"the checkpoint does not fit the prior network: {len(missing)} "
                                             f"missing, {len(unexpected)} unexpected, {len(wrong)} misshapen "
                                             f"weights, e.g. {first!r}")
    prior.load_state_dict(ours, strict=False)
    return prior


@dataclass(frozen=True)
class PriorSpec:
    label: str
    config: PriorConfig
    load: Callable[[PriorConfig], DiffusionPrior]    # config -> prior with its weights (eval, frozen)


HUB_REPO, HUB_FILE = "zenglishuci/conditioned-prior", "vit-l-14/prior_aes_finetune.pth"
LAION_LABEL = f"LAION diffusion prior for ViT-L/14 ({HUB_REPO}/{HUB_FILE})"


def _load_laion(cfg: PriorConfig) -> DiffusionPrior:
    try:
        from huggingface_hub import hf_hub_download
        path = hf_hub_download(HUB_REPO, HUB_FILE)
    except Exception as e:   # offline, hub unreachable, file gone: one typed error
        raise WeightsUnavailableError(LAION_LABEL, _hub_reason(e)) from e
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        state = checkpoint["ema_model"]
    except Exception as e:
        raise WeightsUnavailableError(LAION_LABEL, f"the checkpoint could not be read ({type(e).__name__})") from e
    return load_state(DiffusionPrior(cfg), state, LAION_LABEL)


def _hub_reason(e: Exception) -> str:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return "it is not in the local cache and HF_HUB_OFFLINE is set"
    if isinstance(e, (OSError, ConnectionError)) or "LocalEntryNotFound" in type(e).__name__:
        return "it is not in the local cache and the Hugging Face hub could not be reached"
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:160]}"


def _load_bundled(cfg: PriorConfig) -> DiffusionPrior:
    from safetensors.torch import load_file
    path = ASSET_DIR / "prior.safetensors"
    if not path.exists():
        raise WeightsUnavailableError("toy-shapes prior", f"the bundled file {path.name} is missing")
    return load_state(DiffusionPrior(cfg), load_file(str(path)), "toy-shapes prior")


def _bundled_config() -> PriorConfig:
    path = ASSET_DIR / "prior.json"
    return PriorConfig.from_json(path) if path.exists() else TOY_PRIOR


# The bundled toy prior's architecture (the training script writes it beside the weights).
TOY_PRIOR = PriorConfig(dim=64, depth=4, dim_head=32, heads=4, ff_mult=4, normformer=True, timesteps=1000,
                        text_positions=0)

PRIORS: Registry[PriorSpec] = Registry("diffusion prior", {
    "ViT-L-14-quickgelu/openai": PriorSpec(LAION_LABEL, LAION_VIT_L_14, _load_laion),
    TOY_BACKBONE: PriorSpec("toy-shapes prior (bundled, trained by app.tools.train_prior)", _bundled_config(),
                            _load_bundled),
})

# Loaded priors by (backbone, device). A prior lives as long as its backbone: when the backbone
# cache (LIMITS.max_loaded_backbones) drops the last copy of a backbone, its priors go too.
_CACHE: dict[tuple[str, str], DiffusionPrior] = {}
_LOCK = threading.Lock()


def _forget(backbone: str) -> None:
    with _LOCK:
        for key in [k for k in _CACHE if k[0] == backbone]:
            del _CACHE[key]


models.ON_UNLOAD.append(_forget)


def has_prior(backbone: str | None) -> bool:
    return backbone in PRIORS


def load_prior(backbone: str | None, device: torch.device | str = "cpu") -> DiffusionPrior:
    """The diffusion prior trained on `backbone`'s image embeddings (loaded once per device).

    Raises UnsupportedError for a backbone without a prior, WeightsUnavailableError when its
    weights cannot be fetched.
    """
    if backbone not in PRIORS:
        raise UnsupportedError(f"CLIPure-Diff needs a diffusion prior trained on the backbone's embeddings; "
                               f"only {' and '.join(repr(k) for k in PRIORS)} have one, not {backbone!r}.")
    key = (backbone, str(device))
    with _LOCK:
        if key not in _CACHE:
            spec = PRIORS[backbone]
            prior = spec.load(spec.config).to(device).eval()
            for p in prior.parameters():
                p.requires_grad_(False)
            _CACHE[key] = prior
        return _CACHE[key]
