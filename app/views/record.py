"""The record of what ran: the app's version and commit, the packages, the device, the input's hash.

Every exported JSON and API result carries it (`run` in export.to_dict), so that a figure can be
traced to the code, the libraries and the machine that produced it.
"""
from __future__ import annotations

import functools
import hashlib
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
# The packages whose versions change the numbers (or how they are served).
PACKAGES = ("torch", "torchvision", "open_clip_torch", "torchattacks", "numpy", "pillow", "gradio")


def app_version() -> str:
    from app.common.version import __version__
    return __version__


@functools.lru_cache(maxsize=1)
def commit() -> str | None:
    """The checkout's git commit (with '-dirty' when files differ from it), or None outside a checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return head.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


@functools.lru_cache(maxsize=1)
def packages() -> dict[str, str | None]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def device_text(device: str) -> str:
    """'cpu', or 'cuda:0 (NVIDIA H200 MIG 3g.71gb)' with the GPU's name."""
    d = torch.device(device)
    if d.type == "cuda" and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(d)})"
    return device


def pixels_sha256(x: torch.Tensor) -> str:
    """SHA-256 of the evaluated image: (1, 3, S, S) in [0,1] as 8-bit RGB bytes, row-major (the
    pixels of the exported clean.png)."""
    arr = torch.round(x.detach().float().cpu().reshape(3, *x.shape[-2:]).clamp(0, 1) * 255).to(torch.uint8)
    return hashlib.sha256(arr.permute(1, 2, 0).contiguous().numpy().tobytes()).hexdigest()


def run_record(device: str, precision: str, x: torch.Tensor, input_sha256: str | None) -> dict:
    return {"app_version": app_version(), "commit": commit(), "packages": packages(),
            "device": device_text(device), "precision": precision,
            "input_sha256": input_sha256, "pixels_sha256": pixels_sha256(x)}
