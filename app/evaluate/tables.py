"""summary.json and table.md: clean and robust accuracy per setting, with 95% Wilson intervals."""
from __future__ import annotations

import json
import math
from pathlib import Path

from app.evaluate.config import EvalConfig
from app.attacks.gradients import vanishing

Z95 = 1.959963984540054   # the standard normal's 97.5% quantile


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials: (low, high) in [0, 1]."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def summarise(cfg: EvalConfig, lines: list[dict]) -> dict:
    """One row per setting, in the grid's order: counts, accuracies and intervals."""
    rows = []
    by_key: dict[str, list[dict]] = {}
    for ln in lines:
        by_key.setdefault(ln["setting"], []).append(ln)
    for s in cfg.settings():
        got = by_key.get(s.key, [])
        n = len(got)
        clean = sum(ln["clean_correct"] for ln in got)
        robust = sum(ln["correct"] for ln in got)
        rows.append({
            "setting": s.key, "defence": s.defence, "purify_step_size": s.purify_step_size,
            "purify": None if s.purify is None else s.purify.to_dict(),
            "attack": s.attack, "eps": s.eps, "threat_model": s.threat_model, "n": n,
            "clean_correct": clean, "robust_correct": robust,
            "clean_accuracy": clean / n if n else None, "clean_ci95": list(wilson(clean, n)),
            "robust_accuracy": robust / n if n else None, "robust_ci95": list(wilson(robust, n)),
            "exceeds_eps": sum(ln["exceeds_eps"] for ln in got),
            "mean_linf_255": sum(ln["linf_255"] for ln in got) / n if n else None,
            "vanishing_gradient_share": _share([ln["diagnostics"] for ln in got if ln.get("diagnostics")]),
        })
    return {"config": cfg.to_dict(), "fingerprint": cfg.fingerprint(), "rows": rows, "audit_flags": audit_flags(rows)}


def _share(diags: list[dict]) -> float | None:
    """The share of images whose attacker's gradient vanishes by check (a)'s rule (--diagnostics)."""
    return sum(vanishing(d) for d in diags) / len(diags) if diags else None


def audit_flags(rows: list[dict]) -> list[dict]:
    """The masking audit's batch checks (app/audit.py) on the table: (a) settings where the
    attacker's gradient vanishes (app.attacks.gradients.vanishing, the audit's rule) on at least half the
    images; (b) a threat model that attacks through the purification
    (official) whose robust accuracy lies above the adaptive or BPDA one by more than both 95%
    intervals allow (the intervals do not overlap). A transfer attack (undefended) is expected to
    be weaker and is not flagged."""
    flags = []
    for r in rows:
        share = r["vanishing_gradient_share"]
        if share is not None and share >= 0.5:
            flags.append({"check": "a", "setting": r["setting"],
                          "detail": f"{100 * share:.0f}% of the images get a vanishing gradient (check a)"})
    cells = {(r["defence"], r["purify_step_size"], r["attack"], r["eps"], r["threat_model"]): r for r in rows if r["n"]}
    for (d, eta, a, e, tm), r in cells.items():
        for exact in ("adaptive", "bpda"):
            other = cells.get((d, eta, a, e, exact))
            above = other is not None and r["robust_ci95"][0] > other["robust_ci95"][1]
            if tm not in (exact, "undefended") and above:
                flags.append({"check": "b", "setting": r["setting"],
                              "detail": f"robust accuracy {pct(r['robust_accuracy'])} under {tm} against "
                                        f"{pct(other['robust_accuracy'])} under {exact}"})
    return flags


def pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def cell(acc: float | None, ci) -> str:
    return "—" if acc is None else f"{pct(acc)} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def markdown(summary: dict) -> str:
    """The long table: one row per setting."""
    cfg = summary["config"]
    head = (f"Backbone `{cfg['backbone']}` ({cfg['precision']}), templates `{cfg['template_set']}`, "
            f"data `{cfg['data']}`, "
            f"attack steps {cfg['steps']}, batch {cfg['batch_size']}, seed {cfg['seed']}. "
            f"Accuracy with 95% Wilson intervals; eps in 1/255 for L-inf attacks.\n\n")
    out = ["| defence | attack | eps | threat model | n | clean | robust |", "|---|---|---|---|---|---|---|"]
    for r in summary["rows"]:
        out.append(f"| {r['setting'].split('|')[0]} | {r['attack']} | {r['eps']:g} | {r['threat_model']} | {r['n']} | "
                   f"{cell(r['clean_accuracy'], r['clean_ci95'])} | {cell(r['robust_accuracy'], r['robust_ci95'])} |")
    flags = summary.get("audit_flags") or []
    tail = "".join(f"\n- masking check ({f['check']}) flagged for `{f['setting']}`: {f['detail']}" for f in flags)
    return head + "\n".join(out) + "\n" + (f"\nMasking audit on the table:{tail}\n" if flags else "")


def pivot(summary: dict, attack: str, eps: float, threat_models: list[str]) -> str:
    """The measurements document's shape: one row per defence, clean then one column per threat model."""
    rows = [r for r in summary["rows"] if r["attack"] == attack and r["eps"] == eps]
    order: list[str] = []
    for r in rows:
        label = r["setting"].split("|")[0]
        if label not in order:
            order.append(label)
    out = ["| defence | clean | " + " | ".join(threat_models) + " |", "|---" * (len(threat_models) + 2) + "|"]
    for label in order:
        mine = {r["threat_model"]: r for r in rows if r["setting"].split("|")[0] == label}
        first = next(iter(mine.values()))
        cells = [cell(mine[t]["robust_accuracy"], mine[t]["robust_ci95"]) if t in mine else "—" for t in threat_models]
        out.append(f"| {label} | {cell(first['clean_accuracy'], first['clean_ci95'])} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def write(out: Path, cfg: EvalConfig, lines: list[dict], classnames) -> dict:
    summary = summarise(cfg, lines)
    summary["classes"] = len(classnames)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "table.md").write_text(markdown(summary))
    return summary
