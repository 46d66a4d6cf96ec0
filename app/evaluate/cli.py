"""Command line of the batch evaluator.

    python -m app.evaluate --data toy --n 8 --seed 0 --backbone toy-shapes --defences clipure-cos \\
        --attacks PGD --eps 8 --steps 5 --threat-models undefended,adaptive --out DIR
    python -m app.evaluate --protocol paper --data /data/imagenet/val --out runs/paper
    torchrun --nproc_per_node 4 -m app.evaluate ...      # whole batches sharded over 4 processes

Grid flags (--defences, --purify-step-size, --attacks, --eps, --threat-models) take several values,
comma- or space-separated. Older spellings are kept as aliases: --model (--backbone), --templates
(--template-set), --eta (--purify-step-size), --update-norm (--norm). Flags given here override
the --protocol preset, which overrides the defaults.
A bad flag, a missing folder or an unknown name prints one sentence and exits with status 2. So
does a damaged line in results.jsonl, a full disk or an --out that cannot be written
(docs/evaluation.md, "Resume, cuts and faults").
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields

from app.common.errors import CLIPureError
from app.evaluate.config import EvalConfig, defence_names

GRID = {"defences": str, "purify_step_sizes": float, "attacks": str, "eps": float, "threat_models": str}


class _Parser(argparse.ArgumentParser):
    def error(self, message):          # one sentence, status 2 (argparse prints usage too)
        raise _Usage(message)


class _Usage(Exception):
    pass


def parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="python -m app.evaluate", description=__doc__,
                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="toy, cifar10, cifar100 or an ImageFolder path (default toy)")
    ap.add_argument("--root", help="local torchvision root holding CIFAR (nothing is downloaded)")
    ap.add_argument("--classnames", help="ImageFolder classes: FILE (one a line, sorted folder order), imagenet "
                                         "(synset folders) or cifar10; default: the folder names")
    ap.add_argument("--n", "--num-images", dest="n", type=int,
                    help="number of images (default: all; toy: 1000); under torchrun write --num-images, "
                         "since torchrun reads --n as an ambiguous option of its own")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--backbone", "--model", dest="backbone", help="backbone (app.clip.models.BACKBONES)")
    ap.add_argument("--precision", help="fp32, fp16 or bf16")
    ap.add_argument("--template-set", "--templates", dest="template_set", help="template set: single or ensemble")
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--defences", nargs="+", help=f"any of: {', '.join(defence_names())}")
    ap.add_argument("--purify-step-size", "--eta", dest="purify_step_sizes", nargs="+",
                    help="purification step sizes eta (a grid axis)")
    ap.add_argument("--purify-steps", type=int)
    ap.add_argument("--momentum", type=float)
    ap.add_argument("--norm", "--update-norm", dest="norm", help="the purification's update norm (l2)")
    ap.add_argument("--grad-scope", help="sample (default) or batch (the official coupling)")
    ap.add_argument("--attacks", nargs="+", help="attack names (app.attacks.ATTACKS), AutoAttack-custom or none")
    ap.add_argument("--eps", nargs="+", help="1/255 for L-inf attacks, pixel units for L2")
    ap.add_argument("--steps", type=int, help="attack iterations")
    ap.add_argument("--step-size", type=float)
    ap.add_argument("--threat-models", nargs="+")
    ap.add_argument("--eot", type=int, help="gradients averaged per attack step against a randomised defence "
                                            "(CLIPure-Diff, TTC) queried through the defence; 1 elsewhere (default: 10 "
                                            "under official and adaptive where the attack can average, else 1)")
    ap.add_argument("--diagnostics", action="store_true", default=None,
                    help="record each image's gradient diagnostics (two more forward-backward passes per image)")
    ap.add_argument("--protocol", help="a preset: paper")
    ap.add_argument("--out", help="output folder (resumed if it holds results of the same configuration)")
    ap.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: the best available)")
    ap.add_argument("--dry-run", action="store_true", help="print pass counts and an estimated time; run nothing")
    ap.add_argument("--no-progress", action="store_true")
    return ap


def _values(raw: list[str], kind, flag: str) -> tuple:
    items = [v for chunk in raw for v in chunk.split(",") if v.strip()]
    try:
        return tuple(kind(v.strip()) for v in items)
    except ValueError:
        raise _Usage(f"{flag} takes {'numbers' if kind is float else 'names'}, got {' '.join(raw)!r}") from None


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    from app.evaluate.protocols import PROTOCOLS
    values: dict = {}
    if args.protocol is not None:
        values.update(PROTOCOLS[args.protocol].values)
    for f in fields(EvalConfig):
        given = getattr(args, f.name, None)
        if given is None:
            continue
        flag = "--purify-step-size" if f.name == "purify_step_sizes" else "--" + f.name.replace("_", "-")
        values[f.name] = _values(given, GRID[f.name], flag) if f.name in GRID else given
    return EvalConfig(**values)


def main(argv: list[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
        cfg = config_from_args(args).validate()
        if args.dry_run:
            return dry_run(cfg, args.device)
        if not args.out:
            raise _Usage("--out is required (the folder for results.jsonl and the reports)")
        from app.evaluate.runner import run_evaluation
        stats = run_evaluation(cfg, args.out, device=args.device, progress=not args.no_progress)
    except _Usage as e:
        print(f"python -m app.evaluate: {str(e).rstrip('.')}.", file=sys.stderr)
        return 2
    except CLIPureError as e:
        print(str(e), file=sys.stderr)
        return 2
    if stats is not None:
        print(json.dumps(stats))
    return 0


def dry_run(cfg: EvalConfig, device: str | None) -> int:
    from app.evaluate import cost
    from app.evaluate.data import open_dataset
    data = open_dataset(cfg.data, cfg.n, cfg.root, cfg.classnames)
    counts = cost.count(cfg, len(data), len(data.classnames))
    counts["settings"] = len(cfg.settings())
    counts["batches"] = -(-len(data) // cfg.batch_size)
    for k, v in counts.items():
        print(f"{k:>18}: {v:,}")
    try:
        from app.evaluate.runner import Evaluator
        seconds = cost.estimate_seconds(Evaluator(cfg, data, device), counts)
        print(f"{'estimated time':>18}: {seconds:,.0f} s ({seconds / 3600:.2f} h) on this machine, one process "
              f"(upper bound: attacks that stop early do less)")
    except CLIPureError as e:
        print(f"{'estimated time':>18}: not measured here ({e})")
    return 0
