"""One request, start to end: image + class names -> clean -> attack -> purify.

`run` is a generator. It yields PipelineEvents as it goes (preparation, the attack's steps
where the attack allows it, then each purification step of the clean and the adversarial
trajectories) and finally one event whose `.result` is the PipelineResult. The same seed
gives the same result. Under CLIPure each image is encoded once: the clean one before the attack,
the adversarial one after it (app/flows/scoring.py); a pixel-space defence (TTC) encodes each point of
its counterattack.
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Iterator

import torch

from app.common import budget as budgets
from app.attacks.progress import Phase
from app.attacks import ATTACKS, AttackConfig, AttackResult, run_attack
from app.common.budget import Budget
from app.defences.defence import Defence
from app.common.errors import InvalidClassNamesError
from app.attacks.gradients import exact_defence, gradient_diagnostics
from app.common.limits import LIMITS, Limits
from app.defences import (
    PAPER_DEFAULTS,
    DEFENCES,
    Prediction,
    PurifyConfig,
    Trajectory,
    TrajectoryStep,
    trajectory_steps,
)
from app.flows.request import Prepared, Request, prepare, prepare_defence, preparing_message
from app.flows.results import PipelineEvent, PipelineResult
from app.flows.scoring import Scored, attack_and_score, outcomes, reference_labels, score, score_steps
from app.common.streaming import HEARTBEAT_S, EngineClock, in_thread
from app.attacks.threat_models import THREAT_MODELS, attacked_model, eot_for, offered
from app.clip.zeroshot import DEFAULT_TEMPLATE_SET, TEXT_PROGRESS


def _attack_in_thread(prep: Prepared, cfg: AttackConfig, defence: Defence, labels: torch.Tensor):
    """The attack in a worker thread (see app.common.streaming.in_thread); progress values are forward passes."""
    model = attacked_model(cfg.threat_model, defence)
    return in_thread(lambda report: run_attack(cfg, model, prep.x, prep.classnames, labels, on_forward=report,
                                               on_phase=report), "clipure-attack")


def _with_text_progress(fn, name: str):
    """fn() in a worker thread (in_thread); progress values are (class names encoded, class names)
    from any text encoding it does, so a cold ensemble reports per class and can be cancelled."""
    def work(report):
        token = TEXT_PROGRESS.set(lambda done, total: report((done, total)))
        try:
            return fn()
        finally:
            TEXT_PROGRESS.reset(token)
    return in_thread(work, name)


def _stream_worker(events: Iterator, fraction: float, message: str, clock: EngineClock, out: list):
    """Relay a worker's (kind, value) stream as heartbeat events; append its result to `out`."""
    clock.background = True
    for kind, value in events:
        if kind == "done":
            out.append(value)
        elif kind == "progress":
            yield PipelineEvent("heartbeat", fraction, f"Encoding the class names: {value[0]}/{value[1]}")
        else:
            yield PipelineEvent("heartbeat", fraction, message)
    clock.background = False


def run(request: Request, attack: AttackConfig | None = AttackConfig(), purify: PurifyConfig = PAPER_DEFAULTS,
        budget: Budget | None = None, diagnose: bool = True) -> Iterator[PipelineEvent]:
    """The whole pipeline as a stream of events; the last one carries the result.

    attack=None skips the attack (classification and purification of the clean image only).
    diagnose=False skips the gradient diagnostics after the attack (two more forward-backward passes).
    All inputs are validated before any heavy work; a bad one raises a CLIPureError.
    result.timings count engine time only, not the time the caller spends between events.
    budget: the request's stop flag and deadline (app/common/budget.py), active while the engine works
    and stopped when the stream is closed early; None keeps whichever budget the caller made active.
    """
    clock = EngineClock()
    for event in budgets.activate_each(budget, _run(clock, request, attack, purify, diagnose)):
        t = time.perf_counter()
        yield event
        if not clock.background:
            clock.suspended += time.perf_counter() - t


def _trajectory(phase: str, prep: Prepared, defence: Defence, x: torch.Tensor, span: tuple[float, float],
                steps: list[TrajectoryStep], what: str) -> Iterator[PipelineEvent]:
    """The defence on x step by step; progress runs from span[0] over span[1] of the request."""
    start, share = span
    total = trajectory_steps(defence.purify)
    spec = DEFENCES[defence.purify.defence]
    doing = f"{spec.doing.format(what)} ({spec.label})"
    for s in score_steps(defence, x):
        budgets.check()
        steps.append(s)
        yield PipelineEvent(phase, round(start + share * s.step / max(total, 1), 6),
                            f"{doing}: step {s.step}/{total}", step=s, classnames=prep.classnames)


def _attack_events(prep: Prepared, acfg: AttackConfig, defence: Defence, clean: Scored, out: list):
    """The attack as events (progress 0.05-0.75); appends the AttackResult to `out`."""
    spec = ATTACKS[acfg.attack]
    expected = acfg.steps * spec.forwards_per_step * acfg.eot if spec.forwards_per_step else None
    yield PipelineEvent("attack", 0.05, f"Running {acfg.attack} ({THREAT_MODELS[acfg.threat_model].label})")
    last, last_yield, now = -1, time.monotonic(), (0.05, f"Running {acfg.attack}")
    phase = None   # the APGD run in progress (AutoAttack, APGD): its restart or target class
    for kind, value in _attack_in_thread(prep, acfg, defence, reference_labels(acfg, clean, prep.classnames)):
        if kind == "progress" and isinstance(value, Phase):
            phase = value
        if kind == "progress" and phase is not None and not expected:
            count = phase.start if isinstance(value, Phase) else value
            k = phase.step(count)
            if isinstance(value, Phase) or k != last:
                last, last_yield = k, time.monotonic()
                done = (phase.run - 1 + k / max(phase.steps, 1)) / max(phase.runs, 1)
                now = (0.05 + 0.7 * done, f"{acfg.attack}: {phase.text}, step {k}/{phase.steps}")
                yield PipelineEvent("attack-step", *now)
        elif kind == "progress" and isinstance(value, int) and expected and value != last and value <= expected:
            last, last_yield = value, time.monotonic()
            now = (0.05 + 0.7 * value / expected, f"{acfg.attack}: step {value}/{expected}")
            yield PipelineEvent("attack-step", *now)
        elif kind == "done":
            out.append(value)
        elif time.monotonic() - last_yield >= HEARTBEAT_S:   # slow steps, or no per-step progress
            last_yield = time.monotonic()
            yield PipelineEvent("heartbeat", *now)           # the progress so far, again
    yield PipelineEvent("attack", 0.75, f"{acfg.attack} finished in {out[-1].seconds:.1f} s")


def _run(clock: EngineClock, request: Request, attack: AttackConfig | None, purify: PurifyConfig,
         diagnose: bool = True) -> Iterator[PipelineEvent]:
    timings: dict[str, float] = {}
    t0 = clock.now()
    pcfg = purify.validate(request.limits)
    message = preparing_message(request)
    yield PipelineEvent("prepare", 0.0, message)
    if message.startswith("Loading"):   # shown at once: loading a backbone can take a minute
        yield PipelineEvent("heartbeat", 0.0, message)
    found: list = []
    yield from _stream_worker(_with_text_progress(lambda: prepare_defence(request, attack, pcfg), "clipure-prepare"),
                              0.0, message, clock, found)
    prep, acfg = found[0]
    defence = prep.defence(pcfg)
    timings["prepare"] = clock.now() - t0
    names = prep.classnames

    # The clean image: under CLIPure one encoder pass serves bare CLIP's answer and the trajectory.
    t = clock.now()
    steps: list[TrajectoryStep] = []
    yield from _trajectory("purify-clean", prep, defence, prep.x, (0.0, 0.05), steps, "clean")
    clean = Scored(Trajectory.from_steps(steps))
    timings["clean"] = clock.now() - t
    _check_target(acfg, clean, names)
    yield PipelineEvent("clean", 0.05, f"Clean prediction: {names[int(clean.bare[0])]}", classnames=names)

    attack_result = adv = None
    if acfg is not None:
        t, found = clock.now(), []
        clock.background = True
        yield from _attack_events(prep, acfg, defence, clean, found)
        clock.background = False
        attack_result = found[0]
        timings["attack"] = clock.now() - t
        t, steps = clock.now(), []
        # under CLIPure the second and last encoder pass
        yield from _trajectory("purify-adv", prep, defence, attack_result.x_adv, (0.75, 0.2), steps, "adversarial")
        adv = Scored(Trajectory.from_steps(steps))
        timings["purify"] = clock.now() - t
    gradient = None
    if acfg is not None and diagnose:   # two more forward-backward passes: the attacker's and the exact one
        t = clock.now()
        message = "Gradient diagnostics at the clean input"
        yield PipelineEvent("diagnose", 0.95, message)
        labels, found = reference_labels(acfg, clean, names), []

        def diagnose_():   # fp16/bf16: the exact gradient needs the fp32 backbone and its text embeddings
            exact = exact_defence(defence, names, request.template_set, prep.backbone.precision)
            return gradient_diagnostics(acfg.threat_model, defence, prep.x, labels, exact, acfg.eot)
        yield from _stream_worker(_with_text_progress(diagnose_, "clipure-diagnose"), 0.95, message, clock, found)
        gradient = found[0]
        timings["diagnose"] = clock.now() - t
    timings["total"] = clock.now() - t0

    result = _result(prep, pcfg, clean, (attack_result, adv), timings)
    result.gradient = gradient
    yield PipelineEvent("done", 1.0, "Done", result=result, classnames=names)


def _check_target(acfg: AttackConfig | None, clean: Scored, names: list[str]) -> None:
    """A targeted attack needs a target other than the class it starts from (the clean prediction)."""
    if acfg is not None and acfg.targeted and names.index(acfg.target) == int(clean.bare[0]):
        raise InvalidClassNamesError(f"The target {acfg.target!r} is already the clean prediction; "
                                     f"pick another target class.")


def _result(prep: Prepared, pcfg: PurifyConfig, clean: Scored, attacked: tuple[AttackResult | None, Scored | None],
            timings: dict) -> PipelineResult:
    """attacked: the attack's result and the adversarial image's score, or (None, None)."""
    attack, adv = attacked
    return PipelineResult(
        backbone=prep.backbone.name, precision=prep.backbone.precision, meaningless=prep.backbone.spec.meaningless,
        classnames=prep.classnames, template_set=prep.request.template_set, x=prep.x,
        class_embeddings=prep.classifier.class_embeddings, blank=prep.blank,
        clean_trajectory=clean.trajectory, attack=attack, adv_trajectory=None if adv is None else adv.trajectory,
        outcome=None if attack is None else outcomes(attack, clean, adv)[0],
        attack_config=None if attack is None else attack.config, purify_config=pcfg, warnings=list(prep.warnings),
        timings=timings, device=str(prep.backbone.device), input_sha256=prep.input_sha256)


def run_pipeline(image, classnames, attack: AttackConfig | None = AttackConfig(),
                 purify: PurifyConfig = PAPER_DEFAULTS, backbone: str | None = None, *,
                 template_set: str = DEFAULT_TEMPLATE_SET, limits: Limits = LIMITS,
                 precision: str | None = None, diagnose: bool = True, model: str | None = None) -> PipelineResult:
    """The engine's front door: `run` on Request(image, classnames, backbone, ...) without the stream;
    the final PipelineResult. model: the older spelling of backbone, still accepted."""
    backbone = backbone if backbone is not None else model
    return result_of(run(Request(image, classnames, backbone, template_set, precision, limits), attack, purify,
                         diagnose=diagnose))


def result_of(events: Iterator[PipelineEvent]) -> PipelineResult:
    """The PipelineResult of a stream of events (`run`), run to its end."""
    *_, last = events
    return last.result


def compare_threat_models(request: Request, attack: AttackConfig, purify: PurifyConfig = PAPER_DEFAULTS,
                          on_progress=None) -> list[PipelineResult]:
    """The same attack (same seed) under every threat model the defence has, on the same image. The clean image
    is prepared, encoded and purified once; only the attacks and their scoring repeat. An EOT
    count K > 1 needs a randomised purifier and applies where the attacker queries it (the
    undefended row attacks bare CLIP with K = 1).

    on_progress(fraction, message) is called as each threat model starts ("row 2/4: official") and
    as its attack runs. Each row carries the attacker's gradient at the clean input (its diagnostics).
    """
    pcfg = purify.validate(request.limits)
    report = on_progress or (lambda fraction, message: None)
    report(0.0, preparing_message(request))
    prep, acfg = prepare_defence(request, attack, pcfg, "adaptive")
    defence = prep.defence(pcfg)
    clean = score(defence, prep.x)
    _check_target(acfg, clean, prep.classnames)
    exact = exact_defence(defence, prep.classnames, request.template_set, prep.backbone.precision)
    rows = offered(pcfg)   # every threat model the defence has (TTC has no official one)
    results, n = [], len(rows)
    for k, name in enumerate(rows):
        row = f"row {k + 1}/{n}: {name}"
        report(k / n, row)
        t = time.perf_counter()
        cfg = replace(acfg, threat_model=name, eot=eot_for(acfg.eot, name, pcfg))
        a = attack_and_score(cfg, defence, prep.x, prep.classnames, clean=clean,
                             on_forward=lambda count: report(k / n, f"{row}, {cfg.attack} forward pass {count}"))
        labels = reference_labels(cfg, clean, prep.classnames)
        r = _result(prep, pcfg, clean, (a.attack, a.adversarial), {"total": time.perf_counter() - t})
        r.gradient = gradient_diagnostics(name, defence, prep.x, labels, exact, cfg.eot)
        results.append(r)
    return results


def classify(request: Request) -> tuple[Prediction, Prepared]:
    """Bare zero-shot CLIP on one image, no attack and no purification."""
    prep, _ = prepare(request)
    with torch.no_grad():
        return Prediction.from_probs(prep.classifier(prep.x).softmax(-1)[0], prep.classnames), prep
