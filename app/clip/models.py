"""Registry of named CLIP backbones; loading, caching, device and dtype; image -> pixels.

A loaded Backbone always travels with its pixel transform (resize + centre crop to the model
resolution, values in [0,1]) and its normalisation constants, which live only here.
"""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import open_clip
import torch
from PIL import Image
from torchvision.transforms import Compose, Normalize

from app.common import limits
from app.common.errors import UnsupportedError, WeightsUnavailableError
from app.clip.precision import PRECISIONS, apply_precision, half_params, pick_precision
from app.common.registry import Registry

ROOT = Path(__file__).resolve().parents[2]
TOY_DIR = ROOT / "assets" / "toy-shapes"
# The bundled model's vocabulary is data shipped beside its weights (one class name a line).
TOY_CLASSNAMES = tuple((TOY_DIR / "classnames.txt").read_text().split("\n")[:-1])


@dataclass(frozen=True)
class BackboneSpec:
    arch: str                       # open_clip model name (or an hf-hub: name)
    pretrained: str | None          # open_clip pretrained tag or weights file; None = random / hub
    description: str
    source: str                     # "openai", "hf-hub", "random" or "bundled"
    config: Path | None = None      # custom open_clip config registered before loading
    vocabulary: tuple[str, ...] = ()  # class names the model knows (bundled model only)

    @property
    def meaningless(self) -> bool:
        """Random weights: predictions carry no meaning and are labelled so."""
        return self.source == "random"

    @property
    def needs_download(self) -> bool:
        return self.source in ("openai", "hf-hub")


BACKBONES: Registry[BackboneSpec] = Registry("backbone", {
    "ViT-B-32-quickgelu/openai": BackboneSpec(
        "ViT-B-32-quickgelu", "openai", "OpenAI CLIP ViT-B/32, the CPU default", "openai"),
    "ViT-B-16-quickgelu/openai": BackboneSpec(
        "ViT-B-16-quickgelu", "openai", "OpenAI CLIP ViT-B/16", "openai"),
    "ViT-L-14-quickgelu/openai": BackboneSpec(
        "ViT-L-14-quickgelu", "openai", "OpenAI CLIP ViT-L/14, the paper's backbone (GPU advised)", "openai"),
    "hf-hub:chs20/fare2-clip": BackboneSpec(
        "hf-hub:chs20/fare2-clip", None, "FARE adversarially fine-tuned ViT-L/14 (eps 2/255)", "hf-hub"),
    "hf-hub:chs20/tecoa4-clip": BackboneSpec(
        "hf-hub:chs20/tecoa4-clip", None, "TeCoA adversarially fine-tuned ViT-L/14 (eps 4/255)", "hf-hub"),
    "hf-hub:chs20/FARE4-ViT-B-32-laion2B-s34B-b79K": BackboneSpec(
        "hf-hub:chs20/FARE4-ViT-B-32-laion2B-s34B-b79K", None,
        "FARE adversarially fine-tuned ViT-B/32 LAION-2B (eps 4/255)", "hf-hub"),
    "toy-shapes": BackboneSpec(
        "toy-shapes", str(TOY_DIR / "toy-shapes.safetensors"),
        "small CLIP trained by this project on generated coloured shapes (works offline)", "bundled",
        config=TOY_DIR / "toy-shapes.json", vocabulary=TOY_CLASSNAMES),
    "ViT-B-32-random": BackboneSpec(
        "ViT-B-32-quickgelu", None, "ViT-B/32 architecture with random weights, for benchmarks; its predictions "
        "are MEANINGLESS", "random"),
    "tiny-random": BackboneSpec(
        "tiny-random", None, "tiny randomly initialised CLIP for tests; its predictions are MEANINGLESS",
        "random", config=Path(__file__).resolve().parent / "model_configs" / "tiny-random.json"),
})
# CLIPURE_BACKBONE picks the page's default; CLIPURE_MODEL is its older name, still read.
DEFAULT_BACKBONE = os.environ.get("CLIPURE_BACKBONE") or os.environ.get("CLIPURE_MODEL") or "ViT-B-32-quickgelu/openai"
TOY_BACKBONE = "toy-shapes"        # the bundled model's key
FALLBACK_BACKBONE = TOY_BACKBONE


def get_spec(name: str) -> BackboneSpec:
    return BACKBONES[name]


def pick_device(device: str | None = None) -> torch.device:
    """Explicit argument, else $CLIPURE_DEVICE, else cuda > mps > cpu."""
    device = device or os.environ.get("CLIPURE_DEVICE")
    if device:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@dataclass
class Backbone:
    """A loaded open_clip CLIP with everything needed to feed it pixels in [0,1]."""
    name: str
    spec: BackboneSpec
    model: torch.nn.Module          # open_clip CLIP, eval mode, parameters frozen
    tokenizer: object
    pixel_transform: Compose        # PIL -> (3, S, S) in [0,1]: resize + centre crop, no Normalize
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    image_size: int
    device: torch.device
    precision: str
    pretrained: bool = True
    context_length: int = 77
    text_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype images enter the encoder in (the official code's `image.half()`)."""
        return PRECISIONS[self.precision]

    @contextmanager
    def text_tower(self, full_precision: bool):
        """Hold the text encoder for one encoding. full_precision=True lifts its half-precision
        weights to fp32 for the duration, exactly (they are fp16 values): the official code
        encodes the class names before its mixed-precision cast and the blank after it."""
        with self.text_lock:
            lifted = []
            if full_precision and self.precision != "fp32":
                lifted = [(p, p.dtype) for n, p in half_params(self.model)
                          if not n.startswith("visual.") and p.dtype != torch.float32]
                for p, _ in lifted:
                    p.data = p.data.float()
            try:
                yield self.model
            finally:
                for p, dtype in lifted:
                    p.data = p.data.to(dtype)

    def to_pixels(self, image: Image.Image) -> torch.Tensor:
        """RGB PIL image -> (1, 3, S, S) float32 in [0,1] on the model's device."""
        from app.clip.images import (
            check_pixel_budget,  # refuses an image whose resize would not fit the budget
        )
        image = check_pixel_budget(image, self.image_size)
        return self.pixel_transform(image).unsqueeze(0).to(self.device, torch.float32)


# Loaded backbones, least recently used first. At most LIMITS.max_loaded_backbones stay
# (CLIPURE_MAX_LOADED_BACKBONES): each costs its weights in memory, about 0.6 GB for ViT-B/32
# and 1.7 GB for ViT-L/14 in fp32. Dropping one from here never breaks a request using it: the
# request holds its own reference, and the memory is freed when the last one ends. Requests run
# in several threads at once (the queue's heavy and light lanes, app/ui/layout.py): _CACHE changes
# only under _CACHE_LOCK (a read outside it is one atomic lookup or a snapshot), and a loaded model
# is only read (eval mode, frozen parameters), but for the text tower's fp16 lift (text_lock).
_CACHE: dict[tuple, Backbone] = {}
_CACHE_LOCK = threading.Lock()
# Keys loaded at the server's start (app/flows/warm.py): they stay loaded and do not count towards the
# limit, so a request for the default backbone never reloads it from disk (on ZeroGPU, a reload
# inside a GPU call would be repeated by every call that gets a fresh worker).
_PINNED: set[tuple] = set()

# Called with a backbone's name once no copy of it (any device or precision) is loaded any more,
# so what was loaded for it goes too (CLIPure-Diff's prior: about 1 GB beside ViT-L/14).
ON_UNLOAD: list[Callable[[str], None]] = []


def _remember(key: tuple, backbone: Backbone) -> list[str]:
    """Put backbone at the most recently used end; drop the least recently used beyond the limit.
    Call with _CACHE_LOCK held; returns the names no longer loaded at all, for _unloaded."""
    _CACHE.pop(key, None)
    _CACHE[key] = backbone
    dropped = []
    unpinned = [k for k in _CACHE if k not in _PINNED]
    while len(unpinned) > max(1, limits.LIMITS.max_loaded_backbones):
        dropped.append(_CACHE.pop(unpinned.pop(0)).name)
    return [n for n in dropped if n not in loaded_names()]


def _key(name: str | None, device: str | None, precision: str | None, pretrained: bool) -> tuple:
    name = name or DEFAULT_BACKBONE
    dev = pick_device(device)
    return (name, str(dev), pick_precision(dev, precision), pretrained and get_spec(name).source != "random")


def is_loaded(name: str | None = None, device: str | None = None, precision: str | None = None,
              pretrained: bool = True) -> bool:
    """Whether load_backbone with these arguments would be served from memory."""
    return _key(name, device, precision, pretrained) in _CACHE


def pin(backbone: Backbone) -> None:
    """Keep a loaded backbone for the life of the process (the server's warm start)."""
    with _CACHE_LOCK:
        key = (backbone.name, str(backbone.device), backbone.precision, backbone.pretrained)
        if _CACHE.get(key) is backbone:
            _PINNED.add(key)


def loaded_names() -> set[str]:
    return {key[0] for key in tuple(_CACHE)}   # a snapshot: another thread may load or drop one meanwhile


def _unloaded(names: list[str]) -> None:
    """Run the ON_UNLOAD hooks outside _CACHE_LOCK (a hook may take its own lock)."""
    for name in names:
        for hook in ON_UNLOAD:
            hook(name)


_LOAD_LOCKS: dict[tuple, threading.Lock] = {}


def _create(spec: BackboneSpec, name: str, device: torch.device, precision: str, pretrained: bool):
    if spec.config is not None:
        open_clip.add_model_config(spec.config)
    weights = spec.pretrained if pretrained else None
    if spec.source == "bundled" and pretrained and not Path(spec.pretrained).is_file():
        raise WeightsUnavailableError(name, f"the bundled file {Path(spec.pretrained).name} is missing")
    arch = spec.arch
    if not pretrained and arch.startswith("hf-hub:"):
        raise UnsupportedError(f"{name} has no local architecture config; random weights need an open_clip name.")
    # Random weights (tiny-random, benchmarks) come from a fixed seed, so every process builds
    # the same model; the global RNG is left as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        try:
            # require_pretrained: for an hf-hub: name whose config is cached but whose weights are not,
            # open_clip only logs a warning and returns random weights; this makes it an error.
            model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=weights, device=device,
                                                                         require_pretrained=pretrained)
            apply_precision(model, precision)
        except (OSError, RuntimeError, ValueError, ConnectionError, ImportError) as e:
            if not (pretrained and (spec.needs_download or spec.source == "bundled")):
                raise
            raise WeightsUnavailableError(name, _reason(e)) from e
    return model, preprocess


def _reason(e: Exception) -> str:
    """A short, human reason for a failed load (open_clip wraps hub failures in RuntimeError)."""
    text = str(e).strip()
    if any(w in text.lower() for w in ("download", "hf hub", "required pretrained weights")):
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
        return ("they are not in the local cache and HF_HUB_OFFLINE is set" if offline
                else "they are not in the local cache and the Hugging Face hub could not be reached")
    first = text.splitlines()[0] if text else ""
    return f"{type(e).__name__}: {first[:160]}"


def load_backbone(name: str | None = None, device: str | None = None, precision: str | None = None,
                  pretrained: bool = True) -> Backbone:
    """Load (once per process) and return a named backbone in eval mode with frozen parameters.

    pretrained=False builds the same architecture with random weights (benchmarks, smoke runs).
    Raises UnknownNameError for names outside BACKBONES and WeightsUnavailableError when the
    weights cannot be fetched.
    """
    key = _key(name, device, precision, pretrained)
    name, dev, prec, pretrained = key[0], pick_device(device), key[2], key[3]
    spec = get_spec(name)
    with _CACHE_LOCK:
        if key in _CACHE:
            _remember(key, _CACHE[key])       # a hit only reorders: nothing is dropped
            return _CACHE[key]
        key_lock = _LOAD_LOCKS.setdefault(key, threading.Lock())
    # One lock per backbone: a long download blocks only requests for that backbone.
    with key_lock:
        with _CACHE_LOCK:   # loaded by another request meanwhile (and not dropped since)
            if key in _CACHE:
                return _CACHE[key]
        model, preprocess = _create(spec, name, dev, prec, pretrained)
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        cfg = open_clip.get_model_preprocess_cfg(model)
        size = cfg["size"] if isinstance(cfg["size"], int) else cfg["size"][0]
        pixel_transform = Compose([t for t in preprocess.transforms if not isinstance(t, Normalize)])
        tokenizer = open_clip.get_tokenizer(spec.arch)
        backbone = Backbone(
            name=name, spec=spec, model=model, tokenizer=tokenizer, pixel_transform=pixel_transform,
            mean=tuple(cfg["mean"]), std=tuple(cfg["std"]), image_size=int(size), device=dev,
            precision=prec, pretrained=pretrained,
            context_length=int(getattr(tokenizer, "context_length", 77)))
        with _CACHE_LOCK:
            dropped = _remember(key, backbone)
        _unloaded(dropped)
        return backbone
