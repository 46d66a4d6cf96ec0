"""The evaluation loop: batches, per-batch seeds, resume from results.jsonl, sharding.

Batch k is always images [k*B, (k+1)*B) of the dataset, and its seed comes from (seed, its image
ids), so neither the order of work nor the number of processes changes a result. Each batch
attacks once per attacked model and scores every defence on the same x_adv through app.flows.scoring;
its lines are appended to results.jsonl and flushed as soon as they exist.
"""
from __future__ import annotations

import hashlib
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from app.attacks import AttackConfig, run_attack, validate_attack
from app.defences.defence import Defence
from app.common.errors import CLIPureError, writing
from app.attacks.gradients import exact_defence, gradient_diagnostics
from app.evaluate.config import NO_ATTACK, NO_DEFENCE, EvalConfig, Setting
from app.evaluate.data import Dataset, open_dataset
from app.evaluate.distributed import World, init_world
from app.evaluate.store import RESULTS, RESUME, append, prepare_out, read_results
from app.common.limits import LIMITS
from app.clip.models import load_backbone
from app.defences import PurifyConfig
from app.flows.scoring import Scored, encode, outcomes, score
from app.attacks.threat_models import THREAT_MODELS, attacked_model
from app.clip.zeroshot import TEXT_CACHE, build_classifier

BARE = PurifyConfig(steps=0)   # scoring bare CLIP: the trajectory is its input alone

# Optional: (setting, attacked model, x, x_adv, labels) -> one dict per image, stored in each
# line's "diagnostics"; --diagnostics fills it with the attacker's gradient (Evaluator.gradient_diagnostics).
DiagnosticsHook = Callable[[Setting, torch.nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], list[dict]]


def batch_seed(seed: int, ids) -> int:
    """A batch's seed from (seed, its image ids): independent of order and sharding."""
    text = f"{seed}:" + ",".join(map(str, ids))
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) % (2**31 - 1)


def batches(n: int, size: int) -> list[range]:
    return [range(k, min(k + size, n)) for k in range(0, n, size)]


# --- one batch ----------------------------------------------------------------------------------

class Evaluator:
    """Everything a batch needs, loaded once per process."""

    def __init__(self, cfg: EvalConfig, dataset: Dataset, device: str | None = None,
                 diagnostics: DiagnosticsHook | None = None):
        self.cfg, self.data = cfg, dataset
        self.diagnostics = diagnostics or (self.gradient_diagnostics if cfg.diagnostics else None)
        self.backbone = load_backbone(cfg.backbone, device, cfg.precision)
        self.classnames = dataset.classnames
        self.classifier = build_classifier(self.backbone, self.classnames, cfg.template_set)
        self.blank = TEXT_CACHE.blank_embedding(self.backbone, cfg.template_set)
        self.settings = cfg.settings()
        for s in self.settings:   # validate before any work: one sentence on a bad value
            if s.attack != NO_ATTACK:
                self._attack_config(s, cfg.seed)

    def _attack_config(self, s: Setting, seed: int) -> AttackConfig:
        eot = self.cfg.eot_of(s)
        a = AttackConfig(attack=s.attack, eps=s.eps, steps=self.cfg.steps, step_size=self.cfg.step_size, seed=seed,
                         threat_model=s.threat_model, eot=eot)
        return validate_attack(a, self.classnames, replace(LIMITS, max_eot=max(LIMITS.max_eot, eot)))

    def gradient_diagnostics(self, s: Setting, model, x: torch.Tensor, x_adv: torch.Tensor,
                             y: torch.Tensor) -> list[dict | None]:
        """The default hook (--diagnostics): per image, the attacker's pixel gradient at x under the
        setting's threat model against the exact fp32 one (app.attacks.gradients); None for bare CLIP."""
        if s.purify is None:
            return [None] * len(y)
        defence = self.defence(s.purify)
        if not hasattr(self, "_exact"):
            self._exact = exact_defence(defence, self.classnames, self.cfg.template_set, self.backbone.precision)
        eot = self._attack_config(s, self.cfg.seed).eot
        return [gradient_diagnostics(s.threat_model, defence, x[i:i + 1], y[i:i + 1], self._exact, eot).to_dict()
                for i in range(len(y))]

    def defence(self, purify: PurifyConfig | None) -> Defence:
        """The evaluated classifier under `purify` (None: bare CLIP, no purification steps)."""
        return Defence(self.classifier, self.blank, purify or BARE, self.backbone.name)

    def _scored(self, purify: PurifyConfig | None, x: torch.Tensor, z: torch.Tensor) -> Scored:
        """x scored by the defence; z: x's unit embeddings, shared by every purifier of the embedding."""
        return score(self.defence(purify), x, z)

    def run_batch(self, k: int, positions: range, todo: list[Setting]):
        """Yield the result lines of batch k, one group (settings sharing an attacked model) at a time."""
        ids = [self.data.ids[i] for i in positions]
        seed = batch_seed(self.cfg.seed, ids)
        x, y = self.data.load(positions, self.backbone)
        x, y = x.to(self.backbone.device), y.to(self.backbone.device)
        z = encode(self.classifier, x)
        clean = {}
        groups: dict[tuple, list[Setting]] = {}
        for s in todo:
            shared = s.attack == NO_ATTACK or THREAT_MODELS[s.threat_model].backward == "none"
            groups.setdefault((s.attack, s.eps, s.threat_model, None if shared else s.purify), []).append(s)
        for (attack, eps, tm, purify), members in groups.items():
            t0 = time.perf_counter()
            if attack == NO_ATTACK:
                result, x_adv, model = None, x, None
            else:
                pcfg = replace(purify or members[0].purify or BARE, seed=seed)
                model = attacked_model(tm, self.defence(pcfg))
                acfg = self._attack_config(members[0], seed)
                result = run_attack(acfg, model, x, self.classnames, y)
                x_adv = result.x_adv
            z_adv = z if attack == NO_ATTACK else encode(self.classifier, x_adv)
            lines = []
            for s in members:
                pcfg = s.with_seed(seed)
                key = s.purify
                if key not in clean:
                    clean[key] = self._scored(pcfg, x, z)
                c, adv = clean[key], self._scored(pcfg, x_adv, z_adv)
                bare = s.defence == NO_DEFENCE
                clean_pred = c.bare if bare else c.purified
                pred = adv.bare if bare else adv.purified
                clean_ok = (clean_pred == y).tolist()
                if result is not None:
                    outs = outcomes(result, c, adv, labels=y)
                    over = [o.exceeds_eps for o in outs]
                    ok = [clean_ok[i] if over[i] else not (o.fooled_clip if bare else o.fooled_defence)
                          for i, o in enumerate(outs)]
                else:
                    over = [False] * len(ids)
                    ok = (pred == y).tolist()
                diag = (self.diagnostics(s, model, x, x_adv, y) if self.diagnostics and model is not None
                        else [None] * len(ids))
                linf = result.linf_255_each if result is not None else [0.0] * len(ids)
                l2 = result.l2_each if result is not None else [0.0] * len(ids)
                lines.append(Answers(s, clean_pred=clean_pred.tolist(), pred=pred.tolist(), clean_ok=clean_ok, ok=ok,
                                     exceeds_eps=over, linf_255=linf, l2=l2, diagnostics=diag))
            seconds = (time.perf_counter() - t0) / len(ids)
            yield [a.line(i, {"image_id": ids[i], "batch": k, "label": int(y[i])}, seconds)
                   for a in lines for i in range(len(ids))]


@dataclass
class Answers:
    """One setting's answers on one batch: one entry per image in each list."""
    setting: Setting
    clean_pred: list[int]
    pred: list[int]
    clean_ok: list[bool]
    ok: list[bool]
    exceeds_eps: list[bool]
    linf_255: list[float]
    l2: list[float]
    diagnostics: list[dict | None]

    def line(self, i: int, image: dict, seconds: float) -> dict:
        """Image i's line of results.jsonl; image: its image_id, batch and label."""
        s = self.setting
        return {**image, "defence": s.defence, "purify_step_size": s.purify_step_size,
                "attack": s.attack, "eps": s.eps, "threat_model": s.threat_model, "setting": s.key,
                "clean_correct": bool(self.clean_ok[i]), "correct": bool(self.ok[i]),
                "clean_pred": int(self.clean_pred[i]), "pred": int(self.pred[i]),
                "linf_255": round(float(self.linf_255[i]), 4), "l2": round(float(self.l2[i]), 5),
                "exceeds_eps": bool(self.exceeds_eps[i]), "seconds": round(seconds, 4),
                "diagnostics": self.diagnostics[i]}


# --- the whole run ------------------------------------------------------------------------------

def plan(cfg: EvalConfig, dataset: Dataset) -> list[range]:
    return batches(len(dataset), cfg.batch_size)


def run_evaluation(cfg: EvalConfig, out: str | Path, device: str | None = None, progress: bool = True,
                   world: World | None = None, diagnostics: DiagnosticsHook | None = None,
                   reports: bool = True) -> dict | None:
    """Evaluate cfg into the folder out (resuming what it holds). Returns run statistics on
    rank 0 (None elsewhere). Raises CLIPureError (one sentence) on a bad config or folder."""
    from tqdm import tqdm

    t_start = time.perf_counter()
    world = world or init_world(device)
    out = Path(out)
    cfg = cfg.validate()
    dataset = open_dataset(cfg.data, cfg.n, cfg.root, cfg.classnames)
    parts = plan(cfg, dataset)
    sizes = {k: len(r) for k, r in enumerate(parts)}
    settings = cfg.settings()
    # Rank 0 owns the folder; every rank learns what is done (or the sentence that stops the run).
    state = None
    if world.is_main:
        try:
            with writing(out, RESUME):
                state = ("ok", prepare_out(cfg, out, sizes))
        except CLIPureError as e:
            state = ("error", str(e))
    state = world.broadcast(state)
    if state[0] == "error":
        raise CLIPureError(state[1])
    done = state[1]
    pending = [(k, [s for s in settings if (k, s.key) not in done]) for k in range(len(parts))]
    pending = [(k, todo) for k, todo in pending if todo]
    evaluator = Evaluator(cfg, dataset, world.device(device), diagnostics)
    rounds = math.ceil(len(pending) / world.size)
    bar = tqdm(total=len(pending), unit="batch", desc="evaluate", disable=not (progress and world.is_main),
               dynamic_ncols=True)
    n_lines, t_loop = 0, time.perf_counter()
    try:
        with _results_file(out, world.is_main) as writer:
            for r in range(rounds):
                j = r * world.size + world.rank
                mine = []
                if j < len(pending):
                    k, todo = pending[j]
                    for group in evaluator.run_batch(k, parts[k], todo):
                        if world.distributed:
                            mine.extend(group)
                        else:      # one process: each group is on disk as soon as it exists
                            append(writer, group)
                            n_lines += len(group)
                gathered = world.gather(mine) if world.distributed else None
                if world.is_main:
                    for part in gathered or ():
                        append(writer, part)
                        n_lines += len(part)
                    bar.update(min(world.size, len(pending) - r * world.size))
    finally:
        bar.close()
    loop_seconds = time.perf_counter() - t_loop
    if not world.is_main:
        world.close()
        return None
    stats = {"wall_seconds": round(time.perf_counter() - t_start, 2), "loop_seconds": round(loop_seconds, 3),
             "result_lines_computed": n_lines, "batches_computed": len(pending), "batches_total": len(parts),
             "images": len(dataset), "settings": len(settings), "world_size": world.size,
             "backend": world.backend, "device": str(evaluator.backbone.device)}
    images_done = n_lines / max(len(settings), 1)
    stats["images_per_second"] = round(images_done / loop_seconds, 3) if loop_seconds > 0 and n_lines else None
    stats["results_per_second"] = round(n_lines / loop_seconds, 3) if loop_seconds > 0 and n_lines else None
    if reports:   # made from results.jsonl alone: a report cut short is made again by the next run
        with writing(out, RESUME):
            write_reports(cfg, out, dataset, stats, evaluator)
    world.close()
    return stats


@contextmanager
def _results_file(out: Path, main: bool):
    """results.jsonl opened for appending on rank 0 (unbuffered: store.append writes whole lines);
    None on the other ranks, which only compute."""
    if not main:
        yield None
        return
    with writing(out / RESULTS, RESUME):
        f = open(out / RESULTS, "ab", buffering=0)
    with f:
        yield f


def write_reports(cfg: EvalConfig, out: Path, dataset: Dataset, stats: dict, evaluator: Evaluator) -> None:
    from app.evaluate import card, plots, tables
    lines = read_results(out / RESULTS)
    summary = tables.write(out, cfg, lines, dataset.classnames)
    plots.write(out, summary)
    card.write(out, cfg, stats, evaluator, [batch_seed(cfg.seed, [dataset.ids[i] for i in r])
                                           for r in plan(cfg, dataset)])
