"""The page: gr.Blocks layout and wiring only. Callbacks live in app/ui/callbacks.py.

Inputs are collected by FORM name and outputs by RUN_OUTPUTS name, so the wiring of every
endpoint is derived from those two lists and cannot drift from the callbacks.
"""
from __future__ import annotations

import os
from pathlib import Path

import gradio as gr

from app import report, server
from app.attacks import ATTACKS
from app.limits import LIMITS
from app.models import BACKBONES, load_backbone, load_default
from app.precision import PRECISIONS
from app.presets import LESSONS, default_classnames, presets_for
from app.purifiers import GRAD_SCOPES, NORMS, PAPER_DEFAULTS
from app.report import PLOTS
from app.threat_models import THREAT_MODELS
from app.ui import audit_panel as ap
from app.ui import callbacks as cb
from app.ui import events as ev
from app.ui import form as fm
from app.ui.components import ImagePath, lenient_numbers
from app.warm import WarmItem, warm_start
from app.zeroshot import TEMPLATE_SETS

HOW_IT_WORKS = (Path(__file__).resolve().parent.parent / "how_it_works.md").read_text()
# Adversarial images are tiny at model resolution: show them large, without smoothing. The
# figures are drawn on white; the dark theme inverts them (hue-rotated back, so colours keep).
# On a phone the three predictions stay side by side, so they fit the screen with the status.
CSS = """
.pixelated img { image-rendering: pixelated; width: 100% !important; height: 100% !important; object-fit: contain; }
.dark .figure img { filter: invert(0.88) hue-rotate(180deg); }
#results-row { flex-wrap: nowrap !important; gap: 6px; }
#results-row > div { min-width: 0 !important; }
#lesson-row button { white-space: normal; }
@media (max-width: 640px) {
  #results-row .output-class { font-size: var(--text-md) !important; padding: 4px !important; }
  #results-row .label-text, #results-row .confidence-set { font-size: var(--text-xs) !important; }
  .prose pre, .prose code { white-space: pre-wrap !important; word-break: break-word; }
  #status { font-size: var(--text-sm); }
  /* Block labels above their content, not floating over it: the big predictions and the figures'
     captions stay whole. */
  #results-row [data-testid=block-label], .figure [data-testid=block-label] {
    position: static !important; border-radius: 0 !important; margin-bottom: 4px; }
  #results-row [data-testid=block-label] > span { display: none; }
  #results-row .confidence-set .line { display: none; }   /* room for the percentages */
  #results-row .confidence-set dl { justify-content: space-between; gap: 2px; }
}
"""
# What each figure shows, for screen readers (Gradio's own alt text says "undefined plot ...").
ALT = {"prob-plot": "Line chart: each class's probability at every purification step, for the attacked and "
                    "the clean input; the clean prediction is the thick blue line.",
       "cos-plot": "Line chart: cosine between the image embedding and the blank target at every purification "
                   "step; a zig-zag is the 2-cycle.",
       "map-plot": "Map: the purification path of each embedding in a 2-D projection, with numbered class "
                   "landmarks and the blank target as a star."}
PAGE_JS = """() => {
  const alt = %s;
  const fix = () => { for (const [id, text] of Object.entries(alt)) {
      const img = document.querySelector('#' + id + ' img'); if (img && img.alt !== text) img.alt = text; } };
  new MutationObserver(fix).observe(document.body, {subtree: true, childList: true, attributes: true,
                                                     attributeFilter: ['src']});
  fix();
}""" % __import__("json").dumps(ALT)
# A phone's screen (the CSS breakpoint above): the step plots are drawn with stacked panels.
NARROW_JS = "() => window.matchMedia('(max-width: 640px)').matches"
SCROLL_TO_STATUS = "() => { document.getElementById('run-row')?.scrollIntoView({block: 'start'}); }"
SCROLL_TO_AUDIT = "() => { document.getElementById('audit-panel')?.scrollIntoView({block: 'start'}); }"


def _inputs(c: dict) -> dict:
    """The request form: the essentials at the top, beside Run; details in a closed accordion."""
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=260):
            c["image"] = ImagePath(label="Image", type="filepath", height=190, elem_id="input-image",
                                  sources=["upload", "clipboard", "webcam"])
            c["_examples"] = gr.Gallery(ev.backbone_view(c["_start"])[0], label="Examples (click one)", columns=8,
                                        rows=1, height=90, allow_preview=False, show_label=True,
                                        elem_id="examples", object_fit="contain")
        with gr.Column(scale=5, min_width=300):
            c["classnames"] = gr.Textbox(label="Class names (comma- or newline-separated)", max_lines=3,
                                         value=default_classnames(c["_start"]), lines=1, elem_id="classnames")
            with gr.Row():
                c["attack"] = gr.Dropdown(list(ATTACKS), value="PGD", label="Attack", min_width=120)
                c["threat_model"] = gr.Dropdown(list(THREAT_MODELS), value="undefended", label="Threat model",
                                                min_width=120)
            with gr.Row():
                # Numbers, not sliders: a slider clamps what is typed; the engine refuses it in one sentence.
                # No precision=0, minimum or maximum on any gr.Number: Gradio would round 2.5 to 2 without a
                # word, or answer with its own generic sentence; the engine's checks name the field.
                c["eps"] = gr.Number(4, label="eps (L-inf, in 1/255)", elem_id="eps", min_width=90)
                c["steps"] = gr.Number(10, label="Attack steps", elem_id="steps", min_width=90)
                c["p_steps"] = gr.Number(PAPER_DEFAULTS.steps, label="Purify steps T",
                                         elem_id="p-steps", min_width=90)
                c["p_step_size"] = gr.Number(PAPER_DEFAULTS.step_size, label="Step size η", min_width=90)
            with gr.Row(elem_id="run-row"):
                c["_run"] = gr.Button("Run: classify → attack → purify", variant="primary", elem_id="run",
                                      min_width=160)
                c["_compare"] = gr.Button("Compare threat models", elem_id="compare", min_width=140)
                c["_audit"] = gr.Button("Audit gradient masking", elem_id="audit", min_width=140)
            c["status"] = gr.Markdown("Pick an example or upload an image, then press **Run**.", elem_id="status")
            _audit_panel(c)
    return c


def _audit_panel(c: dict) -> dict:
    """The masking audit's own panel, hidden until its button is pressed: progress, then the checks."""
    with gr.Column(visible=False, elem_id="audit-panel") as c["_audit_panel"]:
        c["_audit_status"] = gr.Markdown(elem_id="audit-status")
        c["_audit_table"] = gr.Dataframe(headers=fm.AUDIT_COLUMNS, label="Masking audit: checks (a)-(f)",
                                         interactive=False, wrap=True, elem_id="audit-table",
                                         column_widths=["9%", "33%", "12%", "46%"])
        c["_audit_gradient"] = gr.Markdown(elem_id="audit-gradient")
        c["_audit_plot"] = gr.Plot(label="Eps sweep", format="png", elem_id="audit-plot", elem_classes="figure")
    return c


def _settings(c: dict) -> dict:
    """Everything else of the request form, in a closed accordion."""
    with gr.Accordion("More settings: model, classes, attack and purification details", open=False):
        with gr.Row():
            c["backbone"] = gr.Dropdown([(f"{k} — {v.description}", k) for k, v in BACKBONES.items()],
                                        value=c["_start"], label="Backbone", elem_id="backbone")
            c["_preset"] = gr.Dropdown(presets_for(c["_start"]), label="Class-name presets", value=None)
        with gr.Row():
            c["template_set"] = gr.Radio(list(TEMPLATE_SETS), value=c["_templates"], label="Prompt templates",
                                         info="single: 'a photo of a {}.' · ensemble: the 80 OpenAI ones")
            c["precision"] = gr.Radio(list(PRECISIONS), value="fp32", label="Precision of the encoders",
                                      info="fp16 = the official evaluation's mixed precision (see How it works)")
        c["_template_note"] = gr.Markdown(elem_id="template-note")
        c["_threat_note"] = gr.Markdown(ev.on_threat_model("undefended"))
        c["_attack_note"] = gr.Markdown(ev.on_attack("PGD")[1])
        with gr.Row():
            c["step_size"] = gr.Number(0, label="Attack step size (eps units; 0 = eps/4)")
            c["seed"] = gr.Number(0, label="Seed")
            c["targeted"] = gr.Checkbox(False, label="Targeted")
            c["target"] = gr.Dropdown([], label="Target class", interactive=True, allow_custom_value=True)
        with gr.Row():
            c["method"] = gr.Dropdown(ev.methods_for(c["_start"]), value=PAPER_DEFAULTS.method,
                                      label="Purification method", elem_id="method")
            c["momentum"] = gr.Number(PAPER_DEFAULTS.momentum, label="Momentum γ")
            c["norm"] = gr.Radio(list(NORMS), value=PAPER_DEFAULTS.norm, label="Update norm")
            c["grad_scope"] = gr.Radio(list(GRAD_SCOPES), value=PAPER_DEFAULTS.grad_scope,
                                       label="Gradient norm scope", info="batch = the official code's coupling")
        c["_method_note"] = gr.Markdown(elem_id="method-note")
        with gr.Row():
            # Shown for randomised purifiers only (CLIPure-Diff); hidden widgets still send their values,
            # so hiding the EOT count resets it to 1 (events.on_method).
            c["p_seed"] = gr.Number(PAPER_DEFAULTS.seed, label="Purification seed", visible=False,
                                    elem_id="p-seed", min_width=90)
            c["eot"] = gr.Number(1, label=f"EOT K: gradients the attacker averages per step (1-{LIMITS.max_eot})",
                                 visible=False, elem_id="eot", min_width=90)
        c["_defaults"] = gr.Button("Restore the paper's defaults (T=10, η=30, γ=0, L2)", size="sm")
    return c


def _results(c: dict) -> dict:
    """The widgets /run fills, by RUN_OUTPUTS name (plus the compare panel): predictions first."""
    with gr.Row(elem_id="results-row"):
        for key, label, elem in (("clean", "Clean: bare CLIP", "clean-panel"),
                                 ("adv", "Attacked: bare CLIP", "adv-panel"),
                                 ("purified", "Attacked: CLIPure", "purified-panel")):
            with gr.Column(min_width=100):
                c[f"{key}_label"] = gr.Label(num_top_classes=3, label=label, elem_id=elem)
                c[f"{key}_note"] = gr.Markdown(elem_id=f"{key}-note")
    c["_compare_caption"] = gr.Markdown(elem_id="compare-caption")
    c["_compare_table"] = gr.Dataframe(label="Same attack, four threat models", interactive=False, wrap=True,
                                       headers=report.COMPARE_COLUMNS, elem_id="compare-table")
    with gr.Row():
        c["adv_image"] = gr.Image(label="Attacked image (model resolution)", format="png", type="filepath",
                                  interactive=False, height=200, elem_classes="pixelated", min_width=140)
        c["pert_image"] = gr.Image(label="Perturbation (amplified)", format="png", type="filepath",
                                   interactive=False, height=200, elem_classes="pixelated", min_width=140)
        with gr.Column(min_width=260):
            c["stats"] = gr.Markdown(elem_id="stats")
            c["adv_download"] = gr.DownloadButton("Download the attacked image (lossless PNG)", interactive=False)
    with gr.Row():
        c["replay"] = gr.Slider(0, PAPER_DEFAULTS.steps, value=0, step=1, scale=3, min_width=200,
                                label="Replay: one purification step of the last run (arrow keys move it)",
                                elem_id="replay")
        c["replay_label"] = gr.Label(num_top_classes=3, label="Prediction at this step", scale=2, min_width=160)
    c["replay_note"] = gr.Markdown(elem_id="replay-note")
    c["_plot_in_view"] = gr.State("prob_plot")   # which plot tab is open: only that plot is drawn
    c["_narrow"] = gr.Checkbox(False, visible=False)   # a phone's screen, set on load (NARROW_JS)
    for key, tab, label, elem in (("prob_plot", "Probabilities", "Class probabilities per step", "prob-plot"),
                                  ("cos_plot", "Cosine", "Cosine to the blank per step", "cos-plot"),
                                  ("map_plot", "Map", "Latent trajectory", "map-plot")):
        with gr.Tab(tab) as c[f"_{key}_tab"]:
            c[key] = gr.Plot(label=label, format="png", elem_id=elem, elem_classes="figure")
    with gr.Row():
        c["json_file"] = gr.File(label="Trajectory (JSON)")
        c["csv_file"] = gr.File(label="Trajectory (CSV)")
    return c


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


def build_demo(backbone: str, notice: str | None = None) -> gr.Blocks:
    """The whole page. `backbone` is the one active at start; `notice` explains a fallback."""
    templates = start_templates(backbone)
    c: dict = {"_start": backbone, "_templates": templates}
    with gr.Blocks(title="CLIPure: seeing adversarial robustness in CLIP") as demo:
        active = gr.State(backbone)
        c["result_state"] = gr.State(None)   # the last run's PipelineResult, for the replay slider
        gr.Markdown("## CLIPure: adversarial purification in CLIP's latent space\n"
                    "Attack an image, then watch CLIPure (ICLR 2025) purify its embedding step by step. Only the "
                    "`adaptive` and `bpda` threat models test the defence: see **How it works**.")
        if notice:
            with gr.Accordion("Offline mode: running the bundled toy-shapes model (why?)", open=False,
                              elem_id="fallback-notice"):
                gr.Markdown(notice)
        c["_backbone_note"] = gr.Markdown(ev.backbone_view(c["_start"])[2], elem_id="backbone-note")
        with gr.Tab("Demo"):
            with gr.Row(elem_id="lesson-row", equal_height=True):
                lessons = [gr.Button(lesson.title, size="sm", min_width=120, elem_id=f"lesson-{k}")
                           for k, lesson in enumerate(LESSONS, 1)]
                paper = gr.Button("The paper's protocol (AutoAttack, 4/255, fp16)", size="sm", min_width=120,
                                  elem_id="paper-preset")
            c["_lesson_text"] = gr.Markdown(elem_id="lesson-text")
            _inputs(c)
            _results(c)
            _settings(c)
        with gr.Tab("How it works"):
            gr.Markdown(HOW_IT_WORKS)
        # API-only endpoints: a hidden button carries them; clients call them by api_name.
        api_only = gr.Button(visible=False)
        api_json, api_stats = gr.JSON(visible=False), gr.JSON(visible=False)
        api_file_a, api_file_b = gr.File(visible=False), gr.File(visible=False)

        # --- wiring -----------------------------------------------------------------------------
        form = lambda names: [c[n] for n in names]  # noqa: E731
        engine = dict(concurrency_id="engine")
        private = dict(api_visibility="private")
        # Progress is the status line beside the button, so no output gets its own spinner.
        run_args = (cb.run_demo, form(fm.FORM), form(fm.RUN_OUTPUTS))
        compare_args = (cb.compare_demo, form(fm.FORM), [c["_compare_table"], c["_compare_caption"]])
        quiet = dict(show_progress="hidden", **engine)
        plots = [c[k] for k in PLOTS]
        in_view = [c["result_state"], c["replay"], c["_plot_in_view"], c["_narrow"]]
        after_run = dict(fn=ev.on_plots_after_run, inputs=in_view, outputs=plots, **private)
        c["_run"].click(*run_args, api_name="run", **quiet).then(
            lambda: gr.update(interactive=True), None, c["adv_download"], **private).then(**after_run)
        c["_run"].click(None, js=SCROLL_TO_STATUS, **private)
        c["_compare"].click(*compare_args, api_name="compare", show_progress_on=[c["_compare_table"]], **engine)
        c["_compare"].click(None, js=SCROLL_TO_STATUS, **private)
        api_only.click(cb.classify_api, form(fm.COMMON + fm.PRECISION), api_json, api_name="classify", **engine)
        api_only.click(cb.attack_api, form(fm.FORM), [api_file_a, api_file_b, api_stats], api_name="attack", **engine)
        api_only.click(cb.purify_api, form(fm.PURIFY_API), api_json, api_name="purify", **engine)
        api_only.click(ap.audit_api, form(fm.FORM), api_json, api_name="audit", **engine)
        # The paper's protocol: the values /run takes for it, and what the demo cannot match.
        api_only.click(ap.paper_preset_api, None, api_json, api_name="paper_preset")
        c["_audit"].click(lambda: gr.update(visible=True), None, c["_audit_panel"], **private).then(
            None, js=SCROLL_TO_AUDIT, **private).then(
            ap.audit_demo, form(fm.FORM), form(fm.AUDIT_OUTPUTS), show_progress="hidden", **engine, **private)
        paper.click(ap.on_paper_preset, None, form(ap.PAPER_PRESET_FIELDS) + [c["_lesson_text"]], **private)

        for k, (button, lesson) in enumerate(zip(lessons, LESSONS)):
            fields = list(lesson.settings)
            step = button.click(ev.on_lesson(k), None, form(fields) + [c["_lesson_text"]], **private)
            step = step.then(None, js=SCROLL_TO_STATUS, **private)
            if lesson.action == "compare":
                step.then(*compare_args, show_progress_on=[c["_compare_table"]], **engine, **private)
            else:
                step.then(*run_args, **quiet, **private).then(**after_run)

        c["image"].upload(ev.on_upload, c["image"], [c["image"], c["status"]], **private)
        c["_examples"].select(ev.on_example, active, [c["image"], c["classnames"]], **private)
        c["_preset"].change(ev.on_preset, c["_preset"], c["classnames"], **private)
        c["classnames"].change(ev.on_classnames, [c["classnames"], c["target"]], c["target"], **private)
        demo.load(ev.on_classnames, [c["classnames"], c["target"]], c["target"], **private)
        demo.load(None, js=PAGE_JS, **private)
        demo.load(None, None, c["_narrow"], js=NARROW_JS, **private)
        c["backbone"].change(ev.on_backbone, [c["backbone"], active],
                             [c["backbone"], active, c["_examples"], c["classnames"], c["_backbone_note"],
                              c["_preset"]], **private).then(
            ev.on_method_menu, [active, c["method"]], c["method"], **private).then(
            ev.on_method, c["method"], [c["_method_note"], c["p_seed"], c["eot"]], **private)
        c["method"].change(ev.on_method, c["method"], [c["_method_note"], c["p_seed"], c["eot"]], **private)
        c["template_set"].change(ev.on_template_set, [c["template_set"], c["classnames"], active],
                                 c["_template_note"], **private)
        c["attack"].change(ev.on_attack, c["attack"], [c["eps"], c["_attack_note"]], **private)
        c["threat_model"].change(ev.on_threat_model, c["threat_model"], c["_threat_note"], **private)
        c["p_steps"].change(ev.on_purify_steps, c["p_steps"], c["replay"], **private)
        c["_defaults"].click(ev.paper_defaults, None, form(fm.PURIFY_FIELDS), **private)
        # Only the plot in view is drawn: after a run (above), on a tab change, on a replay step.
        for key in PLOTS:
            c[f"_{key}_tab"].select(lambda k=key: k, None, c["_plot_in_view"], **private).then(
                ev.on_plot_tab, in_view, c[key], **private)
        replay = dict(fn=ev.on_replay, inputs=in_view, outputs=[c["replay_label"], c["replay_note"], *plots],
                      trigger_mode="always_last", show_progress="hidden", **private)
        c["replay"].release(**replay)
        c["replay"].input(**replay)
    return demo


def launch(prevent_thread_lock: bool = False, **launch_kwargs) -> gr.Blocks:
    """Start with the default backbone (or the bundled one, with a notice), queue, and serve."""
    backbone, notice = load_default()
    if notice:
        print(f"[clipure] {notice}", flush=True)
    # Before the server starts (on ZeroGPU, before `spaces` packs the models for its GPU workers).
    for w in warm_start(warm_items(backbone.name)):
        i = w.item
        print(f"[clipure] warm: {i.backbone} ({i.precision or 'fp32'}, {i.template_set} templates) in "
              f"{w.seconds:.1f} s" + (f"; {w.note}" if w.note else ""), flush=True)
    demo = build_demo(backbone.name, notice)
    # One engine request at a time (they share the model and the CPU/GPU); a bounded queue.
    demo.queue(default_concurrency_limit=1, max_size=int(os.environ.get("CLIPURE_QUEUE_SIZE", 16)))
    # Loopback unless on a Space or asked; body limit; file expiry (app/server.py).
    server.prepare(demo)
    lenient_numbers(demo)   # missing numbers reach the engine's one-sentence checks
    launch_kwargs = server.launch_options(launch_kwargs)
    launch_kwargs.setdefault("css", CSS)
    demo.launch(prevent_thread_lock=prevent_thread_lock, **launch_kwargs)
    return demo
