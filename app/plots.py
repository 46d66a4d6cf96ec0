"""Matplotlib figures made from purification trajectories (no pyplot global state).

Every figure shows every computed step as a point: oscillation (the 2-cycle of the official
defaults) is drawn, never smoothed. Titles carry the caption that names the threat model,
attack, eps, steps and backbone.
"""
from __future__ import annotations

import textwrap
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

CLEAN_COLOUR, TARGET_COLOUR = "#1f77b4", "#d62728"
OTHER_COLOURS = ["#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#ff7f0e"]


def _figure(w: float, h: float, ncols: int = 1) -> tuple[Figure, list]:
    # A fixed layout: constrained/tight layout costs more than drawing these small plots.
    fig = Figure(figsize=(w, h), dpi=72)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    fig.subplots_adjust(left=0.12 if ncols == 1 else 0.07, right=0.97, bottom=0.14, top=0.8, wspace=0.22)
    return fig, list(axes)


def _mark_step(axes, step: int | None) -> None:
    """A vertical line at the step being inspected (the replay slider)."""
    if step is not None:
        for ax in axes:
            ax.axvline(step, color="black", lw=1, ls=":", alpha=0.7)


def _caption(fig: Figure, caption: str) -> None:
    """The threat model / attack / eps / steps / backbone line, wrapped to the figure's width."""
    if caption:
        width = int(fig.get_figwidth() * 19)   # characters per line at 7 pt
        fig.suptitle(textwrap.fill(caption, width), fontsize=7, y=0.995, va="top")


def _top_classes(probs: np.ndarray, k: int, must: Sequence[int]) -> list[int]:
    """Indices of the k classes with the highest peak probability, plus the ones in `must`."""
    order = list(np.argsort(-probs.max(axis=0)))
    chosen = [i for i in must if i is not None]
    for i in order:
        if len(chosen) >= max(k, len(chosen)):
            break
        if i not in chosen:
            chosen.append(int(i))
    return chosen


def probability_figure(traces: dict[str, np.ndarray], classnames: Sequence[str], clean_idx: int,
                       target_idx: int | None = None, caption: str = "", top_k: int = 5,
                       step: int | None = None) -> Figure:
    """Per-step class probabilities. traces: panel title -> (T+1, C) probabilities.

    The classes shown (top_k by peak probability over all panels, plus the clean prediction and
    the target) keep one colour across panels. The clean prediction is a thick blue line, the
    target (if any) a dashed red one.
    """
    fig, axes = _figure(4.4 * len(traces), 3.3, len(traces))
    peak = np.max(np.stack([p.max(axis=0) for p in traces.values()]), axis=0)   # (C,)
    colours = iter(OTHER_COLOURS)
    styles = {}
    for i in _top_classes(peak[None], top_k, [clean_idx, target_idx]):
        if i == clean_idx:
            styles[i] = dict(color=CLEAN_COLOUR, lw=2.8, label=f"{classnames[i]} (clean prediction)")
        elif i == target_idx:
            styles[i] = dict(color=TARGET_COLOUR, lw=2.2, ls="--", label=f"{classnames[i]} (target)")
        else:
            styles[i] = dict(color=next(colours, "#999999"), lw=1.3, label=classnames[i])
    for ax, (title, probs) in zip(axes, traces.items()):
        steps = np.arange(probs.shape[0])
        for i, style in styles.items():
            ax.plot(steps, probs[:, i], marker="o", ms=3.5, **style)
        ax.set(title=title, xlabel="purification step", ylim=(-0.02, 1.02), yticks=[0, 0.5, 1])
        # Every step is a point; tick labels at most every other step (text is the costly part).
        ax.set_xticks(np.unique(np.linspace(0, steps[-1], min(len(steps), 6)).round()))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("probability")
    axes[-1].legend(fontsize=7, loc="upper right")   # one legend: colours are shared; "best" is slow
    _mark_step(axes, step)
    _caption(fig, caption)
    return fig


def cosine_figure(cosines: dict[str, Sequence[float]], caption: str = "", step: int | None = None) -> Figure:
    """cos(z_t, b) per step for each trajectory."""
    fig, (ax,) = _figure(5.2, 3.2)
    for (name, cos), colour in zip(cosines.items(), ["#d62728", "#1f77b4", "#2ca02c", "#9467bd"]):
        ax.plot(np.arange(len(cos)), cos, marker="o", ms=4, color=colour, label=name)
    ax.set(xlabel="purification step", ylabel="cos(z, blank)", title="Cosine to the blank target per step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    _mark_step([ax], step)
    _caption(fig, caption)
    return fig


def latent_map_figure(trajectories: dict[str, torch.Tensor], class_embeddings: torch.Tensor,
                      blank: torch.Tensor, classnames: Sequence[str], caption: str = "",
                      max_landmarks: int = 12) -> Figure:
    """2-D PCA map of the unit-sphere trajectories with class embeddings and the blank as landmarks.

    trajectories: name -> (T+1, D). The projection is fitted on every point shown, so arrows
    between consecutive steps show the real order and size of the moves in that plane.
    """
    trajs = {k: F.normalize(v.float(), dim=-1) for k, v in trajectories.items()}
    b = F.normalize(blank.float(), dim=-1)[None]
    classes = class_embeddings.float()
    if classes.shape[0] > max_landmarks:   # keep the classes the trajectories come closest to
        pts = torch.cat(list(trajs.values()))
        keep = (pts @ classes.T).max(0).values.argsort(descending=True)[:max_landmarks].sort().values
    else:
        keep = torch.arange(classes.shape[0])
    every = torch.cat([*trajs.values(), classes[keep], b])
    mean = every.mean(0, keepdim=True)
    _, _, v = torch.linalg.svd(every - mean, full_matrices=False)
    proj = lambda p: ((p - mean) @ v[:2].T).numpy()  # noqa: E731

    fig, (ax,) = _figure(5.6, 4.8)
    cp = proj(classes[keep])
    ax.scatter(cp[:, 0], cp[:, 1], marker="s", s=30, color="#555555", zorder=3)
    for (x, y), i in zip(cp, keep.tolist()):
        ax.annotate(classnames[i], (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    bp = proj(b)[0]
    ax.scatter([bp[0]], [bp[1]], marker="*", s=220, color="black", zorder=4)
    ax.annotate('blank "a photo of a ."', bp, fontsize=8, xytext=(4, -10), textcoords="offset points")
    for (name, t), colour in zip(trajs.items(), ["#d62728", "#1f77b4", "#2ca02c", "#9467bd"]):
        p = proj(t)
        ax.plot(p[:, 0], p[:, 1], "o", color=colour, ms=4, label=name, zorder=5)
        d = p[1:] - p[:-1]   # one arrow per step, in step order
        ax.quiver(p[:-1, 0], p[:-1, 1], d[:, 0], d[:, 1], angles="xy", scale_units="xy", scale=1, color=colour,
                  width=0.004, alpha=0.8, zorder=5)
        for k in (0, len(p) - 1):
            ax.annotate(f"{k}", p[k], fontsize=7, color=colour, xytext=(-8, 4), textcoords="offset points")
    ax.set(title="Latent trajectory (2-D PCA of unit embeddings)", xlabel="PC 1", ylabel="PC 2")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    _caption(fig, caption)
    return fig
