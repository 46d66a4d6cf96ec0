"""CLIPure-Diff speed (not a test): 10 purification steps at batch 1 on CPU against one image-encoder forward.

    python -m app.bench.diff --json        # or: python -m app.bench --json --diff

Random weights of the real ViT-L-14 image encoder and of the real 24-layer, dim-768 prior network
(the LAION prior's architecture), since timing needs no download. Goal: diff_purify_ratio <= 0.3.

Also a floor, measured rather than assumed: at batch 1 the prior runs three tokens, so each of a
step's two passes (the forward, and the backward for the input's gradient) is a matrix-vector
product per weight matrix and must read every weight once. `prior_sweep_ms` times one such read
(a sum over every parameter); 2 T sweeps is the least any exact fp32 implementation can cost on
this machine, whatever its kernels.
"""
from __future__ import annotations

import argparse
import platform

import torch
import torch.nn.functional as F

from app.bench import median_ms, report
from app.clip.models import load_backbone
from app.defences.diff import clipure_diff_iter
from app.defences.prior import LAION_VIT_L_14, DiffusionPrior
from app.clip.zeroshot import TextEmbeddingCache, build_classifier

STEPS = 10


def diff_figures(repeat: int = 3) -> dict:
    backbone = load_backbone("ViT-L-14-quickgelu/openai", device="cpu", precision="fp32", pretrained=False)
    clf = build_classifier(backbone, ["a", "b"], "single", TextEmbeddingCache())
    x = torch.rand(1, 3, backbone.image_size, backbone.image_size, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    prior = DiffusionPrior(LAION_VIT_L_14).eval()
    for p in prior.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        encoder_ms = median_ms(lambda: clf.encode(x), repeat, warmup=1)
        z = F.normalize(clf.encode(x), dim=-1)                          # (1, 768)

    def diff10():   # paper defaults: T = 10, eta = 30; as purify() runs it (the loss at z_T is not shown)
        for _ in clipure_diff_iter(z, prior, steps=STEPS, generator=torch.Generator().manual_seed(0),
                                   measure_last=False):
            pass
    diff_ms = median_ms(diff10, repeat, warmup=1)

    weights = [p.detach() for p in prior.parameters()]
    with torch.no_grad():
        sweep_ms = median_ms(lambda: [w.sum() for w in weights], repeat, warmup=1)
    floor_ms = 2 * STEPS * sweep_ms
    return {"diff_machine": f"{platform.machine()} {torch.get_num_threads()} threads, torch {torch.__version__}, cpu",
            "diff_model": "ViT-L-14 + LAION prior architecture (24 x 768), random weights, fp32, batch 1",
            "vit_l14_encoder_ms": round(encoder_ms, 1),
            "diff_purify_ms": round(diff_ms, 1),
            "diff_purify_ratio": round(diff_ms / encoder_ms, 3),
            "prior_weight_mb": round(sum(w.numel() * w.element_size() for w in weights) / 2**20),
            "prior_sweep_ms": round(sweep_ms, 1),
            "diff_floor_ms": round(floor_ms, 1),
            "diff_floor_ratio": round(floor_ms / encoder_ms, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="end with one JSON line")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    figures = diff_figures(args.repeat)
    report(figures, args.json)


if __name__ == "__main__":
    main()
