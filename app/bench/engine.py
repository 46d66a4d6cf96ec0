"""Engine benchmark (not a test): prints figures, the last line one JSON object.

    python -m app.bench --json

Uses random weights of the real ViT-B/32 architecture ("ViT-B-32-random"), since timing needs
no download. All ratios come from one run on one machine; compare them, not absolute times.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from app.attacks import AttackConfig, run_attack
from app.bench import median_ms, report
from app.clip.models import TOY_BACKBONE, load_backbone
from app.views.presets import CLASS_PRESETS
from app.defences import clipure_cos
from app.clip.zeroshot import TextEmbeddingCache, build_classifier


def official_way(z: torch.Tensor, blank: torch.Tensor, steps: int = 10, eta: float = 30.0) -> torch.Tensor:
    """Purification as the official code runs it (tests/test_official.py re-types it): an autograd
    gradient of -cos at every step, without create_graph; L2 update, gamma 0, one batch norm."""
    with torch.enable_grad():
        z = z.detach().clone().requires_grad_(True)
        b = blank[None].expand_as(z)
        for _ in range(steps):
            r = z.norm(dim=1, keepdim=True)
            u = z / r
            loss = -F.cosine_similarity(z, b, dim=1)
            grad = torch.autograd.grad(loss, z, torch.ones_like(loss), retain_graph=True)[0]
            g_u = r * grad
            u = u - eta * g_u / g_u.norm()
            z = r * u / u.norm(dim=1, keepdim=True)
    return z.detach()


def eval_overhead_ratio(model: str = TOY_BACKBONE, n: int = 32, batch_size: int = 16, repeat: int = 2) -> dict:
    """The batch evaluator's time over the bare attack-plus-purification time for the same work
    (goal <= 1.10), and its images per second. Work: defences none and clipure-cos (eta 30), PGD-5
    at 4/255 under the undefended and adaptive threat models, n toy images at the model's size."""
    import tempfile

    from app.evaluate import EvalConfig, run_evaluation
    from app.evaluate.data import open_dataset
    from app.evaluate.runner import BARE, Evaluator, batches
    from app.flows.scoring import encode, score_steps
    from app.attacks.threat_models import attacked_model

    cfg = EvalConfig(data="toy", n=n, backbone=model, template_set="single", batch_size=batch_size,
                     defences=("none", "clipure-cos"), attacks=("PGD",), eps=(4.0,), steps=5,
                     threat_models=("undefended", "adaptive"))
    data = open_dataset("toy", n)
    ev = Evaluator(cfg, data)
    pcfg = cfg.settings()[1].purify

    def bare() -> float:
        t = time.perf_counter()
        for r in batches(n, batch_size):
            x, y = data.load(r, ev.backbone)
            z = encode(ev.classifier, x)
            for p in (BARE, pcfg):
                list(score_steps(ev.defence(p), x, z))
            for tm in ("undefended", "adaptive"):
                model_ = attacked_model(tm, ev.defence(pcfg))
                acfg = AttackConfig(attack="PGD", eps=4.0, steps=5, threat_model=tm)
                z_adv = encode(ev.classifier, run_attack(acfg, model_, x, ev.classnames, y).x_adv)
                for p in ((BARE, pcfg) if tm == "undefended" else (pcfg,)):
                    list(score_steps(ev.defence(p), None, z_adv))
        return time.perf_counter() - t

    def harness() -> tuple[float, dict]:
        with tempfile.TemporaryDirectory() as out:
            stats = run_evaluation(cfg, out, progress=False, reports=False)
        return stats["loop_seconds"], stats

    bare()                                           # warm-up: first-call costs count for neither
    pairs = [(harness(), bare()) for _ in range(repeat)]
    h = statistics.median(p[0][0] for p in pairs)
    b = statistics.median(p[1] for p in pairs)
    return {"eval_overhead_ratio": round(h / b, 3), "eval_images_per_s": round(n / h, 2),
            "eval_work": f"{model}, {n} images, batch {batch_size}, 3 settings (none + clipure-cos eta 30; "
                         f"PGD-5 4/255; undefended, adaptive)"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="end with one JSON line")
    ap.add_argument("--backbone", "--model", dest="backbone", default="ViT-B-32-random")
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--no-eval", action="store_true", help="skip the batch evaluator's overhead figure")
    ap.add_argument("--diff", action="store_true", help="also time CLIPure-Diff on ViT-L-14 (app.bench.diff)")
    ap.add_argument("--ttc", action="store_true", help="also TTC's passes and time against bare CLIP (app.bench.ttc)")
    args = ap.parse_args()

    backbone = load_backbone(args.backbone)
    names = [n.strip() for n in CLASS_PRESETS["CIFAR-10"].split(",")]
    cache = TextEmbeddingCache()
    t = time.perf_counter()
    class_emb = cache.class_embeddings(backbone, names, "ensemble")        # cold: 10 x 80 prompts
    text_cold_ms = (time.perf_counter() - t) * 1e3
    text_warm_ms = median_ms(lambda: cache.class_embeddings(backbone, names, "ensemble"), 50)
    clf = build_classifier(backbone, names, "ensemble", cache)
    blank = cache.blank_embedding(backbone, "ensemble")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, backbone.image_size, backbone.image_size, generator=g).to(backbone.device)

    with torch.no_grad():
        encoder_ms = median_ms(lambda: clf.encode(x), args.repeat)
        z = F.normalize(clf.encode(x), dim=-1)                              # (1, D)
    purify_ms = median_ms(lambda: clipure_cos(z, blank), 200, warmup=20)   # official defaults, 10 steps
    official_ms = median_ms(lambda: official_way(z, blank), 200, warmup=20)

    def raw_pgd_budget():
        for _ in range(10):
            xx = x.clone().requires_grad_(True)
            loss = F.cross_entropy(clf(xx), torch.tensor([0], device=x.device))
            torch.autograd.grad(loss, xx)
    raw_ms = median_ms(raw_pgd_budget, max(3, args.repeat // 3), warmup=1)
    cfg = AttackConfig(attack="PGD", eps=4, steps=10)
    labels = torch.zeros(1, dtype=torch.long, device=x.device)
    pgd_runs = [run_attack(cfg, clf, x, names, labels) for _ in range(max(3, args.repeat // 3) + 1)][1:]
    pgd_ms = statistics.median(r.seconds for r in pgd_runs) * 1e3

    figures = {
        "machine": f"{platform.machine()} {torch.get_num_threads()} threads, torch {torch.__version__}, "
                   f"device {backbone.device}",
        "backbone": args.backbone,
        "embedding_dim": int(class_emb.shape[1]),
        "encoder_forward_ms": round(encoder_ms, 2),
        "purify_ms": round(purify_ms, 4),
        "purify_overhead_ratio": round(purify_ms / encoder_ms, 5),
        "official_purify_ms": round(official_ms, 4),
        "purify_speedup_vs_official": round(official_ms / purify_ms, 2),
        "pgd10_ms": round(pgd_ms, 1),
        "raw_fwd_bwd_ms": round(raw_ms, 1),
        "attack_overhead_ratio": round(pgd_ms / raw_ms, 3),
        "text_cold_ms": round(text_cold_ms, 1),
        "text_cached_ms": round(text_warm_ms, 4),
        "text_cache_speedup": round(text_cold_ms / text_warm_ms, 1),
    }
    if not args.no_eval:
        figures.update(eval_overhead_ratio())
    if args.diff:
        from app.bench.diff import diff_figures
        figures.update(diff_figures())
    if args.ttc:
        from app.bench.ttc import ttc_figures
        figures.update(ttc_figures(args.backbone))
    report(figures, args.json)


if __name__ == "__main__":
    main()
