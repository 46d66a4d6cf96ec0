"""Page events: what the page does when a widget changes (no engine request)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import gradio as gr

from app.views import report
from app.attacks import ATTACKS
from app.clip.classnames import split_classnames
from app.common.errors import CLIPureError, WeightsUnavailableError
from app.clip.images import load_image
from app.common.limits import LIMITS
from app.clip.models import BACKBONES, load_backbone, pick_device
from app.views.presets import (
    CLASS_PRESETS,
    default_classnames,
    examples_for,
    presets_for,
)
from app.defences import PAPER_DEFAULTS, DEFENCES, trajectory_steps
from app.attacks.threat_models import THREAT_MODELS
from app.ui.callbacks import TOP_K
from app.ui.form import PURIFY_FIELDS, Form

# --- page events ----------------------------------------------------------------------------

def on_replay(result, step, in_view="prob_plot", narrow=False):
    """Inspect one purification step of the last run: its prediction, and a marker on the plot in
    view (the others are drawn, with the marker, when their tab is opened)."""
    if result is None:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
    step = int(min(max(step, 0), result.trajectory.steps))
    label = result.trajectory.prediction(step, result.classnames).top(TOP_K, result.classnames)
    plots = [on_plot_tab(result, step, p, narrow) if p == in_view else gr.skip() for p in report.PLOTS]
    return label, report.step_markdown(result, step), *plots


def on_plots_after_run(result, step, in_view: str, narrow=False):
    """After a run: (probabilities, cosine, map). The plot in view is drawn, unless it is the
    probabilities on a wide screen, which the run drew itself; a phone (`narrow`) gets it again
    with its panels stacked. The rest are left as the run left them."""
    return tuple(on_plot_tab(result, step, p, narrow) if p == in_view and (narrow or p != "prob_plot")
                 else gr.skip() for p in report.PLOTS)


def on_plot_tab(result, step, which: str, narrow=False):
    """Draw one plot (a name in report.PLOTS) when its tab comes into view, at the replay step;
    narrow (a phone's screen, set by the page on load): panels stacked, so the text stays legible."""
    if result is None:
        return gr.skip()
    return report.figure(result, which, TOP_K, int(min(max(step, 0), result.trajectory.steps)), bool(narrow))


def defences_for(backbone: str) -> list[tuple[str, str]]:
    """The defence menu for a backbone: (label, key) of the defences that support it."""
    return [(spec.label, k) for k, spec in DEFENCES.items() if spec.supports(backbone)]


def on_defence_menu(backbone, defence):
    """Refresh the defence menu for a backbone; one it cannot run falls back to the paper's default."""
    choices = defences_for(backbone)
    keep = defence if defence in [k for _, k in choices] else PAPER_DEFAULTS.defence
    return gr.update(choices=choices, value=keep)


def eot_attacks() -> list[str]:
    """The attacks that can average K gradients per step (EOT), from the attack registry."""
    return [name for name, spec in ATTACKS.items() if spec.eot]


def on_defence(defence):
    """The chosen defence's line (its declaration), the panel title naming it, its own parameters
    shown (the others hidden), and for a randomised one its seed and the attacker's EOT count.

    A deterministic defence hides both, and they go back to their defaults as they hide: a hidden
    field still sends its value, and the engine refuses K > 1 against a defence that draws nothing
    (and a bad seed, whatever the defence)."""
    spec = DEFENCES.get(defence)
    if spec is None:   # not a defence: the engine's to refuse, in one sentence, at Run
        return ("", gr.skip(), gr.skip(), gr.skip(), *(gr.skip() for _ in own_param_rows()))
    note = f"**{spec.label}:** {spec.description}"
    if len(spec.threat_models) < 4:
        note += " " + " ".join(spec.lacks.values())
    rows = tuple(gr.update(visible=key == defence) for key in own_param_rows())
    title = gr.update(label=f"Attacked: {spec.label}")
    if not spec.randomised:
        return (note, title, gr.update(visible=False, value=PAPER_DEFAULTS.seed), gr.update(visible=False, value=1),
                *rows)
    note += (f" It is randomised: the purification seed fixes its draws (the same seed repeats them). An honest "
             f"adaptive attacker averages its gradient over K draws per step (EOT K > 1; evaluations use 10), with "
             f"{', '.join(eot_attacks())}; the default K = 1 is one draw, a weak attacker.")
    return note, title, gr.update(visible=True), gr.update(visible=True), *rows


def own_param_rows() -> list[str]:
    """The defences with parameters of their own (a row of widgets each, app/ui/sections.py)."""
    return [key for key, spec in DEFENCES.items() if spec.config is not None]


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
    """A click on an example thumbnail: its image, the class names that fit it, and a status line that
    says so (replacing whatever an earlier upload or run left there)."""
    path, names = examples_for(BACKBONES[active].source == "bundled")[evt.index]
    return path, names, f"Example loaded ({Path(path).stem.removeprefix('toy-').replace('-', ' ')}): press **Run**."


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
    where = "on this CPU that takes minutes" if pick_device().type == "cpu" else "seconds on a GPU"
    return (f"**Cost:** the ensemble encodes 80 prompts per class, {80 * n} text-encoder passes for these "
            f"{n - 1} classes and the blank the first time ({where}); later runs reuse them.")


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
    """The purification fields (PURIFY_FIELDS) at the paper's defaults, which are the Form's."""
    defaults = Form()
    return tuple(getattr(defaults, name) for name in PURIFY_FIELDS)


def on_purify_steps(steps, defence=None):
    """The replay slider spans the defence's trajectory (its declared length: CLIPure's T, TTC's
    points, JPEG's two). A bad T is the engine's to refuse."""
    try:
        cfg = replace(PAPER_DEFAULTS, defence=DEFENCES.check(defence), steps=int(steps))
        return gr.update(maximum=max(trajectory_steps(cfg), 1))
    except (TypeError, ValueError, CLIPureError):
        return gr.skip()
