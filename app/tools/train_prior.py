"""Train the bundled toy-shapes diffusion prior on the toy CLIP's image embeddings.

    python -m app.tools.train_prior                              # the shipped run (fixed seed)
    python -m app.tools.train_prior --steps 3 --pool 256 --out /tmp/x   # a smoke run, as in the tests

The prior is the same class as the LAION prior of CLIPure-Diff (app.defences.prior), only
smaller (PriorConfig TOY_PRIOR), trained the DALL-E 2 way: x0 prediction, l2 loss, cosine
schedule, uniform timesteps, on unit embeddings scaled by sqrt(D). There is no text condition:
CLIPure-Diff uses the prior unconditionally. The embeddings come from procedurally generated
shapes (app.toy.shapes) encoded by the bundled toy CLIP, so the run needs no download.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from app.clip.models import TOY_BACKBONE, load_backbone
from app.defences.prior import DiffusionPrior
from app.defences.priors import ASSET_DIR, TOY_PRIOR
from app.toy import shapes
from app.clip.zeroshot import build_classifier

HELD_OUT_SEED = 987_654    # image seeds of the held-out embeddings, apart from the training pool's


@torch.no_grad()
def embed(n: int, seed: int, chunk: int = 512) -> torch.Tensor:
    """(n, D) unit image embeddings of n toy-shapes images drawn from seed."""
    backbone = load_backbone(TOY_BACKBONE, device="cpu", precision="fp32")
    clf = build_classifier(backbone, list(shapes.CLASSNAMES), "single")
    out = [clf.encode(shapes.sample(min(chunk, n - i), seed=seed + i, size=backbone.image_size).images)
           for i in range(0, n, chunk)]
    return F.normalize(torch.cat(out), dim=-1)


@torch.no_grad()
def high_t_loss(prior: DiffusionPrior, z: torch.Tensor, seed: int) -> float:
    """Mean loss at t in [900, 999], the range CLIPure-Diff uses, with fixed draws."""
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(900, 1000, (z.shape[0],), generator=g)
    noise = torch.randn(z.shape, generator=g)
    return prior.p_losses(z * prior.image_embed_scale, t, noise).mean().item()


def learned_state(prior: DiffusionPrior) -> dict[str, torch.Tensor]:
    """The weights worth saving: parameters only (zero LayerNorm biases and rotary frequencies are fixed)."""
    return {k: v.detach().contiguous().clone() for k, v in prior.named_parameters()}


def train(steps: int, batch_size: int, lr: float, seed: int, pool: int, out: Path, log_every: int = 100) -> dict:
    t0, cpu0 = time.time(), time.process_time()
    z_train = embed(pool, seed=seed * 1_000_003)
    z_held = embed(min(1024, pool), seed=HELD_OUT_SEED)
    z_random = F.normalize(torch.randn(z_held.shape, generator=torch.Generator().manual_seed(seed)), dim=-1)
    embed_seconds = round(time.time() - t0, 1)

    torch.manual_seed(seed)
    prior = DiffusionPrior(TOY_PRIOR)
    prior.train()
    opt = torch.optim.AdamW(prior.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.01)
    warmup = max(1, min(200, steps // 10))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / warmup if s < warmup else
                                              0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, steps - warmup))))
    g = torch.Generator().manual_seed(seed)
    log = []
    for step in range(steps):
        idx = torch.randint(pool, (batch_size,), generator=g)
        t = torch.randint(TOY_PRIOR.timesteps, (batch_size,), generator=g)
        noise = torch.randn(batch_size, TOY_PRIOR.dim, generator=g)
        loss = prior.p_losses(z_train[idx] * prior.image_embed_scale, t, noise).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % log_every == 0 or step == steps - 1:
            prior.eval()
            log.append({"step": step, "loss": round(loss.item(), 4),
                        "held_out_t900": round(high_t_loss(prior, z_held, 1), 4),
                        "random_t900": round(high_t_loss(prior, z_random, 1), 4),
                        "seconds": round(time.time() - t0, 1)})
            prior.train()
            print(json.dumps(log[-1]), flush=True)

    out.mkdir(parents=True, exist_ok=True)
    save_file(learned_state(prior), str(out / "prior.safetensors"), metadata={"seed": str(seed), "steps": str(steps)})
    (out / "prior.json").write_text(TOY_PRIOR.to_json() + "\n")
    summary = {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "pool": pool,
               "embed_seconds": embed_seconds, "train_seconds": round(time.time() - t0, 1),
               "cpu_seconds": round(time.process_time() - cpu0, 1),   # all threads; wall time depends on load
               "threads": torch.get_num_threads(), "final": log[-1]}
    (out / "prior_train_log.json").write_text(json.dumps({"summary": summary, "log": log}, indent=1) + "\n")
    return summary


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pool", type=int, default=4096, help="training embeddings, encoded once")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--log-every", type=int, default=100)
    ap.add_argument("--out", type=Path, default=ASSET_DIR)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(json.dumps(train(args.steps, args.batch_size, args.lr, args.seed, args.pool, args.out, args.log_every)))


if __name__ == "__main__":
    main()
