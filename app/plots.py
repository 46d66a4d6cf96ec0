"""Matplotlib figures made from purification trajectories (no pyplot global state).

Every figure shows every computed step as a point: oscillation (the 2-cycle of the official
defaults) is drawn, never smoothed. Titles carry the caption that names the threat model,
attack, eps, steps and backbone. Text is at least 10 pt and legends sit outside the axes (to
the right; below, in a phone's stacked layout, `narrow`); the figures are drawn on white, and
the page inverts them in its dark theme (app/ui/layout.py CSS).
"""
from __future__ import annotations

import textwrap
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

CLEAN_COLOUR, TARGET_COLOUR = "#1f77b4", "#d62728"
FONT, SMALL = 11, 10   # points: titles and labels, ticks and legends (never below 10)
OTHER_COLOURS = ["#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#ff7f0e"]


def _figure(w: float, h: float, ncols: int = 1, right: float = 0.97) -> tuple[Figure, list]:
    # A fixed layout: constrained/tight layout costs more than drawing these small plots.
    # `right` < 1 leaves room for a legend outside the axes.
    fig = Figure(figsize=(w, h), dpi=72)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    fig.subplots_adjust(left=0.1 if ncols == 1 else 0.06, right=right, bottom=0.15, top=0.76, wspace=0.18)
    for ax in axes:
        ax.tick_params(labelsize=SMALL)
    return fig, list(axes)


def _stacked(rows: int, caption: str, legend_rows: int = 1, panel_h: float = 2.3) -> tuple[Figure, list]:
    """A phone's layout: `rows` panels stacked in a figure about a phone's width (4.6 in = 331 px at 72 dpi,
    so text keeps its size), the caption above and a legend of `legend_rows` rows below (fig.legend)."""
    width = 4.6
    cap_lines = len(textwrap.wrap(caption, int(width * 12.5))) if caption else 0
    top_in, gap_in, bottom_in = 0.2 * cap_lines + 0.4, 0.75, 0.55 + 0.2 * legend_rows
    height = top_in + rows * panel_h + (rows - 1) * gap_in + bottom_in
    fig = Figure(figsize=(width, height), dpi=72)
    axes = list(fig.subplots(rows, 1, squeeze=False)[:, 0])
    fig.subplots_adjust(left=0.17, right=0.95, top=1 - top_in / height, bottom=bottom_in / height,
                        hspace=gap_in / panel_h)
    for ax in axes:
        ax.tick_params(labelsize=SMALL)
    return fig, axes


def _legend_below(fig: Figure, ax) -> None:
    """The legend at the foot of a stacked (phone) figure, two entries a row."""
    fig.legend(*ax.get_legend_handles_labels(), fontsize=SMALL, loc="lower center", ncol=2, frameon=False,
               bbox_to_anchor=(0.5, 0.0), columnspacing=1.0, handlelength=1.5)


def _legend_outside(ax) -> None:
    """The legend to the right of the axes, never over the data ("best" is also slow)."""
    ax.legend(fontsize=SMALL, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, frameon=False)


def _mark_step(axes, step: int | None) -> None:
    """A vertical line at the step being inspected (the replay slider)."""
    if step is not None:
        for ax in axes:
            ax.axvline(step, color="black", lw=1.2, ls=":", alpha=0.8)
            # Right of the line, or left of it in the right half, so it never runs into the legend.
            lo, hi = ax.get_xlim()
            left = step > (lo + hi) / 2
            ax.annotate(f"step {step}", (step, 1.0), xycoords=("data", "axes fraction"),
                        xytext=(-3 if left else 3, -12), textcoords="offset points", fontsize=SMALL,
                        ha="right" if left else "left")


def _caption(fig: Figure, caption: str) -> None:
    """The threat model / attack / eps / steps / backbone line, wrapped to the figure's width."""
    if caption:
        width = int(fig.get_figwidth() * 12.5)   # characters per line at 10 pt
        fig.suptitle(textwrap.fill(caption, width), fontsize=SMALL, y=0.995, va="top")


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
                       step: int | None = None, narrow: bool = False) -> Figure:
    """Per-step class probabilities. traces: panel title -> (T+1, C) probabilities.

    The classes shown (top_k by peak probability over all panels, plus the clean prediction and
    the target) keep one colour across panels. The clean prediction is a thick blue line, the
    target (if any) a dashed red one. narrow: a phone's layout, panels stacked, the legend below.
    """
    if narrow:
        fig, axes = _stacked(len(traces), caption, legend_rows=(min(top_k, len(classnames)) + 2) // 2, panel_h=2.0)
    else:
        fig, axes = _figure(3.6 * len(traces) + 2.4, 3.6, len(traces), right=1 - 2.3 / (3.6 * len(traces) + 2.4))
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
        ax.set(xlabel="purification step", ylim=(-0.02, 1.02), yticks=[0, 0.5, 1])
        ax.set_title(title, fontsize=FONT)
        ax.xaxis.label.set_size(FONT)
        # Every step is a point; tick labels at most every other step (text is the costly part).
        ax.set_xticks(np.unique(np.linspace(0, steps[-1], min(len(steps), 6)).round()))
        ax.grid(alpha=0.3)
    for ax in axes if narrow else axes[:1]:
        ax.set_ylabel("probability", fontsize=FONT)
    if narrow:   # one legend: colours are shared
        _legend_below(fig, axes[-1])
    else:
        _legend_outside(axes[-1])
    _mark_step(axes, step)
    _caption(fig, caption)
    return fig


def cosine_figure(cosines: dict[str, Sequence[float]], caption: str = "", step: int | None = None,
                  prior_losses: dict[str, Sequence[float]] | None = None, narrow: bool = False) -> Figure:
    """cos(z_t, b) per step for each trajectory; with `prior_losses` (CLIPure-Diff), a second
    panel shows the diffusion prior's loss per step, in the same colours. narrow: a phone's
    layout, the panels stacked and the legend below."""
    colours = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd"]
    if narrow:
        fig, axes = _stacked(2 if prior_losses else 1, caption)
    elif prior_losses:
        fig, axes = _figure(10.0, 3.6, 2, right=0.8)
        fig.subplots_adjust(wspace=0.3)
    else:
        fig, axes = _figure(7.0, 3.6, right=0.7)
    ax = axes[0]
    for (name, cos), colour in zip(cosines.items(), colours):
        ax.plot(np.arange(len(cos)), cos, marker="o", ms=4, color=colour, label=name)
    ax.set_ylabel("cos(z, blank)", fontsize=FONT)
    ax.set_title("Cosine to the blank target per step", fontsize=FONT)
    if prior_losses:
        for (name, loss), colour in zip(prior_losses.items(), colours):
            axes[1].plot(np.arange(len(loss)), loss, marker="s", ms=4, color=colour, label=name)
        axes[1].set_ylabel("prior loss", fontsize=FONT)
        axes[1].set_title("Diffusion prior's loss per step", fontsize=FONT)
    for a in axes:
        a.set_xlabel("purification step", fontsize=FONT)
        a.grid(alpha=0.3)
    if narrow:
        _legend_below(fig, axes[-1])
    else:
        _legend_outside(axes[-1])
    _mark_step(axes, step)
    _caption(fig, caption)
    return fig


def latent_map_figure(trajectories: dict[str, torch.Tensor], class_embeddings: torch.Tensor,
                      blank: torch.Tensor, classnames: Sequence[str], caption: str = "",
                      max_landmarks: int = 12, step: int | None = None) -> Figure:
    """2-D PCA map of the unit-sphere trajectories with class embeddings and the blank as landmarks.

    trajectories: name -> (T+1, D). The projection is fitted on every point shown, so arrows
    between consecutive steps show the real order and size of the moves in that plane. Class
    landmarks are numbered squares listed in a key beside the map (names on the map collide);
    step numbers sit along each path; `step` rings that step on every path (the replay slider).
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

    fig, (ax,) = _figure(8.0, 5.0, right=0.62)
    cp = proj(classes[keep])
    ax.scatter(cp[:, 0], cp[:, 1], marker="s", s=120, color="#dddddd", edgecolors="#555555", zorder=3)
    for n, ((x, y), i) in enumerate(zip(cp, keep.tolist()), 1):
        # The landmark's number inside its square; the names go in the key, where they cannot collide.
        ax.text(x, y, str(n), fontsize=SMALL - 2 if n > 9 else SMALL, ha="center", va="center", zorder=4)
        ax.plot([], [], "s", color="#dddddd", mec="#555555", label=f"{n}  {classnames[i]}")
    bp = proj(b)[0]
    ax.scatter([bp[0]], [bp[1]], marker="*", s=260, color="black", zorder=4, label='blank "a photo of a ."')
    for (name, t), colour in zip(trajs.items(), ["#d62728", "#1f77b4", "#2ca02c", "#9467bd"]):
        p = proj(t)
        ax.plot(p[:, 0], p[:, 1], "o", color=colour, ms=5, label=f"{name} (steps 0-{len(p) - 1})", zorder=5)
        d = p[1:] - p[:-1]   # one arrow per step, in step order
        ax.quiver(p[:-1, 0], p[:-1, 1], d[:, 0], d[:, 1], angles="xy", scale_units="xy", scale=1, color=colour,
                  width=0.004, alpha=0.8, zorder=5)
        # Step numbers along the path, below-left of each point (landmark numbers sit centred);
        # a 2-cycle revisits the same two points, so each spot is labelled once with all its steps.
        spots: dict[tuple, list[int]] = {}
        for k, xy in enumerate(p):
            spots.setdefault(tuple(np.round(xy, 3)), []).append(k)
        for ks in spots.values():
            text = ",".join(map(str, ks)) if len(ks) <= 3 else f"{ks[0]},{ks[1]},…,{ks[-1]}"
            ax.annotate(text, p[ks[0]], fontsize=SMALL, color=colour, xytext=(-6, -6), textcoords="offset points",
                        ha="right", va="top", zorder=6)
        if step is not None and 0 <= step < len(p):
            ax.scatter([p[step, 0]], [p[step, 1]], s=260, facecolors="none", edgecolors=colour, linewidths=2,
                       zorder=7)
    if step is not None:
        ax.plot([], [], "o", mfc="none", mec="black", ms=12, label=f"step {step} (replay)")
    ax.set_title("Latent trajectory (2-D PCA of unit embeddings)", fontsize=FONT)
    ax.set_xlabel("PC 1", fontsize=FONT)
    ax.set_ylabel("PC 2", fontsize=FONT)
    ax.grid(alpha=0.3)
    _legend_outside(ax)
    _caption(fig, caption)
    return fig


def sweep_figure(eps: Sequence[float], sweep: dict[str, Sequence[float]], reference: str,
                 caption: str = "") -> Figure:
    """The masking audit's eps sweep: CLIPure's probability of the reference class after PGD at
    each eps, one line per threat model. A defence that is really robust still falls as eps grows."""
    fig, (ax,) = _figure(7.0, 3.6, right=0.7)
    for (name, probs), colour in zip(sweep.items(), ["#d62728", "#1f77b4", "#2ca02c", "#9467bd"]):
        ax.plot(list(eps), list(probs), marker="o", ms=5, color=colour, label=name)
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(eps), [f"{e:g}" for e in eps])
    ax.set(ylim=(-0.02, 1.02), yticks=[0, 0.5, 1])
    ax.set_xlabel("eps (L-inf, in 1/255)", fontsize=FONT)
    ax.set_ylabel(f"p({textwrap.shorten(reference, 18)})", fontsize=FONT)
    ax.set_title("Eps sweep: the reference class after PGD", fontsize=FONT)
    ax.grid(alpha=0.3)
    _legend_outside(ax)
    _caption(fig, caption)
    return fig
