"""Callbacks: plain functions from widget values to engine calls, and from results to widget values.

Every endpoint takes the fields of FORM it names, in FORM's order, so the positional API and
the page never drift: `Form.of(names, values)` is the one adapter from widget values to configs.
"""
from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from functools import wraps
from pathlib import Path

import gradio as gr

from app import report
from app.attacks import ATTACKS, AttackConfig
from app.budget import Budget, activate_each, active
from app.classnames import split_classnames
from app.errors import CLIPureError, WeightsUnavailableError
from app.hosting import gpu, request_seconds
from app.limits import LIMITS
from app.models import BACKBONES, load_backbone
from app.pipeline import classify, compare_threat_models, run, run_pipeline
from app.images import load_image
from app.presets import CLASS_PRESETS, LESSONS, default_classnames, examples_for, presets_for
from app.purifiers import PAPER_DEFAULTS, PurifyConfig
from app.server import output_dir
from app.threat_models import THREAT_MODELS

TOP_K = 5
STREAM_PLOT_INTERVAL_S = 0.5   # streamed plots redraw at most this often; the final draw always happens
STREAM_STEP_INTERVAL_S = 0.05  # at most 20 updates a second while streaming; the first and last always

# The request form, in API order: what the user picked, then the attack, then the purification.
COMMON = ("image", "classnames", "backbone", "template_set")
ATTACK_FIELDS = ("attack", "threat_model", "eps", "steps", "step_size", "seed", "targeted", "target")
PURIFY_FIELDS = ("method", "p_steps", "p_step_size", "momentum", "norm", "grad_scope")
# Appended last, so API calls written before it existed still work (it defaults to fp32).
PRECISION = ("precision",)
FORM = COMMON + ATTACK_FIELDS + PURIFY_FIELDS + PRECISION

# What /run fills, in order; callbacks return {name: value} and `run_outputs` orders them.
RUN_OUTPUTS = ("clean_label", "adv_label", "purified_label", "clean_note", "adv_note", "purified_note",
               "adv_image", "pert_image", "stats", "adv_download", "prob_plot", "cos_plot", "map_plot",
               "json_file", "csv_file", "status", "result_state", "replay", "replay_label", "replay_note")


@dataclass
class Form:
    """The widget values of one request, by FORM name."""
    values: dict

    @classmethod
    def of(cls, names, values) -> "Form":
        assert len(names) == len(values), (names, values)
        return cls(dict(zip(names, values)))

    def __getattr__(self, name):
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    def attack_config(self) -> AttackConfig:
        v = self.values
        return AttackConfig(attack=v["attack"], threat_model=v["threat_model"], eps=v["eps"], steps=v["steps"],
                            step_size=v["step_size"] or None, seed=v["seed"], targeted=bool(v["targeted"]),
                            target=(v["target"] or None) if v["targeted"] else None)

    def purify_config(self) -> PurifyConfig:
        v = self.values
        return PurifyConfig(method=v["method"], steps=v["p_steps"], step_size=v["p_step_size"],
                            momentum=v["momentum"], norm=v["norm"], grad_scope=v["grad_scope"])

    def engine_args(self) -> dict:
        return dict(model=self.backbone, template_set=self.template_set, precision=self.values.get("precision"))


def user_errors(fn):
    """The engine's one-sentence errors become gr.Error; anything else stays a real error.
    Works for plain functions and for generators (streamed endpoints). Each call runs under its
    own budget (app/budget.py): LIMITS.max_request_seconds, and for a stream a stop flag that is
    set when Gradio closes it (cancel, disconnect)."""
    if inspect.isgeneratorfunction(fn):
        @wraps(fn)
        def stream(*args, **kwargs):
            try:
                yield from activate_each(Budget(LIMITS.max_request_seconds), fn(*args, **kwargs))
            except CLIPureError as e:
                raise gr.Error(str(e), print_exception=False) from None
        return stream

    @wraps(fn)
    def call(*args, **kwargs):
        try:
            with active(Budget(LIMITS.max_request_seconds)):
                return fn(*args, **kwargs)
        except CLIPureError as e:
            raise gr.Error(str(e), print_exception=False) from None
    return call


def run_outputs(**values) -> tuple:
    """A value for every /run output, in RUN_OUTPUTS order; gr.skip() leaves the rest as they are."""
    assert set(values) <= set(RUN_OUTPUTS), set(values) - set(RUN_OUTPUTS)
    return tuple(values.get(name, gr.skip()) for name in RUN_OUTPUTS)


def progress_text(fraction: float | None, message: str) -> str:
    """The status line beside the button: a text bar, so progress shows where the user clicked."""
    if fraction is None:
        return f"⏳ {message}"
    filled = int(round(20 * fraction))
    return f"⏳ `{'█' * filled}{'░' * (20 - filled)}` {100 * fraction:.0f}% · {message}"


# --- endpoints ------------------------------------------------------------------------------

@user_errors
@gpu(duration=request_seconds)
def run_demo(*values):
    """Classify, attack, purify; streams progress and each purification step."""
    form = Form.of(FORM, values)
    pcfg = form.purify_config()
    started = time.monotonic()
    names, steps, last_draw, last_status, last_yield = [], [], None, 0.0, 0.0
    for event in run(form.image, form.classnames, form.attack_config(), pcfg, **form.engine_args()):
        names = event.classnames or names
        now = time.monotonic()
        if event.phase == "prepare":   # validation comes first: a refused request shows no progress at all
            continue
        if event.phase in ("clean", "attack", "attack-step", "heartbeat"):
            if now - last_status >= 0.1 or event.phase != "attack-step":   # at most 10 progress messages a second
                last_status = now
                yield run_outputs(status=progress_text(event.fraction, event.message))
        elif event.phase == "purify-adv":
            s = event.step
            steps.append(s)
            last_draw = last_draw or now   # fast purifications finish before any redraw
            if s.step not in (0, pcfg.steps) and now - last_yield < STREAM_STEP_INTERVAL_S:
                continue
            last_yield = now
            top1 = names[int(s.top1[0])]
            update = dict(purified_label=report.step_prediction(s, names).top(TOP_K, names),
                          status=progress_text(event.fraction, f"{event.message}, cos to blank "
                                               f"{float(s.cos_to_blank[0]):.3f}, top-1 {top1}"))
            if now - last_draw >= STREAM_PLOT_INTERVAL_S:
                update["prob_plot"], update["cos_plot"] = report.streamed_figures(steps, names, TOP_K)
                last_draw = time.monotonic()
            yield run_outputs(**update)
        elif event.phase == "done":
            yield final_outputs(event.result, time.monotonic() - started)


def final_outputs(r, wall_s: float | None = None) -> tuple:
    for w in r.warnings:
        gr.Warning(w)
    files = report.export(r, output_dir())
    f_probs, f_cos, f_map = report.figures(r, TOP_K)
    return run_outputs(
        clean_label=r.clean.top(TOP_K, r.classnames),
        adv_label=r.adversarial.top(TOP_K, r.classnames),
        purified_label=r.purified.top(TOP_K, r.classnames),
        **report.outcome_notes(r),
        adv_image=str(files["adversarial"]), pert_image=str(files["perturbation"]),
        stats=report.stats_markdown(r, files["factor"]), adv_download=str(files["adversarial"]),
        prob_plot=f_probs, cos_plot=f_cos, map_plot=f_map,
        json_file=str(files["json"]), csv_file=str(files["csv"]),
        status=done_status(r, wall_s),
        result_state=r, replay=r.purify_config.steps,
        replay_label=r.trajectory.prediction(-1, r.classnames).top(TOP_K, r.classnames),
        replay_note=report.step_markdown(r, r.purify_config.steps),
    )


def done_status(r, wall_s: float | None) -> str:
    """The status line after a run: wall time, the verdict in words, and any caveat."""
    took = f"{wall_s:.1f} s" if wall_s is not None else f"{r.timings['total']:.1f} s (engine)"
    text = f"**Done in {took}.**"
    if r.outcome is not None:
        text += (f" Attack on bare CLIP: **{'succeeded' if r.outcome.fooled_clip else 'failed'}**; "
                 f"on CLIPure: **{'succeeded' if r.outcome.fooled_clipure else 'failed'}**.")
    if r.meaningless:
        text += " Random weights: the predictions are MEANINGLESS."
    return text


@user_errors
@gpu(duration=lambda *values: request_seconds(*values, threat_models=len(THREAT_MODELS)))
def compare_demo(*values):
    """The same attack under all four threat models; one table row each."""
    form = Form.of(FORM, values)
    results = compare_threat_models(form.image, form.classnames, form.attack_config(), form.purify_config(),
                                    **form.engine_args())
    table = report.compare_table(results)
    cap = report.caption(results[0], threat_model="each row")
    return table, f"Clean prediction: **{results[0].clean.label}**. <sub>{cap}</sub>"


@user_errors
@gpu(duration=lambda *values: request_seconds(*values, names=COMMON))
def classify_api(*values) -> dict:
    """Bare zero-shot CLIP: the label and the top class probabilities."""
    form = Form.of(COMMON + PRECISION, values)
    pred, prep = classify(form.image, form.classnames, **form.engine_args())
    return {"label": pred.label, "confidences": pred.top(TOP_K, prep.classnames), "backbone": prep.backbone.name,
            "meaningless": prep.backbone.spec.meaningless, "classnames": prep.classnames, "warnings": prep.warnings}


@user_errors
@gpu(duration=request_seconds)
def attack_api(*values):
    """Attack only: the adversarial PNG, the clean PNG at model resolution, and the statistics."""
    form = Form.of(FORM, values)
    r = run_pipeline(form.image, form.classnames, form.attack_config(), form.purify_config(), **form.engine_args())
    files = report.export(r, output_dir())
    stats = report.to_dict(r, embeddings=False)
    stats.pop("trajectory")
    return str(files["adversarial"]), str(files["clean"]), stats


@user_errors
@gpu(duration=lambda *values: request_seconds(*values, names=COMMON + PURIFY_FIELDS))
def purify_api(*values) -> dict:
    """Purify the clean image's embedding: the whole trajectory with per-step probabilities."""
    form = Form.of(COMMON + PURIFY_FIELDS + PRECISION, values)
    r = run_pipeline(form.image, form.classnames, None, form.purify_config(), **form.engine_args())
    return report.to_dict(r, embeddings=False)


# --- page events ----------------------------------------------------------------------------

def on_replay(result, step):
    """Inspect one purification step of the last run: its prediction, and a marker on every plot."""
    if result is None:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
    step = int(min(max(step, 0), result.trajectory.steps))
    f_probs, f_cos, f_map = report.figures(result, TOP_K, step)
    label = result.trajectory.prediction(step, result.classnames).top(TOP_K, result.classnames)
    return label, report.step_markdown(result, step), f_probs, f_cos, f_map


def on_backbone(name, active):
    """Load the picked backbone; on failure say why and keep the one that works."""
    try:
        load_backbone(name)
    except WeightsUnavailableError as e:
        gr.Warning(str(e))
        name = active
    examples, classnames, note, presets = backbone_view(name)
    return name, name, examples, classnames, note, gr.update(choices=presets, value=None)


def backbone_view(name):
    """(example thumbnails, default class names, note, fitting presets) for a backbone."""
    spec = BACKBONES[name]
    toy = spec.source == "bundled"
    note = f"**Backbone:** `{name}`: {spec.description}."
    if spec.meaningless:
        note = f"**Backbone:** `{name}` has random weights, so its predictions are meaningless: smoke tests only."
    examples = [(path, Path(path).stem.removeprefix("toy-").replace("-", " ")) for path, _ in examples_for(toy)]
    return examples, default_classnames(name), note, presets_for(name)


def on_example(evt: gr.SelectData, active):
    """A click on an example thumbnail: its image and the class names that fit it."""
    path, names = examples_for(BACKBONES[active].source == "bundled")[evt.index]
    return path, names


def on_upload(path):
    """Check an upload at once: a file that is not an image gets one sentence beside Run, not a broken box."""
    if path is None:
        return gr.skip(), gr.skip()
    try:
        load_image(path, LIMITS)
    except CLIPureError as e:
        return None, f"**Not used:** {e}"
    return gr.skip(), "Image ready: press **Run**."


def on_template_set(template_set, classnames, active):
    """Say what the ensemble costs before it runs: 80 text-encoder passes per class, once."""
    if template_set != "ensemble":
        return ""
    n = len(split_classnames(classnames)) + 1   # + the blank
    where = "on this CPU that takes minutes" if load_backbone(active).device.type == "cpu" else "seconds on a GPU"
    return (f"**Cost:** the ensemble encodes 80 prompts per class, {80 * n} text-encoder passes for these "
            f"{n - 1} classes and the blank the first time ({where}); later runs reuse them.")


def on_lesson(k: int):
    """The k-th teacher's lesson: its settings (in the order of its fields) and its two sentences."""
    lesson = LESSONS[k]

    def apply():
        return (*lesson.settings.values(), f"**{lesson.title}.** {lesson.text}")
    apply.__name__ = f"lesson_{k + 1}"
    return apply


def on_classnames(text, current_target):
    names = split_classnames(text)
    fallback = names[1] if len(names) > 1 else None   # the first is often the clean class
    return gr.update(choices=names, value=current_target if current_target in names else fallback)


def on_preset(preset):
    return CLASS_PRESETS[preset] if preset else gr.skip()


def on_attack(name):
    spec = ATTACKS[name]
    if spec.norm == "l2":
        eps = gr.update(label="eps (L2, pixel units)", value=0.5, interactive=True)
    elif spec.norm == "linf":
        eps = gr.update(label="eps (L-inf, in 1/255)", value=4, interactive=True)
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



def on_purify_steps(steps):
    """The replay slider spans the purification steps (a bad T is the engine's to refuse)."""
    try:
        return gr.update(maximum=max(int(steps), 1))
    except (TypeError, ValueError):
        return gr.skip()
