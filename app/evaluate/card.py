"""card.json, the evaluation card: what ran, where, with which code, and how fast."""
from __future__ import annotations

import json
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import torch

from app.evaluate.config import EvalConfig

PACKAGES = ("torch", "torchvision", "open_clip_torch", "torchattacks", "numpy", "matplotlib", "tqdm")
ROOT = Path(__file__).resolve().parents[2]


def versions() -> dict:
    out = {"python": sys.version.split()[0]}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = None
    return out


def git_commit() -> dict:
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    commit = git("rev-parse", "HEAD") or None
    return {"commit": commit, "dirty": bool(git("status", "--porcelain", "--untracked-files=no")) if commit else None}


def device_info(device: torch.device) -> dict:
    d = {"device": str(device), "machine": platform.machine(), "platform": platform.platform(),
         "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        d["gpu"] = torch.cuda.get_device_name(device)
    return d


def write(out: Path, cfg: EvalConfig, stats: dict, evaluator, seeds: list[int]) -> dict:
    bb = evaluator.backbone
    card = {
        "config": cfg.to_dict(), "fingerprint": cfg.fingerprint(),
        "settings": [{"setting": s.key, "purify": None if s.purify is None else s.purify.to_dict()}
                     for s in evaluator.settings],
        "seeds": {"seed": cfg.seed, "rule": "batch k attacks and purifies with sha256(f'{seed}:' + "
                                            "','.join(image ids of batch k)) mod 2^31-1",
                  "batch_seeds": seeds},
        "backbone": {"name": bb.name, "precision": bb.precision, "pretrained": bb.pretrained,
                     "image_size": bb.image_size, "meaningless_predictions": bb.spec.meaningless},
        "classes": len(evaluator.classnames),
        "versions": versions(), "git": git_commit(), "device": device_info(bb.device),
        "run": stats,
    }
    (out / "card.json").write_text(json.dumps(card, indent=1) + "\n")
    return card
