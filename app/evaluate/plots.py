"""PNG plots of a summary: robust accuracy against eps, and one bar per threat model.

matplotlib Figure objects with the Agg canvas; the global pyplot state is never touched.
"""
from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _err(r: dict) -> tuple[float, float]:
    acc, (lo, hi) = r["robust_accuracy"], r["robust_ci95"]
    return max(100 * (acc - lo), 0.0), max(100 * (hi - acc), 0.0)   # float error at 0% and 100%


def accuracy_vs_eps(summary: dict) -> Figure:
    """One line per (defence, attack, threat model) over eps, with Wilson intervals."""
    fig = Figure(figsize=(6.4, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    lines: dict[str, list[dict]] = {}
    for r in summary["rows"]:
        if r["n"] and r["attack"] != "none":
            lines.setdefault(f"{r['setting'].split('|')[0]}, {r['attack']}, {r['threat_model']}", []).append(r)
    for label, rows in lines.items():
        rows = sorted(rows, key=lambda r: r["eps"])
        errs = list(zip(*[_err(r) for r in rows]))
        ax.errorbar([r["eps"] for r in rows], [100 * r["robust_accuracy"] for r in rows], yerr=errs,
                    marker="o", capsize=3, label=label)
    cfg = summary["config"]
    ax.set_xlabel("eps (1/255 for L-inf attacks)")
    ax.set_ylabel("robust accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{cfg['backbone']} ({cfg['precision']}), {cfg['steps']} attack steps", fontsize=9)
    if lines:
        ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def bars_per_threat_model(summary: dict) -> Figure:
    """At the largest eps of each attack: one group per threat model, one bar per defence."""
    fig = Figure(figsize=(6.4, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    rows = [r for r in summary["rows"] if r["n"] and r["attack"] != "none"]
    top = {}
    for r in rows:
        top[r["attack"]] = max(top.get(r["attack"], 0.0), r["eps"])
    rows = [r for r in rows if r["eps"] == top[r["attack"]]]
    tms = list(dict.fromkeys(r["threat_model"] for r in rows))
    series = list(dict.fromkeys(f"{r['setting'].split('|')[0]}, {r['attack']} {r['eps']:g}" for r in rows))
    width = 0.8 / max(len(series), 1)
    for j, name in enumerate(series):
        xs, ys, errs = [], [], []
        for i, tm in enumerate(tms):
            for r in rows:
                if f"{r['setting'].split('|')[0]}, {r['attack']} {r['eps']:g}" == name and r["threat_model"] == tm:
                    xs.append(i + (j - (len(series) - 1) / 2) * width)
                    ys.append(100 * r["robust_accuracy"])
                    errs.append(_err(r))
        ax.bar(xs, ys, width, yerr=list(zip(*errs)) if errs else None, capsize=2, label=name)
    ax.set_xticks(range(len(tms)), tms)
    ax.set_ylabel("robust accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title("robust accuracy per threat model (95% Wilson intervals)", fontsize=9)
    if series:
        ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def write(out: Path, summary: dict) -> None:
    accuracy_vs_eps(summary).savefig(out / "robust_vs_eps.png")
    bars_per_threat_model(summary).savefig(out / "threat_models.png")
