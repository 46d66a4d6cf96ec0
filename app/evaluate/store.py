"""The run's folder: config.json (the fingerprint a resume must match) and results.jsonl (one
line per image and setting, appended as it is computed; a line cut by a kill is dropped)."""
from __future__ import annotations

import json
from pathlib import Path

from app.errors import CLIPureError
from app.evaluate.config import EvalConfig

RESULTS, CONFIG = "results.jsonl", "config.json"


def read_results(path: Path) -> list[dict]:
    """Every complete line (a line cut by a kill mid-write is dropped)."""
    if not path.exists():
        return []
    lines = []
    for raw in path.read_text().splitlines():
        try:
            lines.append(json.loads(raw))
        except json.JSONDecodeError:
            pass
    return lines


def completed(lines: list[dict], batch_sizes: dict[int, int]) -> tuple[set, list[dict]]:
    """{(batch, setting key)} done in full, and the lines of those (partial groups are redone)."""
    count: dict[tuple, int] = {}
    for ln in lines:
        count[(ln["batch"], ln["setting"])] = count.get((ln["batch"], ln["setting"]), 0) + 1
    done = {k for k, c in count.items() if c == batch_sizes.get(k[0], -1)}
    return done, [ln for ln in lines if (ln["batch"], ln["setting"]) in done]


def prepare_out(cfg: EvalConfig, out: Path, batch_sizes: dict[int, int]) -> set:
    """Check the folder against the config (refuse a changed one), drop partial groups, and
    return the done (batch, setting key) pairs."""
    out.mkdir(parents=True, exist_ok=True)
    cfg_path, res_path = out / CONFIG, out / RESULTS
    if cfg_path.exists():
        saved = json.loads(cfg_path.read_text())
        if saved.get("fingerprint") != cfg.fingerprint():
            changed = ", ".join(cfg.changed_fields(saved.get("config", {}))) or "unknown fields"
            raise CLIPureError(f"{out} holds results of a different configuration (changed: {changed}); "
                               f"use another --out or delete {cfg_path.name} and {res_path.name} there.")
    elif res_path.exists() and res_path.stat().st_size:
        raise CLIPureError(f"{res_path} exists without its {CONFIG}, so it cannot be resumed safely; "
                           f"use another --out.")
    cfg_path.write_text(json.dumps({"fingerprint": cfg.fingerprint(), "config": cfg.to_dict()}, indent=1) + "\n")
    lines = read_results(res_path)
    done, keep = completed(lines, batch_sizes)
    if len(keep) != len(lines):      # rewrite without the groups a kill cut short
        tmp = res_path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(ln) + "\n" for ln in keep))
        tmp.replace(res_path)
    return done
