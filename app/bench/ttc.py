"""What TTC costs against bare CLIP: encoder passes per image, and the time of one defended
answer and of one attacker's query through it (python -m app.bench --ttc, or alone:
python -m app.bench.ttc --json).

Passes are counted, not assumed: a wrapper counts the encoder's forward calls, and the
counterattack's gradients are counted where torch.autograd.grad is called.
"""
from __future__ import annotations

import argparse
from contextlib import contextmanager
from unittest import mock

import torch
import torch.nn.functional as F

from app.bench import median_ms, report
from app.defences.defence import Defence
from app.clip.models import load_backbone
from app.views.presets import CLASS_PRESETS
from app.defences import PurifyConfig, TTCConfig, seeded
from app.defences.ttc import counterattack
from app.attacks.threat_models import attacked_model
from app.clip.zeroshot import TEXT_CACHE, build_classifier

TTC = PurifyConfig(defence="ttc")


@contextmanager
def counted(classifier):
    """Count the classifier's encoder forwards and the autograd.grad calls made meanwhile."""
    calls = {"forwards": 0, "grads": 0}
    encode, grad = classifier.encode, torch.autograd.grad

    def encode_counted(x):
        calls["forwards"] += 1
        return encode(x)

    def grad_counted(*args, **kwargs):
        calls["grads"] += 1
        return grad(*args, **kwargs)
    with mock.patch.object(classifier, "encode", encode_counted), mock.patch("torch.autograd.grad", grad_counted):
        yield calls


def ttc_figures(backbone_name: str = "ViT-B-32-random", batch: int = 8, repeat: int = 5) -> dict:
    bb = load_backbone(backbone_name)
    names = [n.strip() for n in CLASS_PRESETS["CIFAR-10"].split(",")]
    clf = build_classifier(bb, names, "single")
    defence = Defence(clf, TEXT_CACHE.blank_embedding(bb, "single"), TTC, backbone_name)
    x = torch.rand(batch, 3, bb.image_size, bb.image_size, generator=torch.Generator().manual_seed(0)).to(bb.device)
    y = torch.zeros(batch, dtype=torch.long, device=bb.device)

    def defended():   # TTC's answer: the counterattack, then CLIP on x_ttc
        done = counterattack(x, clf.encode, TTCConfig(), seeded(TTC, bb.device), "none")
        with torch.no_grad():
            return clf(done.x_ttc)

    def query(threat_model: str):
        model = attacked_model(threat_model, defence)

        def step():   # one attacker's query: forward and backward to the pixels
            xx = x.clone().requires_grad_(True)
            torch.autograd.grad(F.cross_entropy(model(xx), y), xx)
        return step
    with counted(clf) as calls:
        defended()
    passes = dict(calls)
    with torch.no_grad():
        bare_ms = median_ms(lambda: clf(x), repeat)
    ttc_ms = median_ms(defended, repeat, warmup=1)
    figures = {"ttc_backbone": backbone_name, "ttc_batch": batch,
               "ttc_encoder_forwards_per_answer": passes["forwards"], "ttc_gradients_per_answer": passes["grads"],
               "ttc_answer_ms_per_image": round(ttc_ms / batch, 2),
               "bare_answer_ms_per_image": round(bare_ms / batch, 2),
               "ttc_answer_ratio": round(ttc_ms / bare_ms, 2)}
    bare_query = query("undefended")
    bare_q_ms = median_ms(bare_query, repeat, warmup=1)
    for tm in ("adaptive", "bpda"):
        q_ms = median_ms(query(tm), repeat, warmup=1)
        figures[f"ttc_{tm}_query_ratio"] = round(q_ms / bare_q_ms, 2)   # one PGD step through TTC vs bare CLIP
    figures["bare_query_ms_per_image"] = round(bare_q_ms / batch, 2)
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--backbone", default="ViT-B-32-random")
    args = ap.parse_args()
    report(ttc_figures(args.backbone), args.json)


if __name__ == "__main__":
    main()
