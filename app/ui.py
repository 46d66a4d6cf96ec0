"""The Gradio demo: layout and wiring only. All computation lives in the engine (app.*).

Callbacks first (plain functions from widget values to engine calls, and from engine results
to widget values), then the gr.Blocks layout, then the events with their api_names.
"""
from __future__ import annotations

import os
import tempfile
import time
from functools import wraps
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd

from app import report
from app.attacks import ATTACKS, AttackConfig
from app.classnames import split_classnames
from app.errors import CLIPureError, WeightsUnavailableError
from app.hosting import gpu
from app.limits import LIMITS
from app.models import BACKBONES, load_backbone, load_default
from app.pipeline import Prediction, classify, compare_threat_models, run, run_pipeline
from app.plots import cosine_figure, probability_figure
from app.presets import CLASS_PRESETS, default_classnames, examples_for
from app.purify import GRAD_SCOPES, NORMS, PAPER_DEFAULTS, PURIFIERS, PurifyConfig
from app.threat_models import THREAT_MODELS
from app.zeroshot import TEMPLATE_SETS

TOP_K = 5
STREAM_PLOT_INTERVAL_S = 0.5   # streamed plots redraw at most this often; the final draw always happens
PROGRESS_INTERVAL_S = 0.1      # each progress update is a message to the browser
STREAM_STEP_INTERVAL_S = 0.05  # purification steps stream at most 20 updates a second
HOW_IT_WORKS = Path(__file__).with_name("how_it_works.md").read_text()
# Adversarial images are tiny at model resolution: show them large, without smoothing.
CSS = ".pixelated img { image-rendering: pixelated; width: 100% !important; height: 100% !important; " \
      "object-fit: contain; }"
RUN_OUTPUTS = ("clean_label", "adv_label", "purified_label", "clean_note", "adv_note", "purified_note",
               "adv_image", "pert_image", "stats", "adv_download", "prob_plot", "cos_plot", "map_plot",
               "json_file", "csv_file", "status", "result_state", "replay")


# --- callbacks ------------------------------------------------------------------------------

def user_errors(fn):
    """The engine's one-sentence errors become gr.Error; anything else stays a real error."""
    @wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CLIPureError as e:
            raise gr.Error(str(e), print_exception=False) from None
    return call


def attack_config(attack, threat_model, eps, steps, step_size, seed, targeted, target) -> AttackConfig:
    return AttackConfig(attack=attack, threat_model=threat_model, eps=eps, steps=steps,
                        step_size=step_size if step_size else None, seed=seed, targeted=bool(targeted),
                        target=(target or None) if targeted else None)


def purify_config(method, steps, step_size, momentum, norm, grad_scope) -> PurifyConfig:
    return PurifyConfig(method=method, steps=steps, step_size=step_size, momentum=momentum, norm=norm,
                        grad_scope=grad_scope)


def _outputs(**values) -> tuple:
    """A value for every run output, in RUN_OUTPUTS order; gr.skip() leaves the rest as they are."""
    assert set(values) <= set(RUN_OUTPUTS), set(values) - set(RUN_OUTPUTS)
    return tuple(values.get(name, gr.skip()) for name in RUN_OUTPUTS)


def _note(result, which: str, what: str) -> str:
    text = report.agreement(result, which)
    return f"{'✅' if text.startswith('agrees') else '⚠️'} {what} {text}" if text else ""


@gpu(duration=120)
def _run_stream(image, classnames, backbone, template_set, acfg, pcfg, progress):
    """Engine events -> widget updates. Per purification step: the purified prediction and
    status; the probability and cosine plots redraw at most every STREAM_PLOT_INTERVAL_S."""
    names, steps, last_draw, last_progress, last_yield = [], [], None, 0.0, 0.0
    for event in run(image, classnames, acfg, pcfg, model=backbone, template_set=template_set):
        if time.monotonic() - last_progress >= PROGRESS_INTERVAL_S or event.phase == "done":
            progress(event.fraction, desc=event.message)
            last_progress = time.monotonic()
        names = event.classnames or names
        if event.phase in ("clean", "attack"):
            yield _outputs(status=f"⏳ {event.message}")   # phase changes; attack steps go to the progress bar
        elif event.phase == "purify-adv":
            s = event.step
            steps.append(s)
            now = time.monotonic()
            last_draw = last_draw or now   # fast purifications finish before any redraw
            if s.step not in (0, pcfg.steps) and now - last_yield < STREAM_STEP_INTERVAL_S:
                continue                   # at most 20 updates a second; the first and last always
            last_yield = now
            update = dict(purified_label=Prediction(s.top1, names[s.top1], s.probs.tolist()).top(TOP_K, names),
                          status=f"⏳ Purifying the adversarial embedding: step {s.step}/{pcfg.steps}, "
                                 f"cos to blank {s.cos_to_blank:.3f}, top-1 {names[s.top1]}")
            if now - last_draw >= STREAM_PLOT_INTERVAL_S:
                probs = {"adversarial input (so far)": np.stack([t.probs.numpy() for t in steps])}
                update["prob_plot"] = probability_figure(probs, names, steps[0].top1, None, "", TOP_K)
                update["cos_plot"] = cosine_figure({"adversarial input (so far)": [t.cos_to_blank for t in steps]})
                last_draw = time.monotonic()
            yield _outputs(**update)
        elif event.phase == "done":
            yield _final_outputs(event.result)


def _final_outputs(r) -> tuple:
    for w in r.warnings:
        gr.Warning(w)
    files = report.export(r, Path(tempfile.mkdtemp(prefix="clipure-")))
    f_probs, f_cos, f_map = report.figures(r, TOP_K)
    return _outputs(
        clean_label=r.clean.top(TOP_K, r.classnames),
        adv_label=r.adversarial.top(TOP_K, r.classnames),
        purified_label=r.purified.top(TOP_K, r.classnames),
        clean_note=_note(r, "clean_purified", "CLIPure on the clean image:"),
        adv_note=_note(r, "adversarial", "Bare CLIP on the adversarial image:"),
        purified_note=_note(r, "purified", "CLIPure on the adversarial image:"),
        adv_image=str(files["adversarial"]), pert_image=str(files["perturbation"]),
        stats=report.stats_markdown(r, files["factor"]), adv_download=str(files["adversarial"]),
        prob_plot=f_probs, cos_plot=f_cos, map_plot=f_map,
        json_file=str(files["json"]), csv_file=str(files["csv"]),
        status=f"✅ Done in {r.timings['total']:.1f} s" + (" — random weights: MEANINGLESS" if r.meaningless else ""),
        result_state=r, replay=r.purify_config.steps,
    )


def on_replay(result, step):
    """Inspect one purification step of the last run: its prediction, and a marker on the plots."""
    if result is None:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    step = int(min(step, len(result.clean_trace.steps) - 1))
    trace = result.adv_trace or result.clean_trace
    s = trace.steps[step]
    f_probs, f_cos, _ = report.figures(result, TOP_K, step)
    label = Prediction(s.top1, result.classnames[s.top1], s.probs.tolist()).top(TOP_K, result.classnames)
    return label, report.step_markdown(result, step), f_probs, f_cos


def run_demo(image, classnames, backbone, template_set, attack, threat_model, eps, steps, step_size, seed,
             targeted, target, method, p_steps, p_step_size, momentum, norm, grad_scope,
             progress=gr.Progress()):
    """Classify, attack, purify; streams progress and each purification step."""
    acfg = attack_config(attack, threat_model, eps, steps, step_size, seed, targeted, target)
    pcfg = purify_config(method, p_steps, p_step_size, momentum, norm, grad_scope)
    try:
        yield from _run_stream(image, classnames, backbone, template_set, acfg, pcfg, progress)
    except CLIPureError as e:
        raise gr.Error(str(e), print_exception=False) from None


@user_errors
@gpu(duration=300)
def compare_demo(image, classnames, backbone, template_set, attack, threat_model, eps, steps, step_size, seed,
                 targeted, target, method, p_steps, p_step_size, momentum, norm, grad_scope,
                 progress=gr.Progress()):
    """The same attack under all four threat models; one table row each."""
    acfg = attack_config(attack, threat_model, eps, steps, step_size, seed, targeted, target)
    pcfg = purify_config(method, p_steps, p_step_size, momentum, norm, grad_scope)
    results = compare_threat_models(image, classnames, acfg, pcfg, backbone, template_set,
                                    on_progress=lambda f, m: progress(f, desc=m))
    table = pd.DataFrame([report.threat_model_row(r) for r in results])
    cap = report.caption(results[0], threat_model="each row")
    return table, f"Clean prediction: **{results[0].clean.label}**. <sub>{cap}</sub>"


@user_errors
@gpu(duration=60)
def classify_api(image, classnames, backbone, template_set) -> dict:
    """Bare zero-shot CLIP: the label and the top class probabilities."""
    pred, prep = classify(image, classnames, backbone, template_set)
    return {"label": pred.label, "confidences": pred.top(TOP_K, prep.classnames), "backbone": prep.backbone.name,
            "meaningless": prep.backbone.spec.meaningless, "classnames": prep.classnames, "warnings": prep.warnings}


@user_errors
@gpu(duration=120)
def attack_api(image, classnames, backbone, template_set, attack, threat_model, eps, steps, step_size, seed,
               targeted, target, method, p_steps, p_step_size, momentum, norm, grad_scope):
    """Attack only: the adversarial PNG, the clean PNG at model resolution, and the statistics."""
    acfg = attack_config(attack, threat_model, eps, steps, step_size, seed, targeted, target)
    pcfg = purify_config(method, p_steps, p_step_size, momentum, norm, grad_scope)
    r = run_pipeline(image, classnames, acfg, pcfg, backbone, template_set)
    out = Path(tempfile.mkdtemp(prefix="clipure-"))
    report.to_pil(r.x_adv).save(out / "adversarial.png")
    report.to_pil(r.x).save(out / "clean.png")
    stats = report.to_dict(r, embeddings=False)
    stats.pop("trajectory")
    return str(out / "adversarial.png"), str(out / "clean.png"), stats


@user_errors
@gpu(duration=60)
def purify_api(image, classnames, backbone, template_set, method, p_steps, p_step_size, momentum, norm,
               grad_scope) -> dict:
    """Purify the clean image's embedding: the whole trajectory with per-step probabilities."""
    pcfg = purify_config(method, p_steps, p_step_size, momentum, norm, grad_scope)
    r = run_pipeline(image, classnames, None, pcfg, backbone, template_set)
    return report.to_dict(r, embeddings=False)


def on_backbone(name, active):
    """Load the picked backbone; on failure say why and keep the one that works."""
    try:
        load_backbone(name)
    except WeightsUnavailableError as e:
        gr.Warning(str(e))
        return (active, active) + _backbone_view(active)
    return (name, name) + _backbone_view(name)


def _backbone_view(name):
    toy = name == "toy-shapes"
    spec = BACKBONES[name]
    note = f"**Backbone:** `{name}` — {spec.description}."
    if spec.meaningless:
        note = f"⚠️ {note} Its predictions are **meaningless**; use it for smoke tests only."
    return (gr.update(visible=not toy), gr.update(visible=toy), default_classnames(name), note)


def on_classnames(text, current_target):
    names = split_classnames(text)
    fallback = names[1] if len(names) > 1 else None   # the first is often the clean class
    return gr.update(choices=names, value=current_target if current_target in names else fallback)


def on_attack(name):
    spec = ATTACKS[name]
    if spec.norm == "l2":
        eps = gr.update(label="eps (L2, pixel units)", maximum=LIMITS.max_l2_eps, step=0.05, value=0.5,
                        interactive=True)
    elif spec.norm == "linf":
        eps = gr.update(label="eps (L-inf, in 1/255)", maximum=LIMITS.max_linf_eps, step=0.5, value=4,
                        interactive=True)
    else:
        eps = gr.update(label="eps (not used: minimum-norm attack)", interactive=False)
    note = f"{spec.label}. " + (spec.note + ". " if spec.note else "") + \
        ("Supports targeted mode." if spec.targeted else "No targeted mode.")
    return eps, note


def on_threat_model(name):
    return f"**{THREAT_MODELS[name].label}:** {THREAT_MODELS[name].explanation}"


def paper_defaults():
    d = PAPER_DEFAULTS
    return d.method, d.steps, d.step_size, d.momentum, d.norm, d.grad_scope


# --- layout ---------------------------------------------------------------------------------

def build_demo(backbone: str, notice: str | None = None) -> gr.Blocks:
    """The whole page. `backbone` is the one active at start; `notice` explains a fallback."""
    toy = backbone == "toy-shapes"
    # The 80-template ensemble costs ~800 text-encoder passes the first time (about 26 s for 10
    # classes with ViT-B/32 on 2 CPU cores), so CPU machines start on the single template.
    templates_default = "ensemble" if load_backbone(backbone).device.type == "cuda" else "single"
    with gr.Blocks(title="CLIPure: seeing adversarial robustness in CLIP") as demo:
        active = gr.State(backbone)
        result_state = gr.State(None)   # the last run's PipelineResult, for the replay slider
        gr.Markdown("# CLIPure: adversarial purification in CLIP's latent space\n"
                    "Upload an image, name some classes, attack it, and watch CLIPure-Cos purify the image "
                    "embedding step by step (ICLR 2025, arXiv 2502.18176). Read **How it works** before trusting "
                    "any robustness number: only the `adaptive` and `bpda` threat models test the defence.")
        if notice:
            gr.Markdown(f"ℹ️ **Offline mode.** {notice}", elem_id="fallback-notice")
        with gr.Tab("Demo"):
            with gr.Row():
                with gr.Column(scale=4):
                    image = gr.Image(label="Image", type="pil", image_mode=None, height=260, elem_id="input-image",
                                     sources=["upload", "clipboard", "webcam"])
                    classnames = gr.Textbox(label="Class names (comma- or newline-separated)",
                                            value=default_classnames(backbone), lines=2, elem_id="classnames")
                    with gr.Row():
                        preset = gr.Dropdown(list(CLASS_PRESETS), label="Class-name presets", value=None)
                        template_set = gr.Radio(list(TEMPLATE_SETS), value=templates_default, label="Prompt templates",
                                                info="single: 'a photo of a {}.' · ensemble: the 80 OpenAI ones")
                    backbone_dd = gr.Dropdown([(f"{k} — {v.description}", k) for k, v in BACKBONES.items()],
                                              value=backbone, label="Backbone")
                    backbone_note = gr.Markdown(_backbone_view(backbone)[3])
                    with gr.Column(visible=not toy) as photo_box:
                        gr.Examples([list(e) for e in examples_for(toy=False)], [image, classnames],
                                    label="Examples (photos, public domain / CC0)", examples_per_page=8,
                                    cache_examples=False)
                    with gr.Column(visible=toy) as toy_box:
                        gr.Examples([list(e) for e in examples_for(toy=True)], [image, classnames],
                                    label="Examples for the toy-shapes model", examples_per_page=8,
                                    cache_examples=False)
                with gr.Column(scale=4):
                    with gr.Accordion("Attack", open=True):
                        with gr.Row():
                            attack = gr.Dropdown(list(ATTACKS), value="PGD", label="Attack")
                            threat_model = gr.Radio(list(THREAT_MODELS), value="undefended", label="Threat model")
                        threat_note = gr.Markdown(on_threat_model("undefended"))
                        attack_note = gr.Markdown(on_attack("PGD")[1])
                        with gr.Row():
                            eps = gr.Slider(0, LIMITS.max_linf_eps, value=4, step=0.5, label="eps (L-inf, in 1/255)")
                            steps = gr.Slider(1, LIMITS.max_attack_steps, value=10, step=1, label="Attack steps")
                        with gr.Row():
                            step_size = gr.Number(0, label="Step size (eps units; 0 = eps/4)", minimum=0)
                            seed = gr.Number(0, label="Seed", precision=0, minimum=0)
                        with gr.Row():
                            targeted = gr.Checkbox(False, label="Targeted")
                            target = gr.Dropdown([], label="Target class", interactive=True, allow_custom_value=True)
                    with gr.Accordion("Purification", open=True):
                        with gr.Row():
                            method = gr.Dropdown([(v.label, k) for k, v in PURIFIERS.items()],
                                                 value=PAPER_DEFAULTS.method, label="Method")
                            p_steps = gr.Slider(0, LIMITS.max_purify_steps, value=PAPER_DEFAULTS.steps, step=1,
                                                label="Steps T")
                        with gr.Row():
                            p_step_size = gr.Number(PAPER_DEFAULTS.step_size, label="Step size η", minimum=0)
                            momentum = gr.Slider(0, 0.99, value=PAPER_DEFAULTS.momentum, step=0.01, label="Momentum γ")
                        with gr.Row():
                            norm = gr.Radio(list(NORMS), value=PAPER_DEFAULTS.norm, label="Update norm")
                            grad_scope = gr.Radio(list(GRAD_SCOPES), value=PAPER_DEFAULTS.grad_scope,
                                                  label="Gradient norm scope",
                                                  info="batch = the official code's coupling")
                        defaults_btn = gr.Button("Restore the paper's defaults (T=10, η=30, γ=0, L2)", size="sm")
                    with gr.Row():
                        run_btn = gr.Button("Run: classify → attack → purify", variant="primary", elem_id="run")
                        compare_btn = gr.Button("Compare threat models", elem_id="compare")
            status = gr.Markdown("", elem_id="status")
            with gr.Row():
                with gr.Column():
                    clean_label = gr.Label(num_top_classes=TOP_K, label="Clean: bare CLIP", elem_id="clean-panel")
                    clean_note = gr.Markdown()
                with gr.Column():
                    adv_label = gr.Label(num_top_classes=TOP_K, label="Adversarial: bare CLIP", elem_id="adv-panel")
                    adv_note = gr.Markdown()
                with gr.Column():
                    purified_label = gr.Label(num_top_classes=TOP_K, label="Adversarial: after CLIPure",
                                              elem_id="purified-panel")
                    purified_note = gr.Markdown()
            with gr.Row():
                adv_image = gr.Image(label="Adversarial image (model resolution)", format="png", type="filepath",
                                     interactive=False, height=240, elem_classes="pixelated")
                pert_image = gr.Image(label="Perturbation (amplified)", format="png", type="filepath",
                                      interactive=False, height=240, elem_classes="pixelated")
                with gr.Column():
                    stats = gr.Markdown(elem_id="stats")
                    adv_download = gr.DownloadButton("Download the adversarial image (lossless PNG)")
            with gr.Row():
                replay = gr.Slider(0, PAPER_DEFAULTS.steps, value=0, step=1, scale=3,
                                   label="Replay: inspect one purification step of the last run", elem_id="replay")
                replay_label = gr.Label(num_top_classes=3, label="Prediction at this step", scale=2)
            replay_note = gr.Markdown(elem_id="replay-note")
            with gr.Tab("Class probabilities per step"):
                prob_plot = gr.Plot(label="Probabilities", format="png", elem_id="prob-plot")
            with gr.Tab("Cosine to the blank"):
                cos_plot = gr.Plot(label="Cosine", format="png", elem_id="cos-plot")
            with gr.Tab("Latent map"):
                map_plot = gr.Plot(label="Latent trajectory", format="png", elem_id="map-plot")
            with gr.Row():
                json_file = gr.File(label="Trajectory (JSON)")
                csv_file = gr.File(label="Trajectory (CSV)")
            compare_caption = gr.Markdown()
            compare_table = gr.Dataframe(label="Same attack, four threat models", interactive=False,
                                         headers=report.COMPARE_COLUMNS, elem_id="compare-table")
        with gr.Tab("How it works"):
            gr.Markdown(HOW_IT_WORKS)

        # API-only endpoints: a hidden button carries them; clients call them by api_name.
        api_only = gr.Button(visible=False)
        api_json = gr.JSON(visible=False)
        api_file_a, api_file_b = gr.File(visible=False), gr.File(visible=False)
        api_stats = gr.JSON(visible=False)

        # --- wiring -----------------------------------------------------------------------------
        common = [image, classnames, backbone_dd, template_set]
        attack_inputs = [attack, threat_model, eps, steps, step_size, seed, targeted, target]
        purify_inputs = [method, p_steps, p_step_size, momentum, norm, grad_scope]
        outputs = [clean_label, adv_label, purified_label, clean_note, adv_note, purified_note, adv_image,
                   pert_image, stats, adv_download, prob_plot, cos_plot, map_plot, json_file, csv_file, status,
                   result_state, replay]
        run_btn.click(run_demo, common + attack_inputs + purify_inputs, outputs, api_name="run",
                      concurrency_id="engine")
        compare_btn.click(compare_demo, common + attack_inputs + purify_inputs, [compare_table, compare_caption],
                          api_name="compare", concurrency_id="engine")
        api_only.click(classify_api, common, api_json, api_name="classify", concurrency_id="engine")
        api_only.click(attack_api, common + attack_inputs + purify_inputs, [api_file_a, api_file_b, api_stats],
                       api_name="attack", concurrency_id="engine")
        api_only.click(purify_api, common + purify_inputs, api_json, api_name="purify", concurrency_id="engine")

        preset.change(lambda p: CLASS_PRESETS[p] if p else gr.skip(), preset, classnames, api_visibility="private")
        classnames.change(on_classnames, [classnames, target], target, api_visibility="private")
        demo.load(on_classnames, [classnames, target], target, api_visibility="private")
        backbone_dd.change(on_backbone, [backbone_dd, active], [backbone_dd, active, photo_box, toy_box, classnames,
                                                                backbone_note], api_visibility="private")
        attack.change(on_attack, attack, [eps, attack_note], api_visibility="private")
        threat_model.change(on_threat_model, threat_model, threat_note, api_visibility="private")
        defaults_btn.click(paper_defaults, None, purify_inputs, api_visibility="private")
        p_steps.change(lambda t: gr.update(maximum=max(int(t), 1)), p_steps, replay, api_visibility="private")
        replay.release(on_replay, [result_state, replay], [replay_label, replay_note, prob_plot, cos_plot],
                       api_visibility="private")
    return demo


def launch(prevent_thread_lock: bool = False, **launch_kwargs) -> gr.Blocks:
    """Start with the default backbone (or the bundled one, with a notice), queue, and serve."""
    backbone, notice = load_default()
    if notice:
        print(f"[clipure] {notice}", flush=True)
    demo = build_demo(backbone.name, notice)
    # One engine request at a time (they share the model and the CPU/GPU); a bounded queue.
    demo.queue(default_concurrency_limit=1, max_size=int(os.environ.get("CLIPURE_QUEUE_SIZE", 16)))
    launch_kwargs.setdefault("server_name", os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"))
    launch_kwargs.setdefault("max_file_size", f"{LIMITS.max_file_mb:g}mb")
    launch_kwargs.setdefault("css", CSS)
    demo.launch(prevent_thread_lock=prevent_thread_lock, **launch_kwargs)
    return demo
