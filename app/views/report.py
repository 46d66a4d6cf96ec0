"""Turn a PipelineResult into what people read: captions, notes, statistics, figures and the
compare table (the files they download: app/views/export.py).

Every robustness statement carries its threat model, attack, eps, steps and backbone.
"""
from __future__ import annotations

import math

import torch

from app.attacks import ATTACKS, AttackConfig
from app.attacks.gradients import GradientDiagnostics
from app.views.plots import cosine_figure, latent_map_figure, not_applicable_figure, probability_figure, rotation_figure
from app.defences import DEFENCES, Prediction, PurifyConfig, TrajectoryStep
from app.flows.results import PipelineResult
from app.flows.scoring import near_uniform
from app.attacks.threat_models import THREAT_MODELS
from app.defences.latent import as_attacked


def eps_text(cfg: AttackConfig) -> str:
    spec = ATTACKS[cfg.attack]
    if not spec.uses_eps:
        return "minimum-norm (no eps)"
    if spec.norm == "linf":
        return f"L-inf eps {cfg.eps:g}/255"
    return f"L2 eps {cfg.eps:g}"


def defence_text(p: PurifyConfig, eot: int = 1) -> str:
    """The defence in a few words: its name and parameters, and for a randomised one its seed and the
    attacker's EOT K."""
    spec = DEFENCES[p.defence]
    text = f"{spec.label} ({spec.describe(p)}"
    return text + (f", seed {p.seed}, attacker's EOT K={eot})" if spec.randomised else ")")


def defended(result: PipelineResult) -> str:
    """The defended classifier's name in the page's sentences (its declared label)."""
    return DEFENCES[result.purify_config.defence].label


def caption(result: PipelineResult, threat_model: str | None = None) -> str:
    """One line naming threat model, attack, eps, steps, backbone and purification.

    threat_model replaces the result's own (e.g. "each row" under a comparison table)."""
    p, spec = result.purify_config, DEFENCES[result.purify_config.defence]
    pur = f"{p.defence} {spec.describe(p)}"
    if "grad_scope" in spec.reads:   # the gradient norm's scope, and the one the attacker's graph used
        scope, attacked = p.grad_scope, attacked_scope(result)
        if attacked != scope:   # `official` differentiates its own graph: the batch norm
            scope = f"{scope}; the attacked graph: {attacked}, as the official code"
        pur += f" gamma={p.momentum:g} {p.norm} ({scope})"
    if spec.randomised:   # the draw and the attacker's averaging decide the numbers too
        pur += f" seed={p.seed}"
    model = f"{result.backbone} {result.precision}" + (" [random weights: MEANINGLESS]" if result.meaningless else "")
    if result.attack_config is None:
        return f"No attack | {model} | {pur}"
    a = result.attack_config
    target = f", targeted -> {a.target}" if a.targeted else ""
    target += f", EOT K={a.eot}" if a.eot > 1 else ""
    steps = "one step" if ATTACKS[a.attack].one_step else f"{a.steps} steps"
    return (f"threat model: {threat_model or a.threat_model} | {a.attack}, {eps_text(a)}, {steps}{target} | "
            f"{model} | {pur}")


def attacked_scope(result: PipelineResult) -> str:
    """The gradient-norm scope of the purification the attacker differentiated (`official` forces
    the batch norm); the page's scope where there was no attack."""
    a = result.attack_config
    if a is None:
        return result.purify_config.grad_scope
    return as_attacked(result.purify_config, THREAT_MODELS[a.threat_model].backward).grad_scope


def yes_no(ok: bool) -> str:
    return "yes" if ok else "no"


def clean_change(result: PipelineResult) -> str | None:
    """'red circle → yellow square' when the defence changed bare CLIP's answer on the clean image, else None.

    Then an attack that "failed" against the defence only left it on its already changed answer."""
    if result.clean_purified.index == result.clean.index:
        return None
    return f"{result.clean.label} → {result.clean_purified.label}"


def unknown_words_notice(result: PipelineResult) -> str | None:
    """One sentence when bare CLIP's clean probabilities are near uniform (scoring.near_uniform): the
    model does not know these words, and no verdict means anything. Else None."""
    probs = result.clean.probs
    if not near_uniform(probs):
        return None
    text = (f"The model does not know these class names: it gives each about {100 / len(probs):.0f}%, so "
            f"neither its answer nor any attack verdict means anything here.")
    from app.clip.models import BACKBONES   # the bundled model says what it does know
    vocab = BACKBONES[result.backbone].vocabulary
    return text + (f" The bundled model knows: {', '.join(vocab)}." if vocab else "")


def caveats(result: PipelineResult) -> list[str]:
    """One sentence for each thing a reader must know before reading the yes/no answers."""
    out = []
    if unknown_words_notice(result) is not None:
        out.append(unknown_words_notice(result))
    out += DEFENCES[result.purify_config.defence].caveats(result.purify_config)
    if result.attack is None:
        return out
    a, o, cfg = result.attack, result.outcome, result.attack_config
    if o.exceeds_eps:
        out.append(f"{cfg.attack} is a minimum-norm attack and went past eps: L-inf {a.linf_255:.2f}/255 "
                   f"> {cfg.eps:g}/255, so it is no success within the budget.")
    if math.isinf(a.psnr_db):
        out.append(f"{cfg.attack} returned the clean image unchanged: it found no adversarial example.")
    elif o.failed:
        changed = clean_change(result)
        who = defended(result)
        out.append(f"The attack failed: neither bare CLIP nor {who} changed its answer." if changed is None else
                   f"The attack failed: neither bare CLIP nor {who} changed its answer, but {who} had already "
                   f"changed the clean answer ({changed}).")
    return out


def outcome_notes(result: PipelineResult) -> dict[str, str]:
    """The sentence under each prediction panel, from the one Outcome (app/flows/scoring.py)."""
    notes = {"clean_note": "", "adv_note": "", "purified_note": ""}
    unknown = unknown_words_notice(result)
    if unknown is not None:
        notes["clean_note"] = f"**{unknown}**"
        if result.attack is not None:
            notes["adv_note"] = notes["purified_note"] = "**No verdict:** the model does not know these class names."
        return notes
    bare, pur, who = result.clean.label, result.clean_purified.label, defended(result)
    notes["clean_note"] = (f"{who} on the clean image: **changed** the answer to {pur} (bare CLIP: {bare})."
                           if clean_change(result) else f"{who} on the clean image: **same** answer ({pur}).")
    if result.attack is None:
        return notes
    o, cfg = result.outcome, result.attack_config

    def sentence(who: str, fooled: bool, before: str, after: str) -> str:
        verdict = "**succeeded**" if fooled else "**failed**"
        if cfg.targeted:
            return f"Attack on {who} {verdict}: target {cfg.target} {'reached' if fooled else 'not reached'}."
        return f"Attack on {who} {verdict}: {before} → {after}." if fooled else \
            f"Attack on {who} {verdict}: still {after}."
    over = " (but past eps: see below)" if o.exceeds_eps else ""
    notes["adv_note"] = sentence("bare CLIP", o.fooled_clip, bare, result.adversarial.label) + over
    notes["purified_note"] = sentence(who, o.fooled_defence, pur, result.purified.label) + over
    changed = clean_change(result)
    if changed is not None:   # the verdict is about the defence's own clean answer, which is not bare CLIP's
        notes["purified_note"] += (f" {who} had **already changed the clean answer** ({changed})" +
                                   (f", so “failed” only means it stayed on {pur}." if not o.fooled_defence
                                    else "."))
    return notes


def stats_markdown(result: PipelineResult, factor: float) -> str:
    """The perturbation's size and the attack's outcome, with the caption, as Markdown."""
    a, o, who = result.attack, result.outcome, defended(result)
    psnr = "∞" if math.isinf(a.psnr_db) else f"{a.psnr_db:.1f} dB"
    verdict = ("**No attack verdict:** the model does not know these class names" if unknown_words_notice(result)
               else f"**Attack succeeded** against bare CLIP: **{yes_no(o.fooled_clip)}** · against {who}: "
                    f"**{yes_no(o.fooled_defence)}** · {who} changed the clean answer: "
                    f"**{yes_no(o.defence_changed_clean)}**")
    lines = [f"**Perturbation:** L-inf **{a.linf_255:.2f}/255** · L2 **{a.l2:.3f}** · PSNR **{psnr}** · "
             f"shown amplified **× {factor:.1f}** around mid grey",
             f"{verdict} · {a.seconds:.2f} s, {a.forwards} forward passes"]
    if result.gradient is not None:
        lines.append(gradient_text(result.gradient, result.attack_config.threat_model, result.precision))
    lines += decision_lines(result)
    lines += [f"**Note:** {c}" for c in caveats(result)]
    return "  \n".join(lines) + f"  \n<sub>{caption(result)}</sub>"


def decision_lines(result: PipelineResult) -> list[str]:
    """What the defence decided on the clean and the adversarial image, where it declares a decision
    (TTC: tau against tau_thres, and the weights)."""
    p = result.purify_config
    spec = DEFENCES[p.defence]
    traces = [("clean", result.clean_trajectory), ("adversarial", result.adv_trajectory)]
    return [f"**{spec.label} on the {k} image:** {text}" for k, tr in traces if tr is not None
            for text in [spec.decision(p, tr)] if text is not None]


def step_name(result: PipelineResult, step: int) -> str:
    """What a point of the trajectory is, in the defence's words."""
    return f" ({DEFENCES[result.purify_config.defence].point(result.purify_config, step)})"


def gradient_text(g: GradientDiagnostics, threat_model: str, precision: str) -> str:
    """The attacker's gradient at the clean input, against the exact fp32 one (stats and audit)."""
    cos = "undefined (a zero gradient)" if g.cos_to_exact != g.cos_to_exact else f"{g.cos_to_exact:.3f}"
    # A randomised defence: the attacker averages its own draws; the reference is the scored draw's.
    mean = f", mean of {g.draws} draws" if g.draws > 1 else (", one draw" if g.randomised else "")
    of = " of the draw the defence scores" if g.randomised else ""
    return (f"**Attacker's gradient** ({threat_model}, {precision}{mean}): norm **{g.norm:.3g}** · exactly zero: "
            f"**{g.zero_fraction:.0%}** of the pixels · cosine with the exact fp32 gradient{of} "
            f"(norm {g.exact_norm:.3g}, {g.exact_zero_fraction:.0%} exact zeros): **{cos}**")


PLOTS = ("prob_plot", "cos_plot", "rot_plot", "map_plot")   # the figures, in figures()' order


def drawn(result: PipelineResult) -> tuple[str, ...]:
    """The figures that apply to the result's defence (the cosine and rotation views only where it moves
    towards the blank), in PLOTS' order."""
    blank = DEFENCES[result.purify_config.defence].blank
    return tuple(p for p in PLOTS if blank or p not in ("cos_plot", "rot_plot"))


def figure(result: PipelineResult, which: str, top_k: int = 5, step: int | None = None, narrow: bool = False):
    """One of the figures (a name in PLOTS): the page draws only the one in view."""
    return figures(result, top_k, step, only=which, narrow=narrow)[PLOTS.index(which)]


def exact_step_size(result: PipelineResult) -> float | None:
    """η where each step of the defence is exactly a rotation by atan(η) (its declaration: CLIPure-Cos
    with an L2 update, per-sample norm and γ = 0), for the figures to say so; None otherwise."""
    return DEFENCES[result.purify_config.defence].exact_rotation(result.purify_config)


def figures(result: PipelineResult, top_k: int = 5, step: int | None = None, only: str | None = None,
            narrow: bool = False):
    """(per-step probabilities, cosine to the blank, rotation in the plane, latent map) Figures for a
    result; `step` marks one step on each (the replay slider). only: draw that one (a name in PLOTS),
    None the rest. narrow: a phone's layout (panels stacked, legends and keys below)."""
    cap = caption(result)
    a = result.attack_config
    target = result.classnames.index(a.target) if a is not None and a.targeted else None
    traces = {"clean input": result.clean_trajectory}
    if result.adv_trajectory is not None:
        traces = {"adversarial input": result.adv_trajectory, **traces}
    draw = lambda name: only is None or only == name  # noqa: E731
    eta = exact_step_size(result)
    inspected = "adversarial input" if result.adv_trajectory is not None else "clean input"
    spec = DEFENCES[result.purify_config.defence]
    reason = (f"{spec.label} does not move the embedding towards the blank, so there is no cosine-to-blank or "
              f"rotation view of it: see the per-step probabilities and the map.")

    def cosine():
        if not spec.blank:   # the views measured from the blank do not apply (its declaration)
            return not_applicable_figure("Cosine to the blank", reason, cap, narrow)
        return cosine_figure({k: t.cos_to_blank[:, 0].tolist() for k, t in traces.items()}, cap, step,
                             {k: t.prior_loss[:, 0].tolist() for k, t in traces.items() if t.prior_loss is not None},
                             narrow, step_size=eta)

    def rotation():
        if not spec.blank:
            return not_applicable_figure("Rotation in the plane of the blank", reason, cap, narrow)
        return rotation_figure(result.trajectory.embeddings, result.blank, result.class_embeddings, result.classnames,
                               cap, step=step, narrow=narrow, step_size=eta, name=inspected)
    return (probability_figure({k: t.probs[:, 0].numpy() for k, t in traces.items()}, result.classnames,
                               result.clean.index, target, cap, top_k, step, narrow, axis=spec.axis)
            if draw("prob_plot") else None,
            cosine() if draw("cos_plot") else None,
            rotation() if draw("rot_plot") else None,
            latent_map_figure({k: t.embeddings[:, 0] for k, t in traces.items()}, result.class_embeddings,
                              result.blank, result.classnames, cap, step=step, narrow=narrow)
            if draw("map_plot") else None)


def step_prediction(step: TrajectoryStep, classnames) -> Prediction:
    """The prediction at a streamed step (batch of one)."""
    return Prediction.from_probs(step.probs[0], classnames)


def streamed_figure(steps: list[TrajectoryStep], classnames, top_k: int = 5):
    """The class-probability Figure (the plot in view) of an adversarial trajectory still being computed."""
    probs = torch.stack([s.probs[0] for s in steps]).numpy()          # (t+1, C)
    return probability_figure({"adversarial input (so far)": probs}, classnames, int(steps[0].top1[0]), None, "",
                              top_k)


def step_measure(cos_to_blank, prior_loss=None) -> str:
    """What a purification step optimises, at that step: CLIPure-Diff's prior loss (one draw: its own
    t and noise), else CLIPure-Cos's cosine to the blank. Arguments: (N,) tensors, image 0 shown."""
    if prior_loss is not None:
        return f"prior loss **{float(prior_loss[0]):.4f}** (one draw)"
    return f"cos to the blank **{float(cos_to_blank[0]):.4f}**"


def step_markdown(result: PipelineResult, step: int) -> str:
    """What the replay slider shows for one purification step."""
    traj = result.trajectory
    which = "adversarial" if result.adv_trajectory is not None else "clean"
    loss = None if traj.prior_loss is None else traj.prior_loss[step]
    return (f"**Step {step}/{traj.steps}**{step_name(result, step)} of the {which} trajectory: top-1 "
            f"**{traj.prediction(step, result.classnames).label}**, {step_measure(traj.cos_to_blank[step], loss)}")
