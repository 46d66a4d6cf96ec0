"""Matplotlib figures made from purification trajectories (no pyplot global state).

Every figure shows every computed step as a point: oscillation (the 2-cycle of the official
defaults) is drawn, never smoothed. The caption names the threat model, attack, eps, steps and
backbone. Figures are as wide as the page's plot panel, for a projector, or a phone's width
(`narrow`: panels stacked, legends below), with text of at least 14 pt on both and no label over
another (app/views/plot_layout.py). They are drawn on white; the page inverts them in its dark theme
(app/ui/layout.py CSS). The rotation view and the latent map are in app/views/plots_maps.py.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from app.views.plot_layout import (
    HEIGHT,
    LABEL,
    PAD,
    PANEL,
    PATH_COLOURS,
    TEXT,
    beside,
    block,
    grid,
    key,
    lay_out,
    mark_step,
    style,
    wrap,
)
from app.views.plots_maps import latent_map_figure, rotation_figure   # the two plane views

__all__ = ["probability_figure", "cosine_figure", "rotation_figure", "latent_map_figure", "sweep_figure",
           "not_applicable_figure"]

CLEAN_COLOUR, TARGET_COLOUR = "#1f77b4", "#d62728"
OTHER_COLOURS = ["#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#ff7f0e"]


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
                       step: int | None = None, narrow: bool = False, axis: str = "purification step") -> Figure:
    """Per-step class probabilities. traces: panel title -> (T+1, C) probabilities. axis: what a step is
    (the defence's declared axis label).

    The classes shown (top_k by peak probability over all panels, plus the clean prediction and
    the target) keep one colour across panels. The clean prediction is a thick blue line, the
    target (if any) a dashed red one. narrow: a phone's layout, panels stacked, the legend below.
    """
    fig, axes, rows, cols = grid(narrow, len(traces))
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
        for i, s in styles.items():
            ax.plot(steps, probs[:, i], marker="o", ms=4, **s)
        ax.set(ylim=(-0.02, 1.02), yticks=[0, 0.5, 1])
        # Every step is a point; tick labels at most every other step (text is the costly part).
        ax.set_xticks(np.unique(np.linspace(0, steps[-1], min(len(steps), 6)).round()))
        style(ax, title, axis, "probability" if narrow or ax is axes[0] else "")
    lay_out(fig, axes, rows, cols, caption, **beside([key(fig, axes[0], narrow)], narrow),
            height=None if narrow else HEIGHT, panel=PANEL)
    mark_step(axes, step)
    return fig


def two_cycle(values: Sequence[float], tol: float = 1e-3) -> tuple[float, float] | None:
    """(value at the even steps, at the odd steps) when the last four values alternate (to tol): the 2-cycle."""
    v = list(values)
    if len(v) < 4 or abs(v[-1] - v[-3]) > tol or abs(v[-2] - v[-4]) > tol or abs(v[-1] - v[-2]) < 10 * tol:
        return None
    return (v[-1], v[-2]) if len(v) % 2 else (v[-2], v[-1])   # v[-1] is step len(v) - 1


def cosine_note(cosines: dict[str, Sequence[float]], step_size: float | None) -> str:
    """What the cosine plot must say: each step is a rotation by atan(η) (when it is one), and the 2-cycle."""
    parts = []
    if step_size is not None:
        parts.append(f"Each purification step rotates the embedding by atan(η) = atan({step_size:g}) = "
                     f"{np.degrees(np.arctan(step_size)):.1f}° towards the blank")
    cycles = [(name, c) for name, c in ((n, two_cycle(v)) for n, v in cosines.items()) if c]
    if cycles:
        parts.append("; ".join(f"{name}: cos alternates {a:.2f} (even steps) / {b:.2f} (odd steps)"
                               for name, (a, b) in cycles) +
                     " — a 2-cycle: the iterate overshoots the blank and the next step brings it back")
    return ". ".join(parts) + "." if parts else ""


def cosine_figure(cosines: dict[str, Sequence[float]], caption: str = "", step: int | None = None,
                  prior_losses: dict[str, Sequence[float]] | None = None, narrow: bool = False,
                  step_size: float | None = None) -> Figure:
    """cos(z_t, b) per step for each trajectory; with `prior_losses` (CLIPure-Diff), a second
    panel shows the diffusion prior's loss per step, in the same colours. narrow: a phone's
    layout, the panels stacked and the legend below. step_size: CLIPure-Cos's η where each step is
    exactly a rotation by atan(η) (L2 update, per-sample norm, γ = 0), said in the figure; a 2-cycle
    (the last values alternating) is said in any case."""
    fig, axes, rows, cols = grid(narrow, 2 if prior_losses else 1)
    ax = axes[0]
    for (name, cos), colour in zip(cosines.items(), PATH_COLOURS):
        ax.plot(np.arange(len(cos)), cos, marker="o", ms=5, color=colour, label=name)
    style(ax, "Cosine to the blank target per step", "purification step", "cos(z, blank)")
    if prior_losses:
        for (name, loss), colour in zip(prior_losses.items(), PATH_COLOURS):
            axes[1].plot(np.arange(len(loss)), loss, marker="s", ms=5, color=colour, label=name)
        style(axes[1], "Diffusion prior's loss per step", "purification step", "prior loss")
    text = cosine_note(cosines, step_size)
    note = block(fig, text, fig.bbox.width - 2 * PAD) if text else None
    lay_out(fig, axes, rows, cols, caption, note, **beside([key(fig, axes[-1], narrow)], narrow),
            height=None if narrow else HEIGHT, panel=PANEL)
    mark_step(axes, step)
    return fig


def sweep_figure(eps: Sequence[float], sweep: dict[str, Sequence[float]], reference: str,
                 caption: str = "", narrow: bool = False) -> Figure:
    """The masking audit's eps sweep: the defence's probability of the reference class after PGD at
    each eps, one line per threat model. A defence that is really robust still falls as eps grows.
    Lines that coincide stay visible: each has its own marker and dash, drawn thinner on top."""
    fig, (ax,), _, _ = grid(narrow, 1)
    looks = [dict(marker="o", ms=9, ls="-", lw=2.6), dict(marker="s", ms=6, ls="--", lw=1.8),
             dict(marker="^", ms=5, ls=":", lw=1.4), dict(marker="D", ms=4, ls="-.", lw=1.2)]
    for (name, probs), colour, look in zip(sweep.items(), PATH_COLOURS, looks):
        ax.plot(list(eps), list(probs), color=colour, label=name, **look)
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(eps), [f"{e:g}" for e in eps])
    ax.minorticks_off()
    ax.set(ylim=(-0.02, 1.02), yticks=[0, 0.5, 1])
    style(ax, "Eps sweep: the reference class after PGD", "eps (L-inf, in 1/255)",
          f"p({wrap(reference, 150 if narrow else 260, LABEL)})")
    lay_out(fig, [ax], 1, 1, caption, **beside([key(fig, ax, narrow)], narrow), height=None if narrow else HEIGHT,
            panel=PANEL)
    return fig



def not_applicable_figure(title: str, reason: str, caption: str = "", narrow: bool = False) -> Figure:
    """A view that does not apply to the result's defence (the cosine and rotation views measure
    from the blank, which TTC and JPEG do not move towards): the reason, in place of a figure."""
    fig, (ax,), _, _ = grid(narrow, 1)
    ax.set_axis_off()
    ax.text(0.5, 0.5, wrap(reason, fig.bbox.width * 0.8), ha="center", va="center", fontsize=TEXT,
            transform=ax.transAxes)
    style(ax, title)
    lay_out(fig, [ax], 1, 1, caption, height=None if narrow else HEIGHT, panel=PANEL)
    return fig
