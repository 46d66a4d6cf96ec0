"""Sizes, text and layout for the figures of app/views/plots.py: drawn for a projector, legible on a phone.

Figures are drawn at dpi 72, so 1 pt = 1 px: a desktop figure is the page's plot panel wide (about
1,216 px at a 1440 px window), a phone's (`narrow`) 4.6 in = 331 px, and text is at least 14 pt on
both. Nothing is left to matplotlib's automatic layouts (constrained/tight layout redraw several
times): the caption, legends and notes are measured once with the figure's Agg renderer and the
axes placed around them, and labels inside the axes are placed where they overlap no other label.
"""
from __future__ import annotations

import textwrap
from functools import lru_cache
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties

WIDTH, NARROW_WIDTH = 16.8, 4.6   # inches at 72 dpi: the page's plot panel (1,210 px), a phone (331 px)
TEXT, LABEL, TITLE = 14, 16, 18   # points = px: ticks, legends, notes and captions; axis labels; titles
PAD, GAP = 8, 24                  # px: from the figure's edge; between blocks (panels, legend, notes)
PATH_COLOURS = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd"]   # one per trajectory / threat model
HEIGHT = 6.0            # inches: a desktop figure with one row of panels
KEY_WIDTH = 300         # px: a legend beside the panels wraps its labels to this
PANEL = 190             # px: the height of one stacked panel on a phone


def new_figure(narrow: bool = False, height: float = 6.0) -> Figure:
    """A white figure at the page's width (a phone's when narrow), with an Agg canvas to measure text on."""
    fig = Figure(figsize=(NARROW_WIDTH if narrow else WIDTH, height), dpi=72)
    FigureCanvasAgg(fig)
    return fig


_RENDERER = RendererAgg(8, 8, 72)   # text metrics at 72 dpi, shared by every figure


@lru_cache(maxsize=4096)
def text_width(s: str, size: float = TEXT) -> float:
    """The width in px of one line of text at 72 dpi (every figure's)."""
    return _RENDERER.get_text_width_height_descent(s, FontProperties(size=size), ismath=False)[0]


def wrap(s: str, width: float, size: float = TEXT) -> str:
    """s wrapped into lines of at most `width` px (measured)."""
    if text_width(s, size) <= width:
        return s
    chars = max(8, int(width / max(text_width(s, size) / max(len(s), 1), 1)))
    while True:
        text = textwrap.fill(s, chars, break_on_hyphens=False)
        if chars <= 8 or all(text_width(line, size) <= width for line in text.split("\n")):
            return text
        chars -= 2


def extent(fig: Figure, artist):
    """The artist's box on the canvas, in px."""
    return artist.get_window_extent(fig.canvas.get_renderer())


def legend(fig: Figure, handles, labels: Sequence[str], ncol: int = 1, title: str | None = None):
    """A frameless legend, placed later by lay_out (its top-left corner at a point)."""
    return fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(0, 1), borderaxespad=0, frameon=False,
                      fontsize=TEXT, title=title, title_fontsize=TEXT, ncol=ncol, handlelength=1.6,
                      columnspacing=1.4, alignment="left")


def block(fig: Figure, text: str, width: float, size: float = TEXT):
    """A paragraph of notes, wrapped to `width` px, placed later by lay_out."""
    paragraphs = [wrap(p, width, size) for p in text.split("\n")]
    return fig.text(0, 1, "\n".join(paragraphs), fontsize=size, ha="left", va="top", linespacing=1.35)


def _put(fig: Figure, artist, x: float, y: float) -> None:
    """Put a legend's or a text's top-left corner at (x, y) px from the figure's bottom-left."""
    w, h = fig.bbox.width, fig.bbox.height
    if hasattr(artist, "set_bbox_to_anchor"):
        artist.set_bbox_to_anchor((x / w, y / h), transform=fig.transFigure)
    else:
        artist.set_position((x / w, y / h))


def lay_out(fig: Figure, axes: Sequence, rows: int = 1, cols: int = 1, caption: str = "", note=None, *,
            right: Sequence = (), below: Sequence = (), height: float | None = None, panel: float = 170,
            square: bool = False, sides: tuple[float, float] = (0, 0)) -> None:
    """Place the caption on top, then `note` (a block), then the axes grid (row-major) with `right`
    (legends or blocks, stacked) beside it and `below` under it.

    height: the figure's height in inches (desktop), or None: as tall as its content, each panel
    `panel` px high (phone). square: the axes are square (a circle, a map). sides: px kept free
    left and right of each axes beyond its own decorations (labels drawn outside it).
    """
    r = fig.canvas.get_renderer()
    W = fig.bbox.width
    top = PAD
    if caption:
        title = fig.suptitle(wrap(caption, W - 2 * PAD), fontsize=TEXT, x=PAD / W, ha="left", va="top")
        top += extent(fig, title).height + 10
    note_h = extent(fig, note).height + 10 if note is not None else 0
    right_w = max([extent(fig, a).width for a in right], default=-GAP) + GAP
    below_h = [extent(fig, a).height for a in below]
    # Decorations (titles, tick and axis labels) of each axes, measured once at a provisional place.
    for ax in axes:
        ax.set_position([0.3, 0.3, 0.4, 0.4])
    # for_layout_only: a title wider than its axes does not narrow it (titles are wrapped to the figure).
    pads = np.array([[b.x0 - t.x0, t.x1 - b.x1, b.y0 - t.y0, t.y1 - b.y1] for ax in axes
                     for b, t in [(ax.get_window_extent(r), ax.get_tightbbox(r, for_layout_only=True))]])
    pads = pads.reshape(rows, cols, 4) + 2   # px of slack: tick labels may change a little with the final limits
    pads[..., :2] += sides
    wl, wr = pads[..., 0].max(0), pads[..., 1].max(0)            # (cols,) per column
    hb, ht = pads[..., 2].max(1), pads[..., 3].max(1)            # (rows,) per row
    aw = (W - 2 * PAD - right_w - (wl + wr).sum() - GAP * (cols - 1)) / cols
    grid_top = top + note_h
    if height is not None:
        H = height * 72
        ah = (H - grid_top - PAD - sum(below_h) - GAP * len(below) - (hb + ht).sum() - GAP * (rows - 1)) / rows
    else:
        ah = min(aw, panel) if square else panel
    if square:
        aw = ah = min(aw, ah)
    grid_h = (hb + ht).sum() + rows * ah + GAP * (rows - 1)
    if height is None:
        H = grid_top + grid_h + sum(below_h) + GAP * len(below) + PAD
    fig.set_size_inches(W / 72, H / 72)
    if caption:
        title.set_y(1 - PAD / H)
    if note is not None:
        _put(fig, note, PAD, H - top)
    y = H - grid_top
    for i in range(rows):
        y -= ht[i]
        x = PAD
        for j in range(cols):
            x += wl[j]
            axes[i * cols + j].set_position([x / W, (y - ah) / H, aw / W, ah / H])
            x += aw + wr[j] + GAP
        y -= ah + hb[i] + GAP
    x, yr = PAD + (wl + wr).sum() + cols * aw + GAP * cols, H - grid_top
    for a in right:
        _put(fig, a, x, yr)
        yr -= extent(fig, a).height + GAP / 2
    for a, h in zip(below, below_h):
        _put(fig, a, PAD, y)
        y -= h + GAP


def style(ax, title: str = "", xlabel: str = "", ylabel: str = "", grid: bool = True) -> None:
    """Titles, axis labels and ticks at their projector sizes; the title padded clear of the top tick label."""
    ax.tick_params(labelsize=TEXT)
    if title:   # wrapped to the figure's width, less the tick and axis labels beside a panel
        ax.set_title(wrap(title, ax.figure.bbox.width - 2 * PAD - 90, TITLE), fontsize=TITLE, pad=14)
    ax.set_xlabel(xlabel, fontsize=LABEL)
    ax.set_ylabel(ylabel, fontsize=LABEL)
    if grid:
        ax.grid(alpha=0.3)


def key(fig: Figure, ax_or_items, narrow: bool, ncol: int = 1, title: str | None = None):
    """A legend of an axes' labelled artists (or of (handles, labels)), its labels wrapped to fit:
    beside the panels on a desktop, below them on a phone."""
    handles, labels = ax_or_items if isinstance(ax_or_items, tuple) else ax_or_items.get_legend_handles_labels()
    width = (NARROW_WIDTH * 72 - 2 * PAD - 40) / ncol if narrow else KEY_WIDTH
    return legend(fig, handles, [wrap(label, width) for label in labels], ncol, title)


def beside(artists: list, narrow: bool) -> dict:
    """lay_out's keyword for what goes beside the panels: right of them, or below them on a phone."""
    return {"below": artists} if narrow else {"right": artists}


def grid(narrow: bool, panels: int) -> tuple[Figure, list, int, int]:
    """A figure with its panels side by side, or stacked on a phone: (fig, axes, rows, cols)."""
    fig = new_figure(narrow, HEIGHT)
    rows, cols = (panels, 1) if narrow else (1, panels)
    return fig, list(fig.subplots(rows, cols, squeeze=False).ravel()), rows, cols


def mark_step(axes: Sequence, step: int | None) -> None:
    """A dotted line at the replay step, labelled in a band of headroom added above the data."""
    if step is None:
        return
    for ax in axes:
        lo, hi = ax.get_ylim()
        f = (TEXT + 12) / ax.get_window_extent().height          # the band's share of the axes' height
        ax.set_ylim(lo, hi + (hi - lo) * f / (1 - f))
        ax.axvline(step, color="black", lw=1.2, ls=":", alpha=0.8)
        x0, x1 = ax.get_xlim()
        left = step > (x0 + x1) / 2   # left of the line in the right half, so it stays inside the axes
        ax.annotate(f"step {step}", (step, 1.0), xycoords=("data", "axes fraction"), xytext=(-4 if left else 4, -4),
                    textcoords="offset points", fontsize=TEXT, ha="right" if left else "left", va="top")


def spread(want: np.ndarray, size: np.ndarray, lo: float, hi: float) -> np.ndarray | None:
    """1-D label positions: centres near `want`, at least (size_i + size_j) / 2 apart, within [lo, hi];
    None when they cannot fit. Colliding labels move apart as a group centred on where they want to be."""
    if size.sum() > hi - lo:
        return None
    order = np.argsort(want)
    w, s = want[order], size[order]

    def stack(first: int, last: int) -> np.ndarray:   # centres of labels first..last stacked, centred on their wishes
        above = np.cumsum(s[first:last + 1]) - s[first:last + 1] / 2       # each centre above the stack's bottom
        return np.mean(w[first:last + 1] - above) + above

    groups: list[list[int]] = []                       # [first, last] runs of sorted labels stacked together
    for k in range(len(w)):
        groups.append([k, k])
        while len(groups) > 1 and stack(*groups[-2])[-1] + s[groups[-2][1]] / 2 > \
                stack(*groups[-1])[0] - s[groups[-1][0]] / 2:
            groups[-2:] = [[groups[-2][0], k]]
    p = np.concatenate([stack(*g) for g in groups])
    # Into [lo, hi], then pushed apart once each way (the groups above are apart already).
    p = np.clip(p, lo + s / 2, hi - s / 2)
    for k in range(1, len(p)):
        p[k] = max(p[k], p[k - 1] + (s[k - 1] + s[k]) / 2)
    p[-1] = min(p[-1], hi - s[-1] / 2)
    for k in range(len(p) - 2, -1, -1):
        p[k] = min(p[k], p[k + 1] - (s[k] + s[k + 1]) / 2)
    out = np.empty(len(w))
    out[order] = p
    return out


# Candidate spots for a label around its point: eight directions (below-left first) at six distances (x gap).
DIRECTIONS = np.array([(-1, -1), (1, -1), (-1, 1), (1, 1), (0, -1), (0, 1), (-1, 0), (1, 0)] * 6, float)
DISTANCES = np.repeat([1, 3, 6, 10, 15, 22], 8)


def place_labels(ax, items: Sequence[tuple], obstacles: Sequence = (), gap: float = 5, margin: float = 3,
                 on_point: bool = False, **text) -> list:
    """Greedy labels inside the axes: each (x, y, text, colour) item is written next to its data point
    (x, y) (on it first, with on_point: the label is the marker), at the first candidate spot where its
    box, `margin` px wider all round, overlaps no label placed before and no obstacle box (px: x0, y0,
    x1, y1), inside the axes (else where it overlaps least); a label pushed away gets a leader line.
    `text`: more Text properties. Returns the texts. The axes' limits must be final."""
    r, bounds = ax.figure.canvas.get_renderer(), ax.get_window_extent()
    taken = np.array(obstacles, float).reshape(-1, 4)
    directions, distances = (np.vstack([[0, 0], DIRECTIONS]), np.r_[0, DISTANCES]) if on_point else \
        (DIRECTIONS, DISTANCES)
    out, leaders, colours = [], [], []
    for x, y, s, colour in items:
        label = ax.text(x, y, s, fontsize=TEXT, color=colour, ha="center", va="center", zorder=8, **text)
        box = label.get_window_extent(r)
        w, h = box.width + 2 * margin, box.height + 2 * margin
        anchor = ax.transData.transform((x, y))
        centres = anchor + directions * (distances[:, None] * gap + np.array([w, h]) / 2)   # (K, 2)
        cands = np.concatenate([centres - (w / 2, h / 2), centres + (w / 2, h / 2)], 1)    # (32, 4)
        outside = np.maximum.reduce([bounds.x0 - cands[:, 0], cands[:, 2] - bounds.x1, bounds.y0 - cands[:, 1],
                                     cands[:, 3] - bounds.y1, np.zeros(len(cands))])
        cost = 1e6 * outside + _overlap(cands, taken).sum(1)
        k = int(np.argmax(cost == 0)) if (cost == 0).any() else int(np.argmin(cost))
        label.set_position(ax.transData.inverted().transform(centres[k]))
        if distances[k] > 3:   # from the point to the label box's edge
            v = anchor - centres[k]
            edge = centres[k] + v * min(w / 2 / max(abs(v[0]), 1e-9), h / 2 / max(abs(v[1]), 1e-9))
            leaders.append(ax.transData.inverted().transform([anchor - 3 * v / np.hypot(*v), edge]))
            colours.append(colour)
        taken = np.vstack([taken, cands[k]])
        out.append(label)
    if leaders:
        ax.add_collection(LineCollection(leaders, colors=colours, lw=0.8, zorder=7))
    return out


def line_boxes(ax, xy: np.ndarray, radius: float = 3, every: float = 6) -> list:
    """Obstacle boxes (px) along a polyline of data points xy (K, 2), one each `every` px, for place_labels."""
    p = ax.transData.transform(xy)
    seg = np.hypot(*np.diff(p, axis=0).T)
    t = np.concatenate([[0], np.cumsum(seg)])
    s = np.linspace(0, t[-1], max(2, int(t[-1] / every) + 1))
    q = np.stack([np.interp(s, t, p[:, 0]), np.interp(s, t, p[:, 1])], 1)
    return [(x - radius, y - radius, x + radius, y + radius) for x, y in q]


def _overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(M, K) overlap areas in px² of boxes a (M, 4) with boxes b (K, 4), each (x0, y0, x1, y1)."""
    a, b = a[:, None], b[None]
    w = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0])
    h = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1])
    return np.clip(w, 0, None) * np.clip(h, 0, None)
