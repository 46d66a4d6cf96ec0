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
from app.models import BACKBONES, PRECISIONS, load_backbone, load_default
from app.presets import CLASS_PRESETS, default_classnames, examples_for
from app.purifiers import GRAD_SCOPES, NORMS, PAPER_DEFAULTS, PURIFIERS
from app.threat_models import THREAT_MODELS
from app.ui import callbacks as cb
from app.ui.components import ImagePath
from app.zeroshot import TEMPLATE_SETS

HOW_IT_WORKS = (Path(__file__).resolve().parent.parent / "how_it_works.md").read_text()
# Adversarial images are tiny at model resolution: show them large, without smoothing.
CSS = ".pixelated img { image-rendering: pixelated; width: 100% !important; height: 100% !important; " \
      "object-fit: contain; }"


def _inputs(c: dict) -> dict:
    """The request form's widgets, by FORM name."""
    with gr.Row():
        with gr.Column(scale=4):
            c["image"] = ImagePath(label="Image", type="filepath", height=260, elem_id="input-image",
                                  sources=["upload", "clipboard", "webcam"])
            c["classnames"] = gr.Textbox(label="Class names (comma- or newline-separated)",
                                         value=default_classnames(c["_start"]), lines=2, elem_id="classnames")
            with gr.Row():
                c["_preset"] = gr.Dropdown(list(CLASS_PRESETS), label="Class-name presets", value=None)
                c["template_set"] = gr.Radio(list(TEMPLATE_SETS), value=c["_templates"], label="Prompt templates",
                                             info="single: 'a photo of a {}.' · ensemble: the 80 OpenAI ones")
            c["precision"] = gr.Radio(list(PRECISIONS), value="fp32", label="Precision of the encoders",
                                      info="fp16 = the official evaluation's mixed precision (see How it works)")
            c["backbone"] = gr.Dropdown([(f"{k} — {v.description}", k) for k, v in BACKBONES.items()],
                                        value=c["_start"], label="Backbone")
            photos, toys, _, note = cb.backbone_view(c["_start"])
            c["_backbone_note"] = gr.Markdown(note)
            with gr.Column(visible=photos["visible"]) as c["_photo_box"]:
                gr.Examples([list(e) for e in examples_for(toy=False)], [c["image"], c["classnames"]],
                            label="Examples (photos, public domain / CC0)", examples_per_page=8, cache_examples=False)
            with gr.Column(visible=toys["visible"]) as c["_toy_box"]:
                gr.Examples([list(e) for e in examples_for(toy=True)], [c["image"], c["classnames"]],
                            label="Examples for the bundled model", examples_per_page=8, cache_examples=False)
        with gr.Column(scale=4):
            with gr.Accordion("Attack", open=True):
                with gr.Row():
                    c["attack"] = gr.Dropdown(list(ATTACKS), value="PGD", label="Attack")
                    c["threat_model"] = gr.Radio(list(THREAT_MODELS), value="undefended", label="Threat model")
                c["_threat_note"] = gr.Markdown(cb.on_threat_model("undefended"))
                c["_attack_note"] = gr.Markdown(cb.on_attack("PGD")[1])
                with gr.Row():
                    c["eps"] = gr.Slider(0, LIMITS.max_linf_eps, value=4, step=0.5, label="eps (L-inf, in 1/255)")
                    c["steps"] = gr.Slider(1, LIMITS.max_attack_steps, value=10, step=1, label="Attack steps")
                with gr.Row():
                    c["step_size"] = gr.Number(0, label="Step size (eps units; 0 = eps/4)", minimum=0)
                    c["seed"] = gr.Number(0, label="Seed", precision=0, minimum=0)
                with gr.Row():
                    c["targeted"] = gr.Checkbox(False, label="Targeted")
                    c["target"] = gr.Dropdown([], label="Target class", interactive=True, allow_custom_value=True)
            with gr.Accordion("Purification", open=True):
                with gr.Row():
                    c["method"] = gr.Dropdown([(v.label, k) for k, v in PURIFIERS.items()],
                                              value=PAPER_DEFAULTS.method, label="Method")
                    c["p_steps"] = gr.Slider(0, LIMITS.max_purify_steps, value=PAPER_DEFAULTS.steps, step=1,
                                             label="Steps T")
                with gr.Row():
                    c["p_step_size"] = gr.Number(PAPER_DEFAULTS.step_size, label="Step size η", minimum=0)
                    c["momentum"] = gr.Slider(0, 0.99, value=PAPER_DEFAULTS.momentum, step=0.01, label="Momentum γ")
                with gr.Row():
                    c["norm"] = gr.Radio(list(NORMS), value=PAPER_DEFAULTS.norm, label="Update norm")
                    c["grad_scope"] = gr.Radio(list(GRAD_SCOPES), value=PAPER_DEFAULTS.grad_scope,
                                               label="Gradient norm scope", info="batch = the official code's coupling")
                c["_defaults"] = gr.Button("Restore the paper's defaults (T=10, η=30, γ=0, L2)", size="sm")
            with gr.Row():
                c["_run"] = gr.Button("Run: classify → attack → purify", variant="primary", elem_id="run")
                c["_compare"] = gr.Button("Compare threat models", elem_id="compare")
    return c


def _results(c: dict) -> dict:
    """The widgets /run fills, by RUN_OUTPUTS name (plus the replay and compare panels)."""
    c["status"] = gr.Markdown("", elem_id="status")
    with gr.Row():
        for key, label, elem in (("clean", "Clean: bare CLIP", "clean-panel"),
                                 ("adv", "Adversarial: bare CLIP", "adv-panel"),
                                 ("purified", "Adversarial: after CLIPure", "purified-panel")):
            with gr.Column():
                c[f"{key}_label"] = gr.Label(num_top_classes=cb.TOP_K, label=label, elem_id=elem)
                c[f"{key}_note"] = gr.Markdown()
    with gr.Row():
        c["adv_image"] = gr.Image(label="Adversarial image (model resolution)", format="png", type="filepath",
                                  interactive=False, height=240, elem_classes="pixelated")
        c["pert_image"] = gr.Image(label="Perturbation (amplified)", format="png", type="filepath",
                                   interactive=False, height=240, elem_classes="pixelated")
        with gr.Column():
            c["stats"] = gr.Markdown(elem_id="stats")
            c["adv_download"] = gr.DownloadButton("Download the adversarial image (lossless PNG)")
    with gr.Row():
        c["replay"] = gr.Slider(0, PAPER_DEFAULTS.steps, value=0, step=1, scale=3,
                                label="Replay: inspect one purification step of the last run", elem_id="replay")
        c["_replay_label"] = gr.Label(num_top_classes=3, label="Prediction at this step", scale=2)
    c["_replay_note"] = gr.Markdown(elem_id="replay-note")
    for key, tab, label, elem in (("prob_plot", "Class probabilities per step", "Probabilities", "prob-plot"),
                                  ("cos_plot", "Cosine to the blank", "Cosine", "cos-plot"),
                                  ("map_plot", "Latent map", "Latent trajectory", "map-plot")):
        with gr.Tab(tab):
            c[key] = gr.Plot(label=label, format="png", elem_id=elem)
    with gr.Row():
        c["json_file"] = gr.File(label="Trajectory (JSON)")
        c["csv_file"] = gr.File(label="Trajectory (CSV)")
    c["_compare_caption"] = gr.Markdown()
    c["_compare_table"] = gr.Dataframe(label="Same attack, four threat models", interactive=False,
                                       headers=report.COMPARE_COLUMNS, elem_id="compare-table")
    return c


def build_demo(backbone: str, notice: str | None = None) -> gr.Blocks:
    """The whole page. `backbone` is the one active at start; `notice` explains a fallback."""
    # The 80-template ensemble costs ~800 text-encoder passes the first time (about 26 s for 10
    # classes with ViT-B/32 on 2 CPU cores), so CPU machines start on the single template.
    templates = "ensemble" if load_backbone(backbone).device.type == "cuda" else "single"
    c: dict = {"_start": backbone, "_templates": templates}
    with gr.Blocks(title="CLIPure: seeing adversarial robustness in CLIP") as demo:
        active = gr.State(backbone)
        c["result_state"] = gr.State(None)   # the last run's PipelineResult, for the replay slider
        gr.Markdown("# CLIPure: adversarial purification in CLIP's latent space\n"
                    "Upload an image, name some classes, attack it, and watch CLIPure purify the image "
                    "embedding step by step (ICLR 2025, arXiv 2502.18176). Read **How it works** before trusting "
                    "any robustness number: only the `adaptive` and `bpda` threat models test the defence.")
        if notice:
            gr.Markdown(f"ℹ️ **Offline mode.** {notice}", elem_id="fallback-notice")
        with gr.Tab("Demo"):
            _inputs(c)
            _results(c)
        with gr.Tab("How it works"):
            gr.Markdown(HOW_IT_WORKS)
        # API-only endpoints: a hidden button carries them; clients call them by api_name.
        api_only = gr.Button(visible=False)
        api_json, api_stats = gr.JSON(visible=False), gr.JSON(visible=False)
        api_file_a, api_file_b = gr.File(visible=False), gr.File(visible=False)

        # --- wiring -----------------------------------------------------------------------------
        form = lambda names: [c[n] for n in names]  # noqa: E731
        engine = dict(concurrency_id="engine")
        c["_run"].click(cb.run_demo, form(cb.FORM), form(cb.RUN_OUTPUTS), api_name="run", **engine)
        c["_compare"].click(cb.compare_demo, form(cb.FORM), [c["_compare_table"], c["_compare_caption"]],
                            api_name="compare", **engine)
        api_only.click(cb.classify_api, form(cb.COMMON + cb.PRECISION), api_json, api_name="classify", **engine)
        api_only.click(cb.attack_api, form(cb.FORM), [api_file_a, api_file_b, api_stats], api_name="attack", **engine)
        api_only.click(cb.purify_api, form(cb.COMMON + cb.PURIFY_FIELDS + cb.PRECISION), api_json, api_name="purify", **engine)

        private = dict(api_visibility="private")
        c["_preset"].change(cb.on_preset, c["_preset"], c["classnames"], **private)
        c["classnames"].change(cb.on_classnames, [c["classnames"], c["target"]], c["target"], **private)
        demo.load(cb.on_classnames, [c["classnames"], c["target"]], c["target"], **private)
        c["backbone"].change(cb.on_backbone, [c["backbone"], active],
                             [c["backbone"], active, c["_photo_box"], c["_toy_box"], c["classnames"],
                              c["_backbone_note"]], **private)
        c["attack"].change(cb.on_attack, c["attack"], [c["eps"], c["_attack_note"]], **private)
        c["threat_model"].change(cb.on_threat_model, c["threat_model"], c["_threat_note"], **private)
        c["_defaults"].click(cb.paper_defaults, None, form(cb.PURIFY_FIELDS), **private)
        c["p_steps"].change(cb.on_purify_steps, c["p_steps"], c["replay"], **private)
        c["replay"].release(cb.on_replay, [c["result_state"], c["replay"]],
                            [c["_replay_label"], c["_replay_note"], c["prob_plot"], c["cos_plot"]], **private)
    return demo


def launch(prevent_thread_lock: bool = False, **launch_kwargs) -> gr.Blocks:
    """Start with the default backbone (or the bundled one, with a notice), queue, and serve."""
    backbone, notice = load_default()
    if notice:
        print(f"[clipure] {notice}", flush=True)
    demo = build_demo(backbone.name, notice)
    # One engine request at a time (they share the model and the CPU/GPU); a bounded queue.
    demo.queue(default_concurrency_limit=1, max_size=int(os.environ.get("CLIPURE_QUEUE_SIZE", 16)))
    # Loopback unless on a Space or asked; body limit; file expiry (app/server.py).
    server.prepare(demo)
    launch_kwargs = server.launch_options(launch_kwargs)
    launch_kwargs.setdefault("css", CSS)
    demo.launch(prevent_thread_lock=prevent_thread_lock, **launch_kwargs)
    return demo
