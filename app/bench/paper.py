"""How long a Run of the paper's protocol takes on the bundled model, as the page's button runs it
(the lesson "The paper's protocol" quotes it: PAPER_RUN_S in app/ui/lessons.py).

    python -m app.bench.paper --json

The page's values after the preset (AutoAttack-custom, L-inf 4/255, 100 steps, official, fp16, the
80 templates, T = 10, eta = 30, the batch-coupled norm), its example and the toy model's 16 class
names, through the /run callback (no browser): the wall time of the whole stream.
"""
from __future__ import annotations

import argparse
import time

import torch

from app.bench import report


def paper_run_seconds() -> dict:
    from app.views.presets import default_classnames, examples_for
    from app.ui import callbacks
    from app.ui.audit_panel import PAPER_PRESET_FIELDS, paper_preset
    from app.ui.form import FORM, RUN_OUTPUTS
    values = paper_preset()
    form = {k: values[k] for k in PAPER_PRESET_FIELDS if k in FORM}
    form.update(image=examples_for(True)[0][0], backbone="toy-shapes", classnames=default_classnames("toy-shapes"))
    t = time.perf_counter()
    out = list(callbacks.run_demo(**form))
    wall = time.perf_counter() - t
    return {"paper_run_s": round(wall, 1), "threads": torch.get_num_threads(),
            "status": dict(zip(RUN_OUTPUTS, out[-1]))["status"], "backbone": "toy-shapes",
            "settings": f"{form['attack']} L-inf {form['eps']:g}/255, {form['steps']} steps, {form['threat_model']}, "
                        f"{form['precision']}, {form['template_set']} templates, 16 classes"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="only the JSON line")
    report(paper_run_seconds(), ap.parse_args().json)


if __name__ == "__main__":
    main()
