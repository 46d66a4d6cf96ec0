"""Endpoints: plain functions from widget values (app/ui/form.py) to engine calls, and from results
to widget values. The masking audit and the paper preset live in app/ui/audit_panel.py, the page's
own events in app/ui/events.py.
"""
from __future__ import annotations

import time
from pathlib import Path

import gradio as gr

from app.views import comparison, export, report
from app.common.errors import CLIPureError
from app.flows.pipeline import classify, compare_threat_models, result_of, run
from app.defences import trajectory_steps
from app.common.streaming import in_thread
from app.attacks.threat_models import THREAT_MODELS
from app.ui.hosting import gpu
from app.ui.server import downloads
from app.ui.form import (
    COMMON,
    FORM,
    PRECISION,
    PURIFY_API,
    Form,
    cancellable,
    endpoint,
    gpu_seconds,
    progress_text,
    run_outputs,
    user_errors,
)

TOP_K = 5
STREAM_PLOT_INTERVAL_S = 0.5   # streamed plots redraw at most this often; the final draw always happens
STREAM_STEP_INTERVAL_S = 0.05  # at most 20 updates a second while streaming; the first and last always


# --- endpoints ------------------------------------------------------------------------------

@gpu(duration=gpu_seconds(FORM))
@user_errors
@endpoint(FORM)
def run_demo(form: Form):
    """Classify, attack, purify; streams progress and each purification step."""
    pcfg = form.purify_config()
    shown = []   # set once this request has put progress in the status line
    try:
        yield from _run_stream(form, pcfg, shown)
    except CLIPureError as e:
        # The refusal's sentence in the status line (the toast adds to it), where it replaces any progress
        # bar, and the results below marked as an earlier request's, so nothing stale looks current.
        yield run_outputs(status=refused_status(str(e)))
        raise


def _run_stream(form: Form, pcfg, shown: list):
    started = time.monotonic()
    names, steps, last_draw, last_status, last_yield = [], [], None, 0.0, 0.0
    for event in run(form.request(), form.attack_config(), pcfg):
        names = event.classnames or names
        now = time.monotonic()
        if event.phase == "prepare":   # validation comes first: a refused request shows no progress at all
            continue
        if event.phase in ("clean", "attack", "attack-step", "heartbeat"):
            if now - last_status >= 0.1 or event.phase != "attack-step":   # at most 10 progress messages a second
                last_status = now
                shown.append(True)
                yield run_outputs(status=progress_text(event.fraction, event.message))
        elif event.phase == "purify-adv":
            s = event.step
            steps.append(s)
            last_draw = last_draw or now   # fast purifications finish before any redraw
            if s.step not in (0, trajectory_steps(pcfg)) and now - last_yield < STREAM_STEP_INTERVAL_S:
                continue
            last_yield = now
            top1 = names[int(s.top1[0])]
            update = dict(purified_label=report.step_prediction(s, names).top(TOP_K, names),
                          status=progress_text(event.fraction, f"{event.message}, "
                                               f"{report.step_measure(s.cos_to_blank, s.prior_loss)}, top-1 {top1}"))
            if now - last_draw >= STREAM_PLOT_INTERVAL_S:
                update["prob_plot"] = report.streamed_figure(steps, names, TOP_K)   # only the plot in view
                last_draw = time.monotonic()
            shown.append(True)
            yield run_outputs(**update)
        elif event.phase == "done":
            yield final_outputs(event.result, time.monotonic() - started)


def final_outputs(r, wall_s: float | None = None) -> tuple:
    for w in r.warnings:
        gr.Warning(w)
    files, missing = downloads(lambda folder: export.export(r, folder))
    # Only the plot in view is drawn (the Probabilities tab after a run); the page draws another
    # when its tab is opened (events.on_plot_tab), so a request does not pay for figures unseen.
    f_probs = report.figure(r, "prob_plot", TOP_K)
    f_cos = f_map = None
    return run_outputs(
        clean_label=r.clean.top(TOP_K, r.classnames),
        adv_label=r.adversarial.top(TOP_K, r.classnames),
        purified_label=r.purified.top(TOP_K, r.classnames),
        **report.outcome_notes(r), **file_outputs(files),
        stats=report.stats_markdown(r, export.amplification(r.x, r.x_adv)),
        prob_plot=f_probs, cos_plot=f_cos, map_plot=f_map,
        status=done_status(r, wall_s) + (f" {missing}" if missing else ""),
        result_state=r, replay=r.trajectory.steps,
        replay_label=r.trajectory.prediction(-1, r.classnames).top(TOP_K, r.classnames),
        replay_note=report.step_markdown(r, r.trajectory.steps),
    )


def file_outputs(files: dict | None) -> dict:
    """The /run outputs made from the request's files (export.export); all empty when the temporary
    folder could not take them (the status says why)."""
    def path(key):
        return str(files[key]) if files and key in files else None
    defended = path("defended")
    return dict(adv_image=path("adversarial"), pert_image=path("perturbation"), adv_download=path("adversarial"),
                json_file=path("json"), csv_file=path("csv"),
                defence_image=gr.update(value=defended, visible=True) if defended else gr.update(value=None, visible=False))


def refused_status(sentence: str) -> str:
    return f"**Not run:** {sentence} Anything shown below is from an earlier request."


def done_status(r, wall_s: float | None) -> str:
    """The status line after a run: wall time, the verdict in words, and any caveat."""
    took = f"{wall_s:.1f} s" if wall_s is not None else f"{r.timings['total']:.1f} s (engine)"
    text = f"**Done in {took}.**"
    if report.unknown_words_notice(r) is not None:
        text += " No attack verdict: the model does not know these class names (see below)."
    elif r.outcome is not None:
        who = report.defended(r)
        text += (f" Attack on bare CLIP: **{'succeeded' if r.outcome.fooled_clip else 'failed'}**; "
                 f"on {who}: **{'succeeded' if r.outcome.fooled_defence else 'failed'}**")
        changed = report.clean_change(r)
        text += "." if changed is None else (f", but {who} had already changed the clean answer ({changed})" +
                                             (", and the attack left it there." if not r.outcome.fooled_defence
                                              else "."))
    if r.meaningless:
        text += " Random weights: the predictions are MEANINGLESS."
    return text


@gpu(duration=gpu_seconds(FORM, threat_models=len(THREAT_MODELS)))
@user_errors
@endpoint(FORM)
def compare_demo(form: Form):
    """The same attack under every threat model the defence has; one table row each. Streams its progress
    ("row 2/4: official") in the caption; the last value is (table, caption)."""

    def work(say):
        return compare_threat_models(form.request(), form.attack_config(), form.purify_config(),
                                     on_progress=lambda f, m: say((f, m)))
    last = 0.0
    for kind, value in in_thread(work, "clipure-compare"):
        if kind == "done":
            yield compare_outputs(value)
        elif kind == "progress" and time.monotonic() - last >= 0.1:   # at most 10 messages a second
            last = time.monotonic()
            yield gr.skip(), progress_text(value[0], f"Compare: {value[1]}")
        elif kind == "tick":   # a heartbeat, so a cancel can close the stream
            yield gr.skip(), gr.skip()


def compare_outputs(results) -> tuple:
    """(table, caption) of a comparison: the clean answer, what L-inf counts, what ran."""
    cap = report.caption(results[0], threat_model="each row")
    return (comparison.compare_table(results),
            f"Clean prediction: **{results[0].clean.label}**. {comparison.RANDOM_START_NOTE} <sub>{cap}</sub>")


@gpu(duration=gpu_seconds(COMMON + PRECISION))
@user_errors
@cancellable()
@endpoint(COMMON + PRECISION)
def classify_api(form: Form) -> dict:
    """Bare zero-shot CLIP: the label and the top class probabilities."""
    pred, prep = classify(form.request())
    return {"label": pred.label, "confidences": pred.top(TOP_K, prep.classnames), "backbone": prep.backbone.name,
            "meaningless": prep.backbone.spec.meaningless, "classnames": prep.classnames, "warnings": prep.warnings}


@gpu(duration=gpu_seconds(FORM))
@user_errors
@cancellable(outputs=3)
@endpoint(FORM)
def attack_api(form: Form):
    """Attack only: the adversarial PNG, the clean PNG at model resolution, and the statistics."""
    r = result_of(run(form.request(), form.attack_config(), form.purify_config()))
    files, missing = downloads(lambda folder: export.export(r, folder))
    stats = export.to_dict(r, embeddings=False)
    stats.pop("trajectory")
    if missing:   # the statistics still answer; the sentence says why the images do not
        stats["warnings"] = [*stats["warnings"], missing]
        return None, None, stats
    return str(files["adversarial"]), str(files["clean"]), stats


@gpu(duration=gpu_seconds(FORM))
@user_errors
@cancellable(outputs=2)
@endpoint(FORM)
def run_api(form: Form):
    """/run for API clients: one named result (what the page shows, as data) and its files (the
    figures as PNG, the images, the JSON record and the CSV trajectory)."""
    r = result_of(run(form.request(), form.attack_config(), form.purify_config()))
    files, missing = downloads(lambda folder: {**export.export(r, folder), **figure_files(r, folder)})
    return run_result(r, files, missing), [str(v) for k, v in (files or {}).items() if k != "factor"]


def figure_files(r, folder) -> dict:
    """Every figure the page draws for this defence, as PNG: {figure name: path}."""
    out = {}
    for name in report.drawn(r):
        fig = report.figure(r, name, TOP_K)
        out[name] = folder / f"{name.removesuffix('_plot')}.png"
        fig.savefig(out[name], format="png")
    return out


def run_result(r, files: dict | None, missing: str | None) -> dict:
    """What /run answers by API: the predictions (confidences {class: p}, as /classify), the verdict,
    the trajectory, the record, and each file by name (None when the temp folder refused them)."""
    record = export.to_dict(r, embeddings=False)
    names = r.classnames

    def prediction(p):
        return {"label": p.label, "confidences": p.top(TOP_K, names)}
    predictions = {"clean": prediction(r.clean), "clean_defended": prediction(r.clean_purified)}
    if r.attack is not None:
        predictions.update(attacked=prediction(r.adversarial), attacked_defended=prediction(r.purified))
    return {"predictions": predictions, "defence": record["defence"],
            "verdict": {k: record.get(k) for k in ("attack_succeeded", "defence_changed_clean", "verdict_meaningful",
                                                    "exceeds_eps", "attack_failed", "caveats")},
            "status": done_status(r, None), "trajectory": record.pop("trajectory"), "record": record,
            "files": None if files is None else {k: Path(v).name for k, v in files.items() if k != "factor"},
            "warnings": [*r.warnings, *([missing] if missing else [])]}


@gpu(duration=gpu_seconds(PURIFY_API))
@user_errors
@cancellable()
@endpoint(PURIFY_API)
def purify_api(form: Form) -> dict:
    """Purify the clean image's embedding: the whole trajectory with per-step probabilities."""
    r = result_of(run(form.request(), None, form.purify_config()))
    return export.to_dict(r, embeddings=False)
