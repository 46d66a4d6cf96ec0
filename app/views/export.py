"""What a request leaves behind: the PNGs (the evaluated 8-bit adversarial image, the clean one at
model resolution, the amplified perturbation), trajectory.json (to_dict's record of the
whole request) and trajectory.csv (one row per trajectory step)."""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from app.attacks import step_size_used
from app.defences import DEFENCES
from app.views.record import run_record
from app.views.report import attacked_scope, caption, caveats, unknown_words_notice
from app.flows.results import PipelineResult


def to_pil(x: torch.Tensor) -> Image.Image:
    """(1, 3, S, S) or (3, S, S) in [0,1] -> RGB PIL image, rounded to 8 bits."""
    arr = x.detach().float().cpu().reshape(-1, *x.shape[-2:]).clamp(0, 1).permute(1, 2, 0).numpy()
    return Image.fromarray(np.rint(arr * 255).astype(np.uint8))


def amplification(x: torch.Tensor, x_adv: torch.Tensor) -> float:
    """The factor that stretches the perturbation x_adv - x to fill [0,1] around mid grey."""
    peak = (x_adv - x).detach().float().abs().max().item()
    return 0.5 / peak if peak > 0 else 1.0


def perturbation_image(x: torch.Tensor, x_adv: torch.Tensor) -> tuple[Image.Image, float]:
    """The perturbation, amplified to fill [0,1] around mid grey; returns (image, factor)."""
    factor = amplification(x, x_adv)
    return to_pil((0.5 + factor * (x_adv - x).detach().float().cpu()).clamp(0, 1)), factor


def export(result: PipelineResult, folder: Path) -> dict[str, Path | float]:
    """Write adversarial.png (lossless: exactly the evaluated 8-bit image), clean.png (the input at
    model resolution), perturbation.png, trajectory.json and trajectory.csv, and for TTC
    defended.png (the image a pixel-space defence classifies: TTC's x_ttc, JPEG's x_jpeg, of the trajectory
    shown); return their paths and the perturbation's
    amplification. Raises OSError where the folder cannot be written: the files are extras, and the
    caller decides what a request without them shows (app/ui/server.py, `downloads`)."""
    paths = {k: folder / f for k, f in (("adversarial", "adversarial.png"), ("clean", "clean.png"),
                                         ("perturbation", "perturbation.png"), ("json", "trajectory.json"),
                                         ("csv", "trajectory.csv"))}
    to_pil(result.x_adv).save(paths["adversarial"])
    to_pil(result.x).save(paths["clean"])
    pert, factor = perturbation_image(result.x, result.x_adv)
    pert.save(paths["perturbation"])
    paths["json"].write_text(to_json(result))
    paths["csv"].write_text(to_csv(result))
    if result.trajectory.pixels is not None:
        paths["defended"] = folder / "defended.png"
        to_pil(result.trajectory.pixels[-1]).save(paths["defended"])
    return {**paths, "factor": factor}


def trajectory_rows(result: PipelineResult) -> list[dict]:
    """One row per (trajectory, step): cosine to blank, top-1, and each class probability."""
    rows = []
    traces = [("clean", result.clean_trajectory)]
    if result.adv_trajectory is not None:
        traces.append(("adversarial", result.adv_trajectory))
    for name, traj in traces:
        for t in range(traj.steps + 1):
            row = {"trajectory": name, "step": t, "cos_to_blank": round(float(traj.cos_to_blank[t, 0]), 6),
                   "top1": result.classnames[int(traj.top1[t, 0])]}
            if traj.prior_loss is not None:
                row["prior_loss"] = round(float(traj.prior_loss[t, 0]), 6)
            row.update({f"p[{c}]": round(float(p), 6) for c, p in zip(result.classnames, traj.probs[t, 0].tolist())})
            rows.append(row)
    return rows


def to_csv(result: PipelineResult) -> str:
    rows = trajectory_rows(result)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None


def defence_record(result: PipelineResult) -> dict:
    """The defence that ran: its name, label and the parameters it reads (its declaration's record),
    its seed if randomised, and where it has one, the gradient-norm scope the attacker's graph used."""
    p = result.purify_config
    spec = DEFENCES[p.defence]
    out = {"name": p.defence, "label": spec.label, **spec.record(p)}
    if spec.randomised:
        out["seed"] = p.seed
    if "grad_scope" in spec.reads:
        out["grad_scope_attacked"] = attacked_scope(result)
    return out


def to_dict(result: PipelineResult, embeddings: bool = True) -> dict:
    """Everything about the request, JSON-ready."""
    out = {
        "caption": caption(result),
        "backbone": result.backbone,
        "precision": result.precision,
        "meaningless": result.meaningless,
        "classnames": result.classnames,
        "template_set": result.template_set,
        "defence": defence_record(result),
        "run": run_record(result.device, result.precision, result.x, result.input_sha256),
        "attack_config": None if result.attack_config is None else
        {**result.attack_config.to_dict(), "step_size": step_size_used(result.attack_config),
         "step_size_default": result.attack_config.step_size is None},
        "clean": {"label": result.clean.label, "probs": result.clean.probs},
        "clean_purified": {"label": result.clean_purified.label, "probs": result.clean_purified.probs},
        "warnings": result.warnings,
        "timings_s": {k: round(v, 4) for k, v in result.timings.items()},
        "trajectory": trajectory_rows(result),
    }
    if result.attack is not None:
        a = result.attack
        out.update({
            "adversarial": {"label": result.adversarial.label, "probs": result.adversarial.probs},
            "purified": {"label": result.purified.label, "probs": result.purified.probs},
            "perturbation": {"linf_255": a.linf_255, "l2": a.l2, "psnr_db": _finite(a.psnr_db)},
            "attack_succeeded": {"bare_clip": result.outcome.fooled_clip, "defence": result.outcome.fooled_defence},
            # near-uniform clean probabilities: the model does not know the words; the yes/no mean nothing
            "verdict_meaningful": unknown_words_notice(result) is None,
            "defence_changed_clean": result.outcome.defence_changed_clean,
            "exceeds_eps": result.outcome.exceeds_eps,
            "attack_failed": result.outcome.failed,
            "caveats": caveats(result),
            "attack_seconds": round(a.seconds, 4),
            "gradient": None if result.gradient is None else result.gradient.to_dict(),
        })
    if result.clean_trajectory.tau is not None:   # a counterattack (TTC): tau and the weights of each
        out["counterattack"] = {k: {"tau": float(t.tau[0]), "weights": t.weights[0].tolist()}
                                for k, t in (("clean", result.clean_trajectory), ("adversarial", result.adv_trajectory))
                                if t is not None}
    if embeddings:
        out["embeddings"] = {"clean": result.clean_trajectory.embeddings[:, 0].tolist()}
        if result.adv_trajectory is not None:
            out["embeddings"]["adversarial"] = result.adv_trajectory.embeddings[:, 0].tolist()
    return out


def to_json(result: PipelineResult) -> str:
    return json.dumps(to_dict(result))
