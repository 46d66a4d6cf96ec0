"""Callbacks: plain functions from widget values to engine calls, and from results to widget values.

Every endpoint takes the fields of FORM it names, in FORM's order, so the positional API and
the page never drift: `Form.of(names, values)` is the one adapter from widget values to configs.
"""
from __future__ import annotations

import inspect
import queue
import threading
import time
from dataclasses import dataclass
from functools import wraps
from pathlib import Path

import gradio as gr
import pandas as pd

from app import budget as budgets
from app import report
from app.attacks import ATTACKS, AttackConfig
from app.audit import CHECKS, SWEEP_EPS, Audit, audit, exact_setup
from app.budget import Budget, activate_each, active
from app.classnames import split_classnames
from app.errors import CLIPureError, WeightsUnavailableError
from app.hosting import gpu, request_seconds
from app.limits import LIMITS
from app.models import BACKBONES, load_backbone
from app.evaluate.protocols import PROTOCOLS
from app.pipeline import classify, compare_threat_models, prepare, run, run_pipeline
from app.plots import sweep_figure
from app.images import load_image
from app.presets import CLASS_PRESETS, LESSONS, default_classnames, examples_for, presets_for
from app.purifiers import PAPER_DEFAULTS, PURIFIERS, PurifyConfig
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
# For randomised purifiers (CLIPure-Diff): the purification seed and the attacker's EOT count K.
# Appended after PRECISION for the same reason (they default to 0 and 1).
RANDOMISED = ("p_seed", "eot")
FORM = COMMON + ATTACK_FIELDS + PURIFY_FIELDS + PRECISION + RANDOMISED

# /purify's inputs: no attack; the purification seed appended last.
PURIFY_API = COMMON + PURIFY_FIELDS + PRECISION + ("p_seed",)
# The masking audit's outputs on the page: progress, the checks, the gradient, the eps sweep.
AUDIT_OUTPUTS = ("_audit_status", "_audit_table", "_audit_gradient", "_audit_plot")
AUDIT_COLUMNS = ["check", "what it looks for", "result", "detail"]
# The audit runs about 13 PGD attacks and a Square attack of 10x the steps (app/audit.py).
AUDIT_ATTACKS = 14

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
                            target=(v["target"] or None) if v["targeted"] else None, eot=v.get("eot", 1))

    def purify_config(self) -> PurifyConfig:
        v = self.values
        return PurifyConfig(method=v["method"], steps=v["p_steps"], step_size=v["p_step_size"],
                            momentum=v["momentum"], norm=v["norm"], grad_scope=v["grad_scope"],
                            seed=v.get("p_seed", 0))

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
@gpu(duration=lambda *values: request_seconds(*values, names=PURIFY_API))
def purify_api(*values) -> dict:
    """Purify the clean image's embedding: the whole trajectory with per-step probabilities."""
    form = Form.of(PURIFY_API, values)
    r = run_pipeline(form.image, form.classnames, None, form.purify_config(), **form.engine_args())
    return report.to_dict(r, embeddings=False)


def _audit(form: Form, on_progress=None) -> Audit:
    """The masking audit of the form's image: PGD (L-inf) at the form's eps, steps and seed, under
    its threat model, with its backbone, templates, precision and purification."""
    acfg = AttackConfig(attack="PGD", threat_model=form.threat_model, eps=form.eps, steps=form.steps,
                        seed=form.seed)
    prep, acfg = prepare(form.image, form.classnames, attack=acfg, **form.engine_args())
    pcfg = form.purify_config().validate()
    PURIFIERS[pcfg.method].check_backbone(prep.backbone.name)
    exact = exact_setup(prep.classifier, prep.blank, prep.backbone.name, prep.classnames, form.template_set,
                        prep.backbone.precision)
    return audit(prep.x, prep.classifier, prep.blank, prep.classnames, acfg.threat_model, exact,
                 prep.backbone.precision, pcfg, acfg.eps, acfg.steps, acfg.seed, prep.backbone.name, on_progress)


def audit_view(result: Audit, wall_s: float) -> tuple:
    """The audit panel's (status, checks table, gradient line, eps-sweep figure)."""
    rows = [[f"({c.name})", CHECKS[c.name], "FLAGGED" if c.flagged else "ok", c.detail] for c in result.checks]
    flagged = [c.name for c in result.checks if c.flagged]
    verdict = (f"checks {', '.join(f'({n})' for n in flagged)} flagged: signs of gradient masking" if flagged
               else "no check flagged")
    g = result.gradient
    cos = "undefined (a zero gradient)" if g.cos_to_exact != g.cos_to_exact else f"{g.cos_to_exact:.3f}"
    gradient = (f"**Attacker's gradient** ({result.threat_model}, {result.precision}): norm **{g.norm:.3g}** · "
                f"exactly zero: **{g.zero_fraction:.0%}** of the pixels · cosine with the exact fp32 gradient "
                f"(norm {g.exact_norm:.3g}): **{cos}**")
    status = f"**Audit done in {wall_s:.1f} s:** {verdict} (reference class: {result.image_label})."
    fig = sweep_figure(SWEEP_EPS, result.sweep, result.image_label,
                       f"PGD (L-inf) | threat model: {result.threat_model} | {result.precision}")
    return status, pd.DataFrame(rows, columns=AUDIT_COLUMNS), gradient, fig


def _audit_in_thread(form: Form):
    """Run the audit in a worker under a child of the request's budget (stopped when this generator
    ends: a cancel or disconnect); yield ("progress", (fraction, message)) and then ("done", Audit)."""
    q: queue.Queue = queue.Queue()
    stop = budgets.Budget(parent=budgets.current())

    def work():
        try:
            with budgets.active(stop):
                q.put(("done", _audit(form, lambda f, m: q.put(("progress", (f, m))))))
        except BaseException as e:   # re-raised in the caller's thread
            q.put(("error", e))

    threading.Thread(target=work, name="clipure-audit", daemon=True).start()
    try:
        while True:
            kind, value = q.get()
            if kind == "error":
                raise value
            yield kind, value
            if kind == "done":
                return
    finally:
        stop.stop()


@user_errors
@gpu(duration=lambda *values: request_seconds(*values, threat_models=AUDIT_ATTACKS))
def audit_demo(*values):
    """The audit panel: progress beside the button while the audit runs, then the result."""
    started = time.monotonic()
    yield progress_text(None, "Audit: loading the model and the class names"), gr.skip(), gr.skip(), gr.skip()
    for kind, value in _audit_in_thread(Form.of(FORM, values)):
        if kind == "done":
            yield audit_view(value, time.monotonic() - started)
        else:
            yield progress_text(value[0], f"Audit: {value[1]}"), gr.skip(), gr.skip(), gr.skip()


@user_errors
@gpu(duration=lambda *values: request_seconds(*values, threat_models=AUDIT_ATTACKS))
def audit_api(*values) -> dict:
    """The masking audit (checks a-f, the attacker's gradient, the eps sweep) as one JSON object."""
    *_, (_, result) = _audit_in_thread(Form.of(FORM, values))
    return result.to_dict()


def paper_preset() -> dict:
    """The paper's protocol (PROTOCOLS["paper"]) as widget values by FORM name."""
    p = PROTOCOLS["paper"].values
    return dict(attack=p["attacks"][0], threat_model=p["threat_models"][0], eps=p["eps"][0], steps=p["steps"],
                precision=p["precision"], template_set=p["templates"], method=p["defences"][0],
                p_steps=p["purify_steps"], p_step_size=p["etas"][0], momentum=p["momentum"], norm=p["update_norm"],
                grad_scope=p["grad_scope"], step_size=0, targeted=False)


def paper_preset_note() -> str:
    """What the preset cannot match, and what the public demo scales down."""
    p = PROTOCOLS["paper"]
    unmatched = "".join(f"\n- {u}" for u in p.unmatched)
    return (f"**The paper's protocol** ({p.description}): AutoAttack custom, L-inf 4/255, 100 steps, the official "
            f"threat model, fp16, the 80-template ensemble, T=10 η=30 γ=0 L2 with the batch-coupled norm. The paper "
            f"used `{p.values['model']}`; pick it under More settings if this machine has it.\n\n"
            f"**What torchattacks cannot match:**{unmatched}\n\n"
            f"**What this demo scales down:** one image instead of batches of 2 (so the batch norm couples "
            f"nothing), and one request may run at most {LIMITS.max_request_seconds:.0f} s: if it is cut off, "
            f"lower **Attack steps**.")


def on_paper_preset():
    """The preset button: the widgets in PAPER_PRESET_FIELDS order, then the note."""
    values = paper_preset()
    return (*(values[k] for k in PAPER_PRESET_FIELDS), paper_preset_note())


PAPER_PRESET_FIELDS = tuple(paper_preset())


def paper_preset_api() -> dict:
    """The paper's protocol: the values to send to /run (by FORM name) and what the demo can't match."""
    return {"values": paper_preset(), "form": list(FORM), "unmatched": list(PROTOCOLS["paper"].unmatched),
            "note": paper_preset_note()}


# --- page events ----------------------------------------------------------------------------

def on_replay(result, step):
    """Inspect one purification step of the last run: its prediction, and a marker on every plot."""
    if result is None:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
    step = int(min(max(step, 0), result.trajectory.steps))
    f_probs, f_cos, f_map = report.figures(result, TOP_K, step)
    label = result.trajectory.prediction(step, result.classnames).top(TOP_K, result.classnames)
    return label, report.step_markdown(result, step), f_probs, f_cos, f_map


def methods_for(backbone: str) -> list[tuple[str, str]]:
    """The purification menu for a backbone: (label, key) of the purifiers that support it."""
    return [(spec.label, k) for k, spec in PURIFIERS.items() if spec.supports(backbone)]


def on_method_menu(backbone, method):
    """Refresh the method menu for a backbone; a method it cannot run falls back to the paper's default."""
    choices = methods_for(backbone)
    keep = method if method in [k for _, k in choices] else PAPER_DEFAULTS.method
    return gr.update(choices=choices, value=keep)


def on_method(method):
    """A randomised purifier (CLIPure-Diff) says so and shows its seed and the attacker's EOT count."""
    spec = PURIFIERS.get(method) if isinstance(method, str) else None
    randomised = bool(spec and spec.randomised)
    note = (f"**{spec.label} is a randomised defence:** each purification step draws a random diffusion "
            f"timestep, so the purification seed fixes one draw, and an adaptive attacker should average "
            f"its gradient over K draws (EOT, attacks PGD and APGD*)." if randomised else "")
    return note, gr.update(visible=randomised), gr.update(visible=randomised)


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
