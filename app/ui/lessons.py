"""The teacher's lessons on the page: each click shows the lesson's text, then its result and the one
view that proves it, together on one screen (the lesson stage, app/ui/sections.py).

A lesson is data (app/views/presets.py, LESSONS): settings, an action ("run" or "compare") and its proof
("images", "rotation" or "compare"). Its request is the page's own /run or /compare, with the
status streamed into the stage.
"""
from __future__ import annotations

import csv
import math

import gradio as gr
import pandas as pd

from app.views import export, report
from app.clip.models import TOY_BACKBONE
from app.views.presets import LESSONS, examples_for
from app.ui.form import RUN_OUTPUTS, run_outputs
from app.ui.server import downloads

# The stage's widgets, in the order stage callbacks return them.
STAGE = ("_stage", "_lesson_text", "_lesson_result", "_lesson_images", "_lesson_plot", "_lesson_step",
         "_lesson_table", "_lesson_files")
# What a run lesson fills once its request is done (after the stage's result and figure).
RUN_DONE = ("_lesson_result", "_lesson_images", "_lesson_plot", "_lesson_step", "_lesson_files")


def stage_start(title: str | None, text: str, proof: str | None, running: str) -> tuple:
    """The stage as a lesson starts: visible, its text, a running note, only its proof's widget shown."""
    return (gr.update(visible=True), f"**{title}.** {text}" if title else text, running,
            gr.update(visible=proof == "images", value=None), gr.update(visible=proof == "rotation", value=None),
            gr.update(visible=proof == "rotation", value=1), gr.update(visible=proof == "compare", value=None),
            gr.update(visible=False, value=None))


def cleared_results() -> tuple:
    """Every /run output emptied: a lesson that compares shows no earlier run's answers beside its own."""
    empty = dict(clean_label=None, adv_label=None, purified_label=None, clean_note="", adv_note="",
                 purified_note="", adv_image=None, pert_image=None, stats="", adv_download=None, prob_plot=None,
                 cos_plot=None, map_plot=None, json_file=None, csv_file=None, status="", result_state=None,
                 replay=0, replay_label=None, replay_note="", defence_image=gr.update(value=None, visible=False))
    return run_outputs(**empty)


def on_lesson(k: int):
    """The k-th lesson's click: its settings (in the order of its fields), then the stage; a compare
    lesson also clears the earlier results (RUN_OUTPUTS) and hides the page's compare panel."""
    lesson = LESSONS[k]
    running = ("⏳ Running the lesson: the same attack under each threat model the defence has…"
               if lesson.action == "compare" else "⏳ Running the lesson: one attack, then the purification…")

    def apply():
        stage = (*stage_start(lesson.title, lesson.text, lesson.proof, running), *headline_in_view())
        if lesson.action == "compare":
            return (*lesson.settings.values(), *stage, *cleared_results(), gr.update(visible=False))
        return (*lesson.settings.values(), *stage)
    apply.__name__ = f"lesson_{k + 1}"
    return apply


# Every action that starts a result opens the per-step probabilities (the headline plot) and empties
# the rotation view, which no RUN_OUTPUT clears: no figure of an earlier action stays in view.
HEADLINE = ("rot_plot", "_plot_tabs", "_plot_in_view")


def headline_in_view() -> tuple:
    """HEADLINE's values: the rotation view emptied, the probabilities' tab selected and drawn next."""
    return None, gr.Tabs(selected="prob_plot"), "prob_plot"


def lesson_outputs(k: int) -> tuple[str, ...]:
    """Names of what on_lesson(k) fills, after the lesson's settings."""
    return STAGE + HEADLINE + ((*RUN_OUTPUTS, "_compare_panel") if LESSONS[k].action == "compare" else ())


def _turns(result) -> list[float]:
    """Degrees turned by each purification step of the inspected trajectory (image 0)."""
    u = result.trajectory.embeddings[:, 0]
    u = u / u.norm(dim=-1, keepdim=True)
    cos = (u[1:] * u[:-1]).sum(-1).clamp(-1, 1)
    return [math.degrees(math.acos(float(c))) for c in cos]


def result_text(k: int, result) -> str:
    """The lesson's result in one or two lines, from the one Outcome (app/flows/scoring.py)."""
    proof = LESSONS[k].proof
    notes = report.outcome_notes(result)
    line = (f"**Clean:** {result.clean.label} · **attacked, bare CLIP:** {result.adversarial.label} · "
            f"**attacked, {report.defended(result)}:** {result.purified.label}  \n{notes['adv_note']} "
            f"{notes['purified_note']}")
    if proof == "rotation":
        turns = _turns(result)
        cos = result.trajectory.cos_to_blank[:, 0]
        turned = (f"{min(turns):.1f}°" if round(min(turns), 1) == round(max(turns), 1)
                  else f"{min(turns):.1f}°–{max(turns):.1f}°")   # one angle when every step turned the same
        line += (f"  \nEach step turned the embedding by {turned}; its cosine to the "
                 f"blank went {float(cos[0]):.2f} → {float(cos[1]):.2f} → {float(cos[2]):.2f} → … → "
                 f"{float(cos[-1]):.2f}.")
    return line


def on_lesson_done(k: int):
    """After a run lesson's request: (result, images, figure, step slider, files) for the stage."""
    lesson = LESSONS[k]

    def done(result, narrow):
        if result is None:   # the request was refused or cancelled: the status says why
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        files, missing = downloads(lambda folder: {**export.export(result, folder), "folder": folder})
        text = result_text(k, result) + (f"  \n{missing}" if missing else "")
        step = lesson.replay_from if lesson.replay_from is not None else result.trajectory.steps
        slider = gr.update(maximum=result.trajectory.steps, value=step) if lesson.proof == "rotation" else gr.skip()
        if files is None:   # a full or read-only temp folder: the lesson's text and figure, without files
            plot = report.figure(result, "rot_plot", step=step, narrow=bool(narrow)) if lesson.proof == "rotation" \
                else gr.skip()
            return text, gr.skip(), plot, slider, gr.update(value=None, visible=False)
        folder = files["folder"]
        paths = [str(files[key]) for key in ("clean", "adversarial", "perturbation", "json", "csv")]
        images = plot = gr.skip()
        if lesson.proof == "images":
            images = [(str(files["clean"]), f"clean: {result.clean.label}"),
                      (str(files["adversarial"]), f"attacked: {result.adversarial.label}"),
                      (str(files["perturbation"]), f"the change × {files['factor']:.0f}")]
        elif lesson.proof == "rotation":
            plot = report.figure(result, "rot_plot", step=step, narrow=bool(narrow))
            png = folder / "rotation.png"
            plot.savefig(png)
            paths.append(str(png))
        return text, images, plot, slider, gr.update(value=paths, visible=True)
    done.__name__ = f"lesson_{k + 1}_done"
    return done


def open_rotation(k: int):
    """After a rotation lesson: the page's plots open on the rotation view, at the lesson's step."""
    def show():
        return gr.Tabs(selected="rot_plot"), "rot_plot", LESSONS[k].replay_from
    show.__name__ = f"lesson_{k + 1}_rotation"
    return show


def on_stage_step(result, step, narrow):
    """The stage's step slider: the rotation view at that step."""
    if result is None:
        return gr.skip()
    return report.figure(result, "rot_plot", step=int(min(max(step, 0), result.trajectory.steps)),
                         narrow=bool(narrow))


def table_csv(table, name: str = "compare.csv") -> str | None:
    """Write a shown table (a DataFrame, or Gradio's {"headers", "data"}) as CSV; return its path."""
    if table is None:
        return None
    if isinstance(table, dict):
        table = pd.DataFrame(table.get("data") or [], columns=table.get("headers"))
    if len(table) == 0:
        return None
    def write(folder):
        table.to_csv(folder / name, index=False, quoting=csv.QUOTE_MINIMAL)
        return str(folder / name)
    path, _ = downloads(write)   # a full or read-only temp folder: the table shows, without its CSV
    return path


def on_compare_done(table):
    """After a comparison: its CSV behind the export button (shown)."""
    path = table_csv(table)
    return gr.update(value=path, visible=path is not None)


def rows_text(table) -> str:
    """The comparison in one line a row, readable where the table is not (a phone): who was fooled,
    and the share of the attacker's gradient that is exactly zero."""
    if isinstance(table, dict):
        table = pd.DataFrame(table.get("data") or [], columns=table.get("headers"))
    lines = []
    # The table names the defence compared by its label in its columns (comparison.compare_table).
    who = next((c.removeprefix("fooled ") for c in table.columns if c.startswith("fooled ") and "bare" not in c),
               "the defence")
    for _, row in table.iterrows():
        fooled = str(row[f"fooled {who}"]).split(" (")[0]   # "yes", "no" or "no verdict", before "(past eps)"
        verdict = {"yes": f"{who} **fooled** → {row[f'{who} (attacked)']}",
                   "no": f"{who} **not fooled** ({row[f'{who} (attacked)']})"}.get(fooled, fooled)
        lines.append(f"- **{row['threat model']}:** {verdict}; attacker's gradient exactly zero: "
                     f"**{row['gradient: exact zeros']}**")
    return "\n".join(lines)


def on_lesson_compare_done(table, caption):
    """After a compare lesson: one line a row above the caption, and the table's CSV among the files."""
    path = table_csv(table)
    if path is None:   # refused or cancelled: the caption says why
        return gr.skip(), gr.skip()
    return f"{rows_text(table)}\n\n{caption}", gr.update(value=[path], visible=True)


def paper_example(active: str) -> str:
    """The example the paper's protocol loads: the first one that fits the active backbone."""
    return examples_for(active == TOY_BACKBONE)[0][0]


# Seconds a Run of the paper's protocol takes on the bundled model, measured through the page's /run
# callback (python -m app.bench.paper) on a 2-core CPU (docs/measurements.md, "The paper's protocol on the page").
PAPER_RUN_S = {"cpu": 75}


def on_paper(active: str):
    """The paper's protocol: its widget values (PAPER_PRESET_FIELDS), an example that fits the active
    backbone, and the stage saying what was set, what to press and how long it takes."""
    from app.ui.audit_panel import PAPER_PRESET_FIELDS, paper_preset, paper_preset_note
    values = paper_preset()
    took = PAPER_RUN_S["cpu"]
    press = (f"\n\n**Now press Run** (below). With the bundled model it takes about {took} s on a 2-core CPU "
             f"(AutoAttack's two attacks of 100 steps each, through the purification); a GPU is far faster. "
             f"Progress shows beside the button.")
    return (*(values[k] for k in PAPER_PRESET_FIELDS), paper_example(active),
            *stage_start(None, paper_preset_note() + press, None, ""))
