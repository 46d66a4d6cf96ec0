"""Named evaluation presets, defined once (the CLI, the UI and the API use them).

"paper": the official CLIPure-Cos ImageNet evaluation (docs/official-code.md, "The
paper's attack"): AutoAttack version='custom' with APGD-CE (5 restarts) then APGD-T (9 target classes),
100 iterations, L-inf 4/255, batch 2, fp16, 80-template ensemble, T=10 eta=30 gamma=0 with the
batch-coupled gradient norm, attacked through the official backward, ViT-L-14 OpenAI, 1,000
ImageNet validation images.

What torchattacks cannot match in that protocol:
- the official fork's `alpha=2` argument has no torchattacks counterpart (APGD sets its own
  step size, 2*eps at the start, halved on its checkpoints);
- AutoAttack's seed is unset there, so APGD reseeds from the clock; here every batch draws
  from (seed, image ids), so runs repeat;
- torchattacks' APGD-T draws each target class's run with the same n_restarts loop as the
  reference implementation, but its internal RNG use differs, so per-image results are not
  bit-identical to the `autoattack` package even with the same seed.
"""
from __future__ import annotations

from dataclasses import dataclass

from app.common.registry import Registry


@dataclass(frozen=True)
class Protocol:
    description: str
    values: dict          # EvalConfig fields; flags given on the command line override them
    unmatched: tuple[str, ...] = ()


PROTOCOLS: Registry[Protocol] = Registry("protocol", {
    "paper": Protocol(
        "CLIPure-Cos on ImageNet as the official code evaluates it (arXiv 2502.18176; CLIP_eval/CLIPure_Cos.py)",
        dict(backbone="ViT-L-14-quickgelu/openai", precision="fp16", template_set="ensemble", batch_size=2, n=1000,
             classnames="imagenet", defences=("clipure-cos",), purify_step_sizes=(30.0,), purify_steps=10, momentum=0.0,
             norm="l2", grad_scope="batch", attacks=("AutoAttack-custom",), eps=(4.0,), steps=100,
             threat_models=("official",), protocol="paper"),
        unmatched=(
            "the official fork's AutoAttack alpha=2 has no torchattacks counterpart (APGD picks its own step size)",
            "the official AutoAttack seed is unset (clock-seeded, runs do not repeat); here seeds come from "
            "(seed, image ids)",
            "torchattacks' APGD/APGD-T use the RNG differently from the autoattack package, so single images "
            "can differ at the same seed",
            "which 1,000 validation images the paper used is not stated; here the first 1,000 of a fixed "
            "shuffle (seed 0) of the folder",
        )),
})
