"""Write tests/fixtures/dalle2_prior_reference.safetensors: dalle2_pytorch's own prior loss on a tiny net.

Runs in a virtual environment with dalle2_pytorch==0.15.4 (official_prior.py says which release
and how to make one):

    /somewhere/d2/bin/python scripts/make_prior_reference.py

The network is the official DiffusionPriorNetwork with small sizes; DiffusionPrior gets clip=None,
cond_drop_prob=0.1 at construction and 1.0 afterwards (as the official code sets it; 0.15.4's
p_losses reads `self.cond_drop_prob` on every call), eval mode. The noise is passed to p_losses
explicitly (its `noise=` argument), so nothing is monkeypatched. 0.15.4's p_losses returns the mean
over batch and dimensions (F.mse_loss), so the per-sample losses come from one call per sample.
"""
from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import dalle2_pytorch
import torch
import torch.nn.functional as F
from dalle2_pytorch import DiffusionPrior
from official_prior import official_prior
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "dalle2_prior_reference.safetensors"
DIM, TEXT_LEN, N = 32, 77, 4      # embedding width, text tokens (CLIP context), samples
# dim_head 48 > 32 so that rotary turns only part of each head, as with the real 64


def build() -> DiffusionPrior:
    torch.manual_seed(0)
    prior = official_prior(dim=DIM, depth=2, dim_head=48, heads=4, attn_dropout=5e-2, ff_dropout=5e-2)
    # null_kv, learned_query, time and rel-pos tables are already N(0, 1); move the LayerNorm gains
    # away from 1 too, so a dropped or misplaced gain shows (the bias `beta` is a fixed zero buffer)
    with torch.no_grad():
        for name, p in prior.named_parameters():
            if name.endswith(".gamma"):
                p.mul_(1 + 0.3 * torch.randn_like(p))
    prior.cond_drop_prob = 1.0
    return prior.eval()


def main() -> None:
    prior = build()
    g = torch.Generator().manual_seed(1)
    z = F.normalize(torch.randn(N, DIM, generator=g), dim=-1)
    x = z * prior.image_embed_scale                                     # (N, D) scaled embeddings
    times = torch.randint(900, 1000, (N,), generator=g)
    noise = torch.randn(N, DIM, generator=g)
    text_embed = F.normalize(torch.randn(N, DIM, generator=g), dim=-1)
    text_encodings = torch.randn(N, TEXT_LEN, DIM, generator=g)
    text_encodings[:, 9:] = 0.                                          # padding after the end token, as CLIP's
    cond = {"text_embed": text_embed, "text_encodings": text_encodings}

    x = x.requires_grad_()
    per_sample = torch.stack([prior.p_losses(x[i:i + 1], times[i:i + 1], {k: v[i:i + 1] for k, v in cond.items()},
                                             noise=noise[i:i + 1]) for i in range(N)])        # (N,)
    grad_sum, = torch.autograd.grad(per_sample.sum(), x)                                      # (N, D)
    batch_mean = prior.p_losses(x, times, cond, noise=noise)                                  # scalar, as official
    grad_batch_mean, = torch.autograd.grad(batch_mean, x)

    # clone: the rotary frequencies are one tensor shared by every layer, which safetensors refuses
    tensors = {f"state.{k}": v.detach().clone() for k, v in prior.state_dict().items()}
    tensors.update({"x": x.detach(), "times": times, "noise": noise, "text_embed": text_embed,
                    "text_encodings": text_encodings, "loss_per_sample": per_sample.detach(),
                    "grad_sum": grad_sum, "loss_batch_mean": batch_mean.detach().reshape(1),
                    "grad_batch_mean": grad_batch_mean})
    meta = {"dalle2_pytorch": dalle2_pytorch.__version__, "torch": torch.__version__,
            "rotary_embedding_torch": version("rotary-embedding-torch"),
            "config": "dim=32 depth=2 dim_head=48 heads=4 ff_mult=4 normformer=True timesteps=1000 text_len=77"}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(OUT), metadata=meta)
    print(OUT, f"{OUT.stat().st_size / 1024:.0f} KiB", meta)


if __name__ == "__main__":
    main()
