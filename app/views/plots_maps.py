"""The two plane views of a purification: the rotation view (the exact plane of the input and the
blank, app/views/geometry.py) and the latent map (a 2-D PCA of every point shown).

Imported through app.views.plots. Sizes and layout as there (app/views/plot_layout.py): the page's width or a
phone's, text of at least 14 pt, no label over another.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Arc, Circle, FancyArrowPatch

from app.views.geometry import plane_coordinates, rotation_text
from app.views.plot_layout import (
    LABEL,
    PAD,
    PATH_COLOURS,
    TEXT,
    beside,
    block,
    key,
    lay_out,
    line_boxes,
    new_figure,
    place_labels,
    spread,
    style,
    text_width,
    wrap,
)

MAP_HEIGHT = 7.0       # inches: the latent map on a desktop
NARROW_MAP = 320       # px: its height on a phone (taller than wide: room for the labels)
ROTATION_SIDE = 480    # px: the rotation view's circle axes at most (desktop)
NOTES_WIDTH = 330      # px: the rotation view's notes beside the circle (desktop)
BEND = 0.15            # the rotation view's arrows bow by this share of their length: there and back both show
COLUMN_GAP = 24        # px: from the circle's axes to the class name columns
CLASS_COLOUR, HIGHLIGHT = "#555555", "#ff7f0e"


def step_groups(points: np.ndarray) -> list[tuple[str, list[int]]]:
    """Steps that land on one spot (a 2-cycle revisits two), each spot labelled once: ("0,2,…,10", [0, 2, ...])."""
    spots: dict[tuple, list[int]] = {}
    for k, xy in enumerate(points):
        spots.setdefault(tuple(np.round(xy, 3)), []).append(k)
    return [(",".join(map(str, ks)) if len(ks) <= 3 else f"{ks[0]},{ks[1]},…,{ks[-1]}", ks)
            for ks in spots.values()]


def _boxes(ax, xy: np.ndarray, radius: float) -> list:
    """Obstacle boxes (px) of markers of `radius` px at data points xy (K, 2), for place_labels."""
    p = ax.transData.transform(xy)
    return [(x - radius, y - radius, x + radius, y + radius) for x, y in p]


def _equal_limits(ax, xy: np.ndarray, margin: float = 0.08) -> None:
    """Limits that show every point with the same scale on both axes (distances drawn true)."""
    lo, hi = xy.min(0), xy.max(0)
    centre, span = (lo + hi) / 2, np.maximum(hi - lo, 1e-6) * (1 + 2 * margin)
    box = ax.get_window_extent()
    per_px = max(span[0] / box.width, span[1] / box.height)
    half = np.array([box.width, box.height]) * per_px / 2
    ax.set(xlim=(centre[0] - half[0], centre[0] + half[0]), ylim=(centre[1] - half[1], centre[1] + half[1]))


def latent_map_figure(trajectories: dict[str, torch.Tensor], class_embeddings: torch.Tensor,
                      blank: torch.Tensor, classnames: Sequence[str], caption: str = "",
                      max_landmarks: int = 16, step: int | None = None, narrow: bool = False) -> Figure:
    """2-D PCA map of the unit-sphere trajectories with class embeddings and the blank as landmarks.

    trajectories: name -> (T+1, D). The projection is fitted on every point shown, and both axes
    have one scale, so arrows between consecutive steps show the real order and size of the moves
    in that plane. Class landmarks are numbered squares listed in a key beside the map (below it on
    a phone), which says when only max_landmarks of the classes are shown; step numbers sit along
    each path; `step` rings that step on every path (the replay slider).
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

    fig = new_figure(narrow, MAP_HEIGHT)
    ax = fig.subplots()
    style(ax, "Latent trajectory (2-D PCA of unit embeddings)", "PC 1", "PC 2")
    square = dict(marker="s", color="#dddddd", mec=CLASS_COLOUR)
    items = [(Line2D([], [], ls="", ms=10, **square), f"{n}  {classnames[i]}")
             for n, i in enumerate(keep.tolist(), 1)]
    items.append((Line2D([], [], ls="", marker="*", ms=16, color="black"), 'blank "a photo of a ."'))
    paths = {name: proj(t) for name, t in trajs.items()}
    for (name, p), colour in zip(paths.items(), PATH_COLOURS):
        items.append((Line2D([], [], ls="", marker="o", ms=7, color=colour), f"{name} (steps 0-{len(p) - 1})"))
    if step is not None:
        items.append((Line2D([], [], ls="", marker="o", mfc="none", mec="black", ms=14), f"step {step} (replay)"))
    shown = None if len(keep) == classes.shape[0] else f"{len(keep)} of {classes.shape[0]} classes shown"
    cp, bp = proj(classes[keep]), proj(b)
    every = np.concatenate([cp, bp, *paths.values()])
    _equal_limits(ax, every)   # at a provisional size: the tick labels lay_out measures
    legend = key(fig, tuple(zip(*items)), narrow, ncol=1 if narrow or len(items) < 10 else 2, title=shown)
    lay_out(fig, [ax], caption=caption, **beside([legend], narrow), height=None if narrow else MAP_HEIGHT,
            panel=NARROW_MAP)

    _equal_limits(ax, every)
    ax.scatter(cp[:, 0], cp[:, 1], marker="s", s=30, color="#dddddd", edgecolors=CLASS_COLOUR, zorder=3)
    ax.scatter(bp[:, 0], bp[:, 1], marker="*", s=260, color="black", zorder=4)
    obstacles, steps = _boxes(ax, bp, 10), []
    for (name, p), colour in zip(paths.items(), PATH_COLOURS):
        ax.plot(p[:, 0], p[:, 1], "o", color=colour, ms=6, zorder=5)
        d = p[1:] - p[:-1]   # one arrow per step, in step order
        ax.quiver(p[:-1, 0], p[:-1, 1], d[:, 0], d[:, 1], angles="xy", scale_units="xy", scale=1, color=colour,
                  width=0.003, alpha=0.8, zorder=5)
        ring = step is not None and 0 <= step < len(p)
        if ring:
            ax.scatter([p[step, 0]], [p[step, 1]], s=300, facecolors="none", edgecolors=colour, linewidths=2,
                       zorder=7)
        obstacles += _boxes(ax, p, 11 if ring else 5) + line_boxes(ax, p)
        steps += [(*p[ks[0]], text, colour) for text, ks in step_groups(p)]
    # Each class's number is its landmark, on the square where it fits, else beside it with a leader line;
    # then the step numbers, clear of them.
    numbers = place_labels(ax, [(x, y, str(n), "black") for n, (x, y) in enumerate(cp, 1)], obstacles, on_point=True,
                           bbox=dict(boxstyle="square,pad=0.12", fc="#dddddd", ec=CLASS_COLOUR, lw=0.8))
    r = fig.canvas.get_renderer()
    place_labels(ax, steps, obstacles + [tuple(t.get_window_extent(r).extents) for t in numbers])
    return fig


def _class_columns(ax, fig, names: Sequence[str], xy: np.ndarray, lengths: np.ndarray, lim: float) -> int:
    """Each class's name in a column left or right of the circle, at its height there as far as the
    names let, with a leader line to its tick; when a column is full the classes furthest from the
    plane (shortest projection) are left out. Returns how many are labelled."""
    unit = ax.get_window_extent().height / (2 * lim)            # px per data unit
    r = fig.canvas.get_renderer()
    angle = np.arctan2(xy[:, 1], xy[:, 0])
    leaders, shown = [], 0
    for side in (1, -1):
        idx = [i for i in np.argsort(-lengths) if (1 if xy[i, 0] >= 0 else -1) == side]
        x = side * (lim + COLUMN_GAP / unit)
        texts = {i: ax.text(x, 0, wrap(names[i], 200), fontsize=TEXT, ha="left" if side > 0 else "right",
                            va="center", clip_on=False) for i in idx}
        size = {i: (texts[i].get_window_extent(r).height + 3) / unit for i in idx}
        while idx:
            pos = spread(np.sin(angle[idx]) * 1.04, np.array([size[i] for i in idx]), -lim, lim)
            if pos is not None:
                break
            texts.pop(idx.pop()).remove()
        for i, y in zip(idx, [] if not idx else pos):
            texts[i].set_y(y)
            leaders.append([1.04 * np.array([np.cos(angle[i]), np.sin(angle[i])]), (x - side * 4 / unit, y)])
        shown += len(idx)
    ax.add_collection(LineCollection(leaders, colors="#999999", lw=0.7))
    return shown


def _class_ring(ax, xy: np.ndarray, radius: float) -> list:
    """A phone's class labels: each class's number on a ring outside the circle, spread along it.
    Returns their boxes (px), obstacles for the labels inside."""
    unit = ax.get_window_extent().height / (2 * ax.get_ylim()[1])
    angle = np.arctan2(xy[:, 1], xy[:, 0])
    half = np.array([text_width(str(n)) / 2 + 4 for n in range(1, len(xy) + 1)])    # px
    pos = spread(angle, 2 * half / (radius * unit), -np.pi, np.pi)
    pos = angle if pos is None else pos
    boxes, leaders = [], []
    for n, (a, p) in enumerate(zip(angle, pos), 1):
        centre = radius * np.array([np.cos(p), np.sin(p)])
        ax.text(*centre, str(n), fontsize=TEXT, ha="center", va="center")
        leaders.append([1.04 * np.array([np.cos(a), np.sin(a)]), centre * (1 - 9 / (radius * unit))])
        boxes += _boxes(ax, centre[None], half[n - 1])
    ax.add_collection(LineCollection(leaders, colors="#999999", lw=0.7))
    return boxes


def _deg(a: float) -> str:
    """An angle in degrees with a true minus sign."""
    return f"{a:.1f}°".replace("-", "−")


def _bent(p0: np.ndarray, p1: np.ndarray, n: int = 20) -> np.ndarray:
    """(n, 2) points along matplotlib's arc3 curve from p0 to p1 (the axes have one scale in x and y)."""
    d = p1 - p0
    control = (p0 + p1) / 2 + BEND * np.array([d[1], -d[0]])
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) ** 2 * p0 + 2 * t * (1 - t) * control + t ** 2 * p1


def rotation_figure(embeddings: torch.Tensor, blank: torch.Tensor, class_embeddings: torch.Tensor,
                    classnames: Sequence[str], caption: str = "", *, step: int | None = None, narrow: bool = False,
                    step_size: float | None = None, name: str = "") -> Figure:
    """The purification drawn exactly, in the plane of the input u_0 and the blank (app/views/geometry.py).

    embeddings: a trajectory's (T+1, N, D) (sample 0 is drawn) or (T+1, D); blank (D,); class_embeddings
    (C, D). The unit circle, the blank's direction, every step's point, numbered, with an arrow to the
    next; the start's and step 1's angles to the blank; the turn per step (as atan(step_size) when the
    measured turns agree with it to 0.1°); each class direction projected into the plane, a tick on the
    circle named beside it (numbered, with a key below, on a phone); and how far the steps leave the
    plane. step: the replay's step, ringed with its angle. name: the trajectory's name for the notes.
    """
    plane = plane_coordinates(embeddings, blank, class_embeddings)
    pts, ang = plane.points.numpy(), plane.angles.numpy()
    cxy, clen = plane.classes.numpy(), plane.class_lengths.numpy()
    colour = PATH_COLOURS[0]
    fig = new_figure(narrow)
    ax = fig.subplots()
    style(ax, "The purification in the plane of the input and the blank", grid=False)
    ax.axis("off")
    lim = 1.3 if narrow else 1.12
    W = fig.bbox.width
    if narrow:
        sides = (0, 0)
    else:   # the class name columns beside the circle: as wide as their widest (wrapped) name
        left = [wrap(classnames[i], 200) for i in range(len(cxy)) if cxy[i, 0] < 0]
        right = [wrap(classnames[i], 200) for i in range(len(cxy)) if cxy[i, 0] >= 0]
        sides = tuple(max([text_width(line) for s in col for line in s.split("\n")], default=0) + COLUMN_GAP + 4
                      for col in (left, right))
    out = float(plane.out_of_plane.max()) if len(pts) > 1 else 0.0
    turns = rotation_text(plane.turns, step_size)
    lines = [f"{name + ': ' if name else ''}{turns[0].upper() + turns[1:]}."]
    if len(pts) > 1:
        past = " (past the blank: it overshoots)" if ang[0] * ang[1] < 0 else ""
        lines.append(f"Start {_deg(ang[0])} from the blank, step 1 {_deg(ang[1])}{past}.")
        if len(pts) > 2 and past and abs(ang[2] - ang[0]) < 0.05:
            lines.append("Step 2 brings it back to the start: a 2-cycle.")
    if step is not None and 0 <= step < len(pts):
        lines.append(f"Step {step} (replay): {_deg(ang[step])} from the blank.")
    lines.append("Every step stays in this plane." if out < 1e-6 else
                 f"Steps leave the plane by up to {out:.2g} of their length." if out < 0.005 else
                 f"Steps leave the plane by up to {out:.0%} of their length: points inside the circle are "
                 f"their projections.")
    lines.append("Ticks: each class's text direction projected into the plane (dots: the projection; nearer "
                 "the centre, further from the plane).")
    width, size = (W - 2 * PAD, TEXT) if narrow else (NOTES_WIDTH, LABEL)
    notes = block(fig, "\n".join(lines), width, size)
    below = [notes]
    if narrow:
        below.append(block(fig, "\n".join(f"{n}  {c}" for n, c in enumerate(classnames, 1)), width))
    lay_out(fig, [ax], caption=caption, **beside(below, narrow), height=None,
            panel=W if narrow else ROTATION_SIDE, square=True, sides=sides)
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim))

    ax.add_patch(Circle((0, 0), 1, fill=False, color="#888888", lw=1))
    ax.add_patch(FancyArrowPatch((0, 0), (1, 0), arrowstyle="-|>", mutation_scale=22, color="black", lw=2, zorder=4))
    ticks = np.stack([0.96 * cxy / np.maximum(clen, 1e-9)[:, None], 1.04 * cxy / np.maximum(clen, 1e-9)[:, None]], 1)
    ax.add_collection(LineCollection(ticks, colors=CLASS_COLOUR, lw=1.5))
    ax.scatter(cxy[:, 0], cxy[:, 1], s=12, color=CLASS_COLOUR, zorder=3)
    circle = np.radians(np.arange(0, 361, 2))
    obstacles = (_boxes(ax, pts, 13) + _boxes(ax, cxy, 4) + line_boxes(ax, np.c_[np.cos(circle), np.sin(circle)]) +
                 line_boxes(ax, np.array([[0.0, 0.0], [1.0, 0.0]]), 5))   # the points, the class dots, circle, blank
    if narrow:
        obstacles += _class_ring(ax, cxy, 1.17)
    else:
        shown = _class_columns(ax, fig, classnames, cxy, clen, lim)
        if shown < len(cxy):
            notes.set_text(notes.get_text() + "\n" + wrap(f"{shown} of {len(cxy)} classes named (those "
                                                               f"nearest the plane).", width, size))
    ax.plot(pts[:, 0], pts[:, 1], "o", color=colour, ms=8, zorder=6)
    done = set()
    for t in range(len(pts) - 1):   # each move once (a 2-cycle repeats two), curved so there and back both show
        move = (tuple(np.round(pts[t], 3)), tuple(np.round(pts[t + 1], 3)))
        if move not in done and move[0] != move[1]:
            done.add(move)
            ax.add_patch(FancyArrowPatch(pts[t], pts[t + 1], connectionstyle=f"arc3,rad={BEND}", arrowstyle="-|>",
                                         mutation_scale=18, color=colour, lw=1.6, shrinkA=6, shrinkB=6, zorder=5))
            obstacles += line_boxes(ax, _bent(pts[t], pts[t + 1]))
    items = [(0.55, 0.0, "blank", "black")]
    arcs = [(0, 0.3, "start", "#1f77b4"), (1, 0.45, "step 1", "#2ca02c")] if len(pts) > 1 else []
    if step is not None and 0 <= step < len(pts):
        arcs.append((step, 0.6, f"step {step}", HIGHLIGHT))
        ax.scatter(*pts[step], s=380, facecolors="none", edgecolors=HIGHLIGHT, linewidths=2.5, zorder=7)
    for t, rad, label, c in arcs:
        a = ang[t]
        ax.add_patch(Arc((0, 0), 2 * rad, 2 * rad, theta1=min(0, a), theta2=max(0, a), color=c, lw=2, zorder=3))
        items.append((rad * np.cos(np.radians(a / 2)), rad * np.sin(np.radians(a / 2)), f"{label}: {_deg(a)}", c))
        arc = np.radians(np.linspace(min(0, a), max(0, a), 30))
        obstacles += line_boxes(ax, rad * np.stack([np.cos(arc), np.sin(arc)], 1))
    items += [(*pts[ks[0]], text, colour) for text, ks in step_groups(pts)]
    place_labels(ax, items, obstacles)
    return fig
