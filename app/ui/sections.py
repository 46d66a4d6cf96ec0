"""The page's sections, each a function that adds its widgets to `c` (by FORM, RUN_OUTPUTS or a
private "_" name): the lesson stage, the request form, the audit panel, the results, the settings.
Layout only; app/ui/layout.py wires them."""
from __future__ import annotations

import gradio as gr

from app.views import comparison, report
from app.attacks import ATTACKS
from app.common.limits import LIMITS
from app.clip.models import BACKBONES
from app.clip.precision import PRECISIONS
from app.views.presets import LESSONS, default_classnames, presets_for
from app.defences import DEFENCES, GRAD_SCOPES, NORMS, PAPER_DEFAULTS
from app.attacks.threat_models import THREAT_MODELS
from app.ui import events as ev
from app.ui import form as fm
from app.ui.components import ImagePath
from app.clip.zeroshot import TEMPLATE_SETS

# The plot tabs, in report.PLOTS order: (key, tab, label, element id).
PLOT_TABS = (("prob_plot", "Probabilities", "Class probabilities per step", "prob-plot"),
             ("cos_plot", "Cosine", "Cosine to the blank per step", "cos-plot"),
             ("rot_plot", "Rotation (exact)", "The purification in the plane of the embedding and the blank",
              "rot-plot"),
             ("map_plot", "Map (PCA)", "Latent trajectory, projected by PCA", "map-plot"))


def lesson_row(c: dict) -> list:
    """The lesson buttons and the paper's protocol; returns the lesson buttons."""
    with gr.Row(elem_id="lesson-row", equal_height=True):
        lessons = [gr.Button(lesson.title, size="sm", min_width=120, elem_id=f"lesson-{k}")
                   for k, lesson in enumerate(LESSONS, 1)]
        c["_paper"] = gr.Button("The paper's protocol (AutoAttack, 4/255, fp16)", size="sm", min_width=120,
                                elem_id="paper-preset")
    return lessons


def lesson_stage(c: dict) -> dict:
    """Where a lesson makes its point: its text, its result and the one view that proves it, together
    in one screen (hidden until a lesson or the paper's protocol is chosen)."""
    with gr.Column(visible=False, elem_id="lesson-stage") as c["_stage"]:
        c["_lesson_text"] = gr.Markdown(elem_id="lesson-text")
        c["_lesson_result"] = gr.Markdown(elem_id="lesson-result")
        c["_lesson_images"] = gr.Gallery(label="Clean, attacked, and the change (amplified)", columns=3, rows=1,
                                         height="auto", allow_preview=False, object_fit="contain", visible=False,
                                         elem_id="lesson-images")
        c["_lesson_plot"] = gr.Plot(label="The rotation, exactly", format="png", visible=False, show_label=False,
                                    elem_id="lesson-plot", elem_classes="figure")
        c["_lesson_step"] = gr.Slider(0, PAPER_DEFAULTS.steps, value=1, step=1, visible=False,
                                      label="Purification step (arrow keys move it)", elem_id="lesson-step")
        c["_lesson_table"] = gr.Dataframe(label="Same attack, each threat model", interactive=False, wrap=True,
                                          visible=False, elem_id="lesson-table")
        c["_lesson_files"] = gr.File(label="This lesson's files", file_count="multiple", visible=False,
                                     elem_id="lesson-files")
    return c


def inputs(c: dict) -> dict:
    """The request form: the essentials beside Run, the choices that change the result most first;
    details in a closed accordion (settings)."""
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=260):
            c["image"] = ImagePath(label="Image", type="filepath", height=190, elem_id="input-image",
                                   sources=["upload", "clipboard", "webcam"])
            c["_examples"] = gr.Gallery(ev.backbone_view(c["_start"])[0], label="Examples (click one)", columns=4,
                                        height="auto", allow_preview=False, show_label=True,
                                        elem_id="examples", object_fit="contain")
        with gr.Column(scale=5, min_width=300):
            c["classnames"] = gr.Textbox(label="Class names (comma- or newline-separated)", max_lines=3,
                                         value=default_classnames(c["_start"]), lines=1, elem_id="classnames")
            with gr.Row():
                c["attack"] = gr.Dropdown(list(ATTACKS), value="PGD", label="Attack", min_width=110)
                c["threat_model"] = gr.Dropdown(list(THREAT_MODELS), value="undefended", label="Threat model",
                                                min_width=110, elem_id="threat-model")
                c["precision"] = gr.Dropdown(list(PRECISIONS), value="fp32", label="Precision", min_width=90,
                                             elem_id="precision",
                                             info="fp16: the official evaluation's (How it works)")
                c["defence"] = gr.Dropdown(ev.defences_for(c["_start"]), value=PAPER_DEFAULTS.defence,
                                           label="Defence", min_width=130, elem_id="defence")
            with gr.Row():
                # Numbers, not sliders: a slider clamps what is typed; the engine refuses it in one sentence.
                # No precision=0, minimum or maximum on any gr.Number: Gradio would round 2.5 to 2 without a
                # word, or answer with its own generic sentence; the engine's checks name the field.
                c["eps"] = gr.Number(4, label="eps (L-inf, in 1/255)", elem_id="eps", min_width=90)
                c["steps"] = gr.Number(10, label="Attack steps", elem_id="steps", min_width=90)
                c["purify_steps"] = gr.Number(PAPER_DEFAULTS.steps, label="Purify steps T",
                                         elem_id="p-steps", min_width=90)
                c["purify_step_size"] = gr.Number(PAPER_DEFAULTS.step_size, label="Step size η", min_width=90)
            with gr.Row(elem_id="run-row"):
                c["_run"] = gr.Button("Run: classify → attack → purify", variant="primary", elem_id="run",
                                      min_width=160)
                c["_compare"] = gr.Button("Compare threat models", elem_id="compare", min_width=140)
                c["_audit"] = gr.Button("Audit gradient masking", elem_id="audit", min_width=140)
            c["status"] = gr.Markdown("Pick an example or upload an image, then press **Run**.", label="status",
                                  elem_id="status")
    return c


def audit_panel(c: dict) -> dict:
    """The masking audit's own panel, the page's full width, hidden until its button is pressed."""
    with gr.Column(visible=False, elem_id="audit-panel") as c["_audit_panel"]:
        c["_audit_status"] = gr.Markdown(label="audit status", elem_id="audit-status")
        c["_audit_table"] = gr.Dataframe(headers=fm.AUDIT_COLUMNS, label="Masking audit: checks (a)-(f)",
                                         interactive=False, wrap=True, elem_id="audit-table",
                                         datatype=["str", "str", "html", "str"],
                                         column_widths=["7%", "30%", "10%", "53%"])
        c["_audit_gradient"] = gr.Markdown(label="attacker's gradient", elem_id="audit-gradient")
        c["_audit_plot"] = gr.Plot(label="Eps sweep", format="png", elem_id="audit-plot", elem_classes="figure",
                                   show_label=False)
        with gr.Row():
            c["_audit_json"] = gr.DownloadButton("Export the audit (JSON)", visible=False, size="sm",
                                                 elem_id="audit-json")
            c["_audit_png"] = gr.Button("Export the eps sweep (PNG)", size="sm", elem_id="audit-png")
    return c


def results(c: dict) -> dict:
    """The widgets /run fills, by RUN_OUTPUTS name (plus the compare panel): predictions first."""
    with gr.Row(elem_id="results-row"):
        for key, label, elem in (("clean", "Clean: bare CLIP", "clean-panel"),
                                 ("adv", "Attacked: bare CLIP", "adv-panel"),
                                 ("purified", f"Attacked: {DEFENCES[PAPER_DEFAULTS.defence].label}",
                                  "purified-panel")):
            with gr.Column(min_width=100):
                c[f"{key}_label"] = gr.Label(num_top_classes=3, label=label, elem_id=elem)
                c[f"{key}_note"] = gr.Markdown(label=f"{key} note", elem_id=f"{key}-note")
    with gr.Column(visible=False, elem_id="compare-panel") as c["_compare_panel"]:
        c["_compare_caption"] = gr.Markdown(label="caption", elem_id="compare-caption")
        c["_compare_table"] = gr.Dataframe(label="Same attack, each threat model", interactive=False, wrap=True,
                                           headers=comparison.COMPARE_COLUMNS, elem_id="compare-table")
        c["_compare_csv"] = gr.DownloadButton("Export the table (CSV)", visible=False, size="sm",
                                              elem_id="compare-csv")
    with gr.Row():
        c["adv_image"] = gr.Image(label="Attacked image (model resolution)", format="png", type="filepath",
                                  interactive=False, height=200, elem_classes="pixelated", min_width=140)
        c["pert_image"] = gr.Image(label="Perturbation (amplified)", format="png", type="filepath",
                                   interactive=False, height=200, elem_classes="pixelated", min_width=140)
        c["defence_image"] = gr.Image(label="The defence's image (what it classifies)", format="png",
                                  type="filepath", interactive=False, height=200, elem_classes="pixelated",
                                  min_width=140, visible=False, elem_id="defence-image")
        with gr.Column(min_width=260):
            c["stats"] = gr.Markdown(label="statistics", elem_id="stats")
            c["adv_download"] = gr.DownloadButton("Download the attacked image (lossless PNG)", interactive=False)
    with gr.Row():
        c["replay"] = gr.Slider(0, PAPER_DEFAULTS.steps, value=0, step=1, scale=3, min_width=200,
                                label="Replay: one purification step of the last run (arrow keys move it)",
                                elem_id="replay")
        c["replay_label"] = gr.Label(num_top_classes=3, label="Prediction at this step", scale=2, min_width=160)
    c["replay_note"] = gr.Markdown(label="replay note", elem_id="replay-note")
    c["_plot_in_view"] = gr.State("prob_plot")   # which plot tab is open: only that plot is drawn
    c["_narrow"] = gr.Checkbox(False, visible=False)   # a phone's screen, set on load (NARROW_JS)
    with gr.Tabs(elem_id="plot-tabs") as c["_plot_tabs"]:
        for key, tab, label, elem in PLOT_TABS:
            with gr.Tab(tab, id=key) as c[f"_{key}_tab"]:
                # The figures carry their own title and caption: no block label over them.
                c[key] = gr.Plot(label=label, format="png", elem_id=elem, elem_classes="figure", show_label=False)
    c["_plot_png"] = gr.Button("Export the plot in view (PNG)", size="sm", elem_id="plot-png")
    with gr.Row(visible=False, elem_id="run-files") as c["_run_files"]:
        c["json_file"] = gr.File(label="Trajectory and what ran (JSON)")
        c["csv_file"] = gr.File(label="Trajectory (CSV)")
    return c


def settings(c: dict) -> dict:
    """Everything else of the request form, in a closed accordion."""
    with gr.Accordion("More settings: model, classes, attack and purification details", open=False):
        with gr.Row():
            c["backbone"] = gr.Dropdown([(f"{k} — {v.description}", k) for k, v in BACKBONES.items()],
                                        value=c["_start"], label="Backbone", elem_id="backbone")
            c["_preset"] = gr.Dropdown(presets_for(c["_start"]), label="Class-name presets", value=None)
        c["template_set"] = gr.Radio(list(TEMPLATE_SETS), value=c["_templates"], label="Prompt templates",
                                     info="single: 'a photo of a {}.' · ensemble: the 80 OpenAI ones")
        c["_template_note"] = gr.Markdown(elem_id="template-note")
        c["_threat_note"] = gr.Markdown(ev.on_threat_model("undefended"))
        c["_attack_note"] = gr.Markdown(ev.on_attack("PGD")[1])
        with gr.Row():
            c["step_size"] = gr.Number(0, label="Attack step size (eps units; 0 = eps/4)")
            c["seed"] = gr.Number(0, label="Seed")
            c["targeted"] = gr.Checkbox(False, label="Targeted")
            c["target"] = gr.Dropdown([], label="Target class", interactive=True, allow_custom_value=True)
        with gr.Row():
            c["momentum"] = gr.Number(PAPER_DEFAULTS.momentum, label="Momentum γ")
            c["norm"] = gr.Radio(list(NORMS), value=PAPER_DEFAULTS.norm, label="Update norm")
            c["grad_scope"] = gr.Radio(list(GRAD_SCOPES), value=PAPER_DEFAULTS.grad_scope,
                                       label="Gradient norm scope", info="batch = the official code's coupling")
        c["_defence_note"] = gr.Markdown(elem_id="defence-note")
        # Each defence's own parameters (its config dataclass), shown while it is the chosen one.
        for key, spec in DEFENCES.items():
            names = [n for n, (k, _) in fm.DEFENCE_PARAMS.items() if k == key]
            if names:
                with gr.Row(visible=key == PAPER_DEFAULTS.defence, elem_id=f"params-{key}") as c[f"_params_{key}"]:
                    for n in names:
                        own = fm.DEFENCE_PARAMS[n][1]
                        c[n] = gr.Number(own.default, label=f"{spec.label}: {own.name}", elem_id=n.replace("_", "-"),
                                         min_width=90)
        c["method"] = gr.State(None)   # the API's older name of `defence`; the page sends nothing there
        with gr.Row():
            # Shown for randomised purifiers only (CLIPure-Diff); hidden widgets still send their values,
            # so hiding the EOT count resets it to 1 (events.on_defence).
            c["purify_seed"] = gr.Number(PAPER_DEFAULTS.seed, label="Purification seed", visible=False,
                                    elem_id="p-seed", min_width=90)
            c["eot"] = gr.Number(1, label=f"EOT K: gradients the attacker averages per step (1-{LIMITS.max_eot})",
                                 visible=False, elem_id="eot", min_width=90)
        c["_defaults"] = gr.Button("Restore the paper's defaults (T=10, η=30, γ=0, L2)", size="sm")
    return c
