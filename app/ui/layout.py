"""The page: gr.Blocks layout and wiring only. Callbacks live in app/ui/callbacks.py, the sections'
widgets in app/ui/sections.py, the lessons' stage in app/ui/lessons.py.

Inputs are collected by FORM name and outputs by RUN_OUTPUTS name, so the wiring of every
endpoint is derived from those two lists and cannot drift from the callbacks.
"""
from __future__ import annotations

import os
from pathlib import Path

import gradio as gr

from app.clip import models
from app.ui import server
from app.clip.fallback import load_default
from app.common.limits import LIMITS
from app.clip.models import load_backbone
from app.views.presets import LESSONS, default_classnames
from app.views.report import PLOTS
from app.ui import audit_panel as ap
from app.ui import callbacks as cb
from app.ui import events as ev
from app.ui import form as fm
from app.ui import lessons as ls
from app.ui import sections
from app.ui.components import lenient_numbers
from app.ui.page import (
    CSS,
    NARROW_JS,
    PAGE_JS,
    SCROLL_TO_AUDIT,
    SCROLL_TO_LESSON,
    SCROLL_TO_STATUS,
    save_image_js,
)
from app.flows.warm import WarmItem, warm_start

HOW_IT_WORKS = (Path(__file__).resolve().parent.parent / "how_it_works.md").read_text()


def start_templates(backbone: str) -> str:
    """The template set the page starts on. The 80-template ensemble costs ~800 text-encoder passes
    the first time (about 26 s for 10 classes with ViT-B/32 on 2 CPU cores), so CPU machines start
    on the single template."""
    return "ensemble" if load_backbone(backbone).device.type == "cuda" else "single"


def warm_items(backbone: str) -> list[WarmItem]:
    """What a request can ask for without touching the disk: the page's start, and every lesson."""
    start = WarmItem(backbone, default_classnames(backbone), start_templates(backbone))
    return [start] + [WarmItem(s["backbone"], s["classnames"], s["template_set"], s["precision"])
                      for s in (lesson.settings for lesson in LESSONS)]


# The queue's two lanes (Gradio concurrency ids). Heavy work (an attack, a purification, a
# comparison, an audit) shares the model and the CPU/GPU, so it runs one request at a time. Light
# work (/classify: one forward pass; /paper_preset; every page event: the replay, a plot tab, a
# lesson's settings) has its own lane and never waits behind it.
HEAVY = dict(concurrency_id="engine", concurrency_limit=1)
LIGHT = dict(concurrency_id="light", concurrency_limit=int(os.environ.get("CLIPURE_LIGHT_CONCURRENCY", 4)))


def build_demo(backbone: str, notice: str | None = None) -> gr.Blocks:
    """The whole page. `backbone` is the one active at start; `notice` explains a fallback."""
    c: dict = {"_start": backbone, "_templates": start_templates(backbone)}
    with server.Blocks(title="CLIPure: seeing adversarial robustness in CLIP") as demo:
        active = gr.State(backbone)
        # The last run's PipelineResult, for the replay slider: one a session (at most
        # server.MAX_SESSIONS), gone files_expire_s after the run, with the files it names.
        c["result_state"] = gr.State(None, time_to_live=LIMITS.files_expire_s)
        gr.Markdown("## CLIPure: adversarial purification in CLIP's latent space\n"
                    "Attack an image, then watch CLIPure (ICLR 2025) purify its embedding step by step. Only the "
                    "`adaptive` and `bpda` threat models test the defence: see **How it works**.")
        if notice:
            with gr.Accordion("Offline mode: running the bundled toy-shapes model (why?)", open=False,
                              elem_id="fallback-notice"):
                gr.Markdown(notice)
        c["_backbone_note"] = gr.Markdown(ev.backbone_view(c["_start"])[2], elem_id="backbone-note")
        with gr.Tab("Demo"):
            lessons = sections.lesson_row(c)
            sections.lesson_stage(c)
            sections.inputs(c)
            sections.audit_panel(c)
            sections.results(c)
            sections.settings(c)
        with gr.Tab("How it works"):
            gr.Markdown(HOW_IT_WORKS)
        # API-only endpoints: a hidden button carries them; clients call them by api_name.
        api_only = gr.Button(visible=False)
        api_json, api_stats = gr.JSON(label="result", visible=False), gr.JSON(label="statistics", visible=False)
        api_file_a = gr.File(label="adversarial image", visible=False)
        api_file_b = gr.File(label="clean image", visible=False)
        _wire(demo, c, active, lessons)
        api_only.click(cb.classify_api, [c[n] for n in fm.COMMON + fm.PRECISION], api_json, api_name="classify",
                       **LIGHT)
        api_only.click(cb.attack_api, [c[n] for n in fm.FORM], [api_file_a, api_file_b, api_stats],
                       api_name="attack", **HEAVY)
        # /run by API: one named result and its files (the page's Run streams into its widgets instead)
        api_files = gr.File(label="files", file_count="multiple", visible=False)
        api_only.click(cb.run_api, [c[n] for n in fm.FORM], [api_json, api_files], api_name="run", **HEAVY)
        api_only.click(cb.purify_api, [c[n] for n in fm.PURIFY_API], api_json, api_name="purify", **HEAVY)
        api_only.click(ap.audit_api, [c[n] for n in fm.FORM], api_json, api_name="audit", **HEAVY)
        # The paper's protocol: the values /run takes for it, and what the demo cannot match.
        api_only.click(ap.paper_preset_api, None, api_json, api_name="paper_preset", **LIGHT)
    return demo


def _wire(demo: gr.Blocks, c: dict, active, lessons: list) -> None:
    form = lambda names: [c[n] for n in names]  # noqa: E731
    engine = HEAVY
    private = dict(api_visibility="private", **LIGHT)       # page events: the light lane
    private_engine = dict(api_visibility="private", **HEAVY)
    # Progress is the status line beside the button, so no output gets its own spinner.
    quiet = dict(show_progress="hidden", **engine)
    run_args = (cb.run_demo, form(fm.FORM), form(fm.RUN_OUTPUTS))
    compare_args = (cb.compare_demo, form(fm.FORM), [c["_compare_table"], c["_compare_caption"]])
    plots = [c[k] for k in PLOTS]
    in_view = [c["result_state"], c["replay"], c["_plot_in_view"], c["_narrow"]]
    after_run = dict(fn=ev.on_plots_after_run, inputs=in_view, outputs=plots, **private)
    shown = lambda key: (_visible, None, c[key])  # noqa: E731  (.then(*shown(key)): show that section)
    # The page's Run streams into its widgets (RUN_OUTPUTS); API clients call /run (one named result).
    # First the probabilities' tab (the headline plot) and no earlier rotation view, then the run.
    c["_run"].click(ls.headline_in_view, None, form(ls.HEADLINE), **private).then(
        *run_args, api_name="run_stream", **quiet).then(
        lambda: gr.update(interactive=True), None, c["adv_download"], **private).then(
        *shown("_run_files"), **private).then(**after_run)
    c["_run"].click(None, js=SCROLL_TO_STATUS, **private)
    c["_compare"].click(*shown("_compare_panel"), **private).then(
        *compare_args, api_name="compare", show_progress="hidden", **engine).then(
        ls.on_compare_done, c["_compare_table"], c["_compare_csv"], **private)
    c["_compare"].click(None, js=SCROLL_TO_STATUS, **private)
    c["_audit"].click(*shown("_audit_panel"), **private).then(None, js=SCROLL_TO_AUDIT, **private).then(
        ap.audit_demo, form(fm.FORM), form(fm.AUDIT_OUTPUTS), show_progress="hidden", **private_engine)
    c["_audit_png"].click(None, js=save_image_js("#audit-plot img", "eps-sweep.png"), **private)
    c["_plot_png"].click(None, js=save_image_js("#plot-tabs .figure img", "clipure-plot.png"), **private)
    c["_paper"].click(ls.on_paper, active, form(ap.PAPER_PRESET_FIELDS) + form(("image",) + ls.STAGE),
                      **private).then(None, js=SCROLL_TO_LESSON, **private)

    for k, (button, lesson) in enumerate(zip(lessons, LESSONS)):
        step = button.click(ls.on_lesson(k), None, form(list(lesson.settings)) + form(ls.lesson_outputs(k)),
                            **private).then(None, js=SCROLL_TO_LESSON, **private)
        if lesson.action == "compare":   # the table and its progress go to the stage
            step.then(cb.compare_demo, form(fm.FORM), [c["_lesson_table"], c["_lesson_result"]],
                      show_progress="hidden", **private_engine).then(
                ls.on_lesson_compare_done, [c["_lesson_table"], c["_lesson_result"]],
                [c["_lesson_result"], c["_lesson_files"]], **private)
        else:   # the run fills the page as Run does, its status streamed to the stage
            outputs = [c["_lesson_result"] if n == "status" else c[n] for n in fm.RUN_OUTPUTS]
            done = step.then(cb.run_demo, form(fm.FORM), outputs, show_progress="hidden", **private_engine).then(
                lambda: gr.update(interactive=True), None, c["adv_download"], **private).then(
                *shown("_run_files"), **private).then(
                ls.on_lesson_done(k), [c["result_state"], c["_narrow"]], form(ls.RUN_DONE), **private)
            if lesson.proof == "rotation":   # the page's plots open on the rotation view, at the same step
                done.then(ls.open_rotation(k), None, [c["_plot_tabs"], c["_plot_in_view"], c["replay"]],
                          **private).then(
                    ev.on_replay, in_view, [c["replay_label"], c["replay_note"], *plots], **private)
            else:
                done.then(**after_run)
    c["_lesson_step"].release(ls.on_stage_step, [c["result_state"], c["_lesson_step"], c["_narrow"]],
                              c["_lesson_plot"], trigger_mode="always_last", show_progress="hidden", **private)
    c["_lesson_step"].input(ls.on_stage_step, [c["result_state"], c["_lesson_step"], c["_narrow"]],
                            c["_lesson_plot"], trigger_mode="always_last", show_progress="hidden", **private)

    c["image"].upload(ev.on_upload, c["image"], [c["image"], c["status"]], **private)
    c["_examples"].select(ev.on_example, active, [c["image"], c["classnames"], c["status"]], **private)
    c["_preset"].change(ev.on_preset, c["_preset"], c["classnames"], **private)
    c["classnames"].change(ev.on_classnames, [c["classnames"], c["target"]], c["target"], **private)
    demo.load(ev.on_classnames, [c["classnames"], c["target"]], c["target"], **private)
    demo.load(None, js=PAGE_JS, **private)
    demo.load(None, None, c["_narrow"], js=NARROW_JS, **private)
    # the defence's line, the panel naming it, its own parameters, and for a randomised one its seed and EOT
    defence_outputs = [c["_defence_note"], c["purified_label"], c["purify_seed"], c["eot"],
                       *(c[f"_params_{key}"] for key in ev.own_param_rows())]
    c["backbone"].change(ev.on_backbone, [c["backbone"], active],
                         [c["backbone"], active, c["_examples"], c["classnames"], c["_backbone_note"],
                          c["_preset"]], **private).then(
        ev.on_defence_menu, [active, c["defence"]], c["defence"], **private).then(
        ev.on_defence, c["defence"], defence_outputs, **private)
    c["defence"].change(ev.on_defence, c["defence"], defence_outputs, **private)
    c["template_set"].change(ev.on_template_set, [c["template_set"], c["classnames"], active],
                             c["_template_note"], **private)
    c["attack"].change(ev.on_attack, c["attack"], [c["eps"], c["_attack_note"]], **private)
    c["threat_model"].change(ev.on_threat_model, c["threat_model"], c["_threat_note"], **private)
    for field in ("purify_steps", "defence"):   # the replay spans the trajectory of the chosen defence
        c[field].change(ev.on_purify_steps, [c["purify_steps"], c["defence"]], c["replay"], **private)
    c["_defaults"].click(ev.paper_defaults, None, form(fm.PURIFY_FIELDS), **private)
    # Only the plot in view is drawn: after a run (above), on a tab change, on a replay step.
    for key in PLOTS:
        c[f"_{key}_tab"].select(lambda k=key: k, None, c["_plot_in_view"], **private).then(
            ev.on_plot_tab, in_view, c[key], **private)
    replay = dict(fn=ev.on_replay, inputs=in_view, outputs=[c["replay_label"], c["replay_note"], *plots],
                  trigger_mode="always_last", show_progress="hidden", **private)
    c["replay"].release(**replay)
    c["replay"].input(**replay)


def _visible():
    return gr.update(visible=True)


def launch(prevent_thread_lock: bool = False, **launch_kwargs) -> gr.Blocks:
    """Start with the default backbone (or the bundled one, with a notice), queue, and serve."""
    backbone, notice = load_default()
    if notice:
        print(f"[clipure] {notice}", flush=True)
    models.DEFAULT_BACKBONE = backbone.name   # an API call without a backbone gets the one the page starts on
    # Before the server starts (on ZeroGPU, before `spaces` packs the models for its GPU workers).
    for w in warm_start(warm_items(backbone.name)):
        i = w.item
        print(f"[clipure] warm: {i.backbone} ({i.precision or 'fp32'}, {i.template_set} templates) in "
              f"{w.seconds:.1f} s" + (f"; {w.note}" if w.note else ""), flush=True)
    demo = build_demo(backbone.name, notice)
    # A bounded queue. Every event names its lane (HEAVY or LIGHT); the default of 1 is a fallback.
    demo.queue(default_concurrency_limit=1, max_size=int(os.environ.get("CLIPURE_QUEUE_SIZE", 16)))
    # Loopback unless on a Space or asked; body limit; file expiry (app/ui/server.py).
    server.prepare(demo)
    lenient_numbers(demo)   # missing numbers reach the engine's one-sentence checks
    launch_kwargs = server.launch_options(launch_kwargs)
    launch_kwargs.setdefault("css", CSS)
    demo.launch(prevent_thread_lock=prevent_thread_lock, **launch_kwargs)
    return demo
