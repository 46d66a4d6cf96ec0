"""Train the bundled toy-shapes CLIP from scratch on procedurally generated shapes.

    python -m app.tools.train_toy                   # the shipped run (fixed seed)
    python -m app.tools.train_toy --steps 3 --out /tmp/x   # a smoke run, as in the tests

The model is a small open_clip CLIP built from assets/toy-shapes/toy-shapes.json and trained
with open_clip's standard contrastive loss (ClipLoss). Weights are saved in fp16 safetensors,
so the 49,408-row token table (49,408 x 64) fits the 10 MB asset limit.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import time
from pathlib import Path

import open_clip
import torch
from open_clip.loss import ClipLoss
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES
from safetensors.torch import save_file

from app.toy import shapes

ASSET_DIR = Path(__file__).resolve().parents[2] / "assets" / "toy-shapes"
CONFIG = ASSET_DIR / "toy-shapes.json"
ARCH = "toy-shapes"


def build_model() -> torch.nn.Module:
    open_clip.add_model_config(CONFIG)
    return open_clip.create_model(ARCH, pretrained=None)


def train(steps: int, batch_size: int, lr: float, seed: int, out: Path, log_every: int = 50) -> dict:
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = build_model()
    model.train()
    tokenizer = open_clip.get_tokenizer(ARCH)
    mean = torch.tensor(model.visual.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(model.visual.image_std).view(1, 3, 1, 1)
    size = model.visual.image_size[0] if isinstance(model.visual.image_size, tuple) else model.visual.image_size
    # Half the captions use the short templates, half the 80 OpenAI ones, so both template
    # sets of the app ("single", "ensemble") work with this model.
    templates = [t.format for t in shapes.CAPTION_TEMPLATES] + list(OPENAI_IMAGENET_TEMPLATES)
    weights = [len(OPENAI_IMAGENET_TEMPLATES) / len(shapes.CAPTION_TEMPLATES)] * len(shapes.CAPTION_TEMPLATES) \
        + [1.0] * len(OPENAI_IMAGENET_TEMPLATES)

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.98))
    warmup = max(1, min(200, steps // 10))

    def lr_factor(s: int) -> float:   # linear warm-up, then cosine decay to 0
        if s < warmup:
            return (s + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, steps - warmup)))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    loss_fn = ClipLoss()
    t0, log = time.time(), []
    for step in range(steps):
        batch = shapes.sample(batch_size, seed=seed * 1_000_003 + step, size=size)
        caps = shapes.captions(batch, rng, templates, weights)
        text = tokenizer(caps)
        image_features, text_features, logit_scale = model((batch.images - mean) / std, text)[:3]
        loss = loss_fn(image_features, text_features, logit_scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % log_every == 0 or step == steps - 1:
            log.append({"step": step, "loss": round(loss.item(), 4), "seconds": round(time.time() - t0, 1)})
            print(json.dumps(log[-1]), flush=True)

    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "toy-shapes.safetensors"), metadata={"seed": str(seed), "steps": str(steps)})
    if out.resolve() != ASSET_DIR.resolve():
        shutil.copy(CONFIG, out / CONFIG.name)
    summary = {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed,
               "train_seconds": round(time.time() - t0, 1), "final_loss": log[-1]["loss"]}
    (out / "train_log.json").write_text(json.dumps({"summary": summary, "log": log}, indent=1))
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1600)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ASSET_DIR)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(json.dumps(train(args.steps, args.batch_size, args.lr, args.seed, args.out)))


if __name__ == "__main__":
    main()
