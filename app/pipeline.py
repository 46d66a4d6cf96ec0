"""One request, start to end: image + class names -> clean -> attack -> purify.

`run` is a generator. It yields PipelineEvent objects as it goes (preparation, the attack's
steps where the attack allows it, then each purification step of the clean and the
adversarial trajectories) and finally one event whose `.result` is the PipelineResult.
The same seed gives the same result.
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F

from app.attacks import ATTACKS, AttackConfig, AttackResult, run_attack, validate_attack
from app.classnames import parse_classnames
from app.errors import CLIPureError
from app.images import load_image
from app.limits import LIMITS, Limits
from app.models import Backbone, load_backbone
from app.purify import PAPER_DEFAULTS, PurifyConfig, purify_iter
from app.threat_models import THREAT_MODELS
from app.zeroshot import DEFAULT_TEMPLATE_SET, TEXT_CACHE, ZeroShotClassifier, build_classifier, get_templates

# --- results --------------------------------------------------------------------------------

@dataclass
class Prediction:
    index: int
    label: str
    probs: list[float]        # (C,) softmax over the class names

    def top(self, k: int, classnames: Sequence[str]) -> dict[str, float]:
        order = sorted(range(len(self.probs)), key=lambda i: -self.probs[i])[:k]
        return {classnames[i]: float(self.probs[i]) for i in order}


@dataclass
class PurifyStep:
    step: int                 # 0 is the input embedding
    embedding: torch.Tensor   # (D,)
    cos_to_blank: float
    probs: torch.Tensor       # (C,)
    top1: int


@dataclass
class PurifyTrace:
    """One image's purification trajectory with the per-step class probabilities."""
    steps: list[PurifyStep] = field(default_factory=list)

    @property
    def embeddings(self) -> torch.Tensor:      # (T+1, D)
        return torch.stack([s.embedding for s in self.steps])

    @property
    def cos_to_blank(self) -> list[float]:
        return [s.cos_to_blank for s in self.steps]

    @property
    def probs(self) -> torch.Tensor:           # (T+1, C)
        return torch.stack([s.probs for s in self.steps])

    @property
    def top1(self) -> list[int]:
        return [s.top1 for s in self.steps]


@dataclass
class PipelineResult:
    backbone: str
    meaningless: bool               # random weights: predictions mean nothing
    classnames: list[str]
    template_set: str
    x: torch.Tensor                 # (1, 3, S, S) model-resolution input in [0,1]
    class_embeddings: torch.Tensor  # (C, D) unit text embeddings t_c
    blank: torch.Tensor             # (D,) blank target b
    clean: Prediction               # bare CLIP on x
    clean_purified: Prediction      # CLIPure on x
    attack: AttackResult | None
    adversarial: Prediction | None  # bare CLIP on x_adv
    purified: Prediction | None     # CLIPure on x_adv
    clean_trace: PurifyTrace
    adv_trace: PurifyTrace | None
    attack_config: AttackConfig | None
    purify_config: PurifyConfig
    warnings: list[str]
    timings: dict[str, float]       # seconds per phase

    @property
    def x_adv(self) -> torch.Tensor | None:
        return None if self.attack is None else self.attack.x_adv


@dataclass
class PipelineEvent:
    phase: str                      # "prepare", "clean", "attack", "attack-step", "purify-clean", "purify-adv", "done"
    fraction: float | None          # progress within the whole request, None = indeterminate
    message: str
    step: PurifyStep | None = None  # set in the purify phases: the step just computed
    result: PipelineResult | None = None
    classnames: list[str] | None = None  # the cleaned class names, once known


# --- the engine -----------------------------------------------------------------------------

@dataclass
class Prepared:
    backbone: Backbone
    classifier: ZeroShotClassifier
    blank: torch.Tensor             # (D,)
    x: torch.Tensor                 # (1, 3, S, S)
    classnames: list[str]
    template_set: str
    warnings: list[str]
    attack: AttackConfig | None = None  # validated against the class names


def prepare(image, classnames, model: str | None = None, template_set: str = DEFAULT_TEMPLATE_SET,
            limits: Limits = LIMITS, attack: AttackConfig | None = None) -> Prepared:
    """Validate every input, then build the classifier (text embeddings come from the cache).

    The checks run before the expensive parts: a bad image or attack setting is refused
    without loading weights for it or encoding 80 templates per class.
    """
    templates = get_templates(template_set)
    pil = load_image(image, limits)
    backbone = load_backbone(model)
    names, warnings = parse_classnames(classnames, backbone.tokenizer, backbone.context_length, templates, limits)
    attack = validate_attack(attack, names, limits) if attack is not None else None
    classifier = build_classifier(backbone, names, template_set)
    blank = TEXT_CACHE.blank_embedding(backbone, template_set)
    x = torch.round(backbone.to_pixels(pil) * 255) / 255   # an 8-bit image at model resolution
    return Prepared(backbone, classifier, blank, x, names, template_set, warnings, attack)


def _prediction(logits: torch.Tensor, classnames: Sequence[str]) -> Prediction:
    probs = logits.float().softmax(-1)[0]
    i = int(probs.argmax())
    return Prediction(i, classnames[i], probs.tolist())


def trace_steps(prep: Prepared, z: torch.Tensor, cfg: PurifyConfig) -> Iterator[PurifyStep]:
    """Purify one image embedding z (1, D); yield each step with its cosine and class probabilities."""
    clf = prep.classifier
    with torch.no_grad():
        z0 = F.normalize(z, dim=-1)                              # (1, D): purification starts on the sphere
        b_hat = F.normalize(prep.blank, dim=-1)
        for t, z in enumerate(purify_iter(z0, prep.blank, cfg)):
            probs = clf.logits_from_embedding(z).softmax(-1)[0]  # (C,)
            cos = float(F.cosine_similarity(z[0], b_hat, dim=0))
            yield PurifyStep(t, z[0].clone(), cos, probs, int(probs.argmax()))


def _attack_in_thread(prep: Prepared, cfg: AttackConfig, pcfg: PurifyConfig, limits: Limits):
    """Run the attack in a worker thread; yield ("progress", forwards) then ("done", result)."""
    q: queue.Queue = queue.Queue()

    def work():
        try:
            res = run_attack(cfg, prep.classifier, prep.blank, prep.x, prep.classnames, pcfg,
                             on_forward=lambda n: q.put(("progress", n)), limits=limits)
            q.put(("done", res))
        except BaseException as e:  # re-raised in the caller's thread
            q.put(("error", e))

    worker = threading.Thread(target=work, name="clipure-attack", daemon=True)
    worker.start()
    while True:
        kind, value = q.get()
        if kind == "error":
            raise value
        yield kind, value
        if kind == "done":
            return


class _EngineClock:
    """Engine time: wall time minus the time the generator spends suspended at its yields,
    so that work a consumer does per event (plots, transport) is not counted as engine time."""

    def __init__(self):
        self.suspended = 0.0
        self.background = False   # True while the attack runs in its thread: suspension is not idle time

    def now(self) -> float:
        return time.perf_counter() - self.suspended


def run(image, classnames, attack: AttackConfig | None = AttackConfig(), purify: PurifyConfig = PAPER_DEFAULTS,
        model: str | None = None, template_set: str = DEFAULT_TEMPLATE_SET,
        limits: Limits = LIMITS) -> Iterator[PipelineEvent]:
    """The whole pipeline as a stream of events; the last one carries the result.

    attack=None skips the attack (classification and purification of the clean image only).
    All inputs are validated before any heavy work; a bad one raises a CLIPureError.
    result.timings count engine time only, not the time the caller spends between events.
    """
    clock = _EngineClock()
    for event in _run(clock, image, classnames, attack, purify, model, template_set, limits):
        t = time.perf_counter()
        yield event
        if not clock.background:
            clock.suspended += time.perf_counter() - t


def _run(clock: _EngineClock, image, classnames, attack: AttackConfig | None, purify: PurifyConfig,
         model: str | None, template_set: str, limits: Limits) -> Iterator[PipelineEvent]:
    timings: dict[str, float] = {}
    t0 = clock.now()
    pcfg = purify.validate(limits)
    yield PipelineEvent("prepare", 0.0, "Loading the model and encoding the class names")
    prep = prepare(image, classnames, model, template_set, limits, attack)
    acfg = prep.attack
    timings["prepare"] = clock.now() - t0
    warnings = list(prep.warnings)

    t = clock.now()
    with torch.no_grad():
        z_clean = prep.classifier.encode(prep.x)                 # (1, D), encoded once for both uses
        clean = _prediction(prep.classifier.logits_from_embedding(z_clean), prep.classnames)
    timings["classify"] = clock.now() - t
    names = prep.classnames
    yield PipelineEvent("clean", 0.05, f"Clean prediction: {clean.label}", classnames=names)

    # Progress shares: attack 0.05-0.75, clean trajectory 0.75-0.85, adversarial 0.85-1.
    result_attack = None
    if acfg is not None:
        t = clock.now()
        spec = ATTACKS[acfg.attack]
        expected = acfg.steps * spec.forwards_per_step if spec.forwards_per_step else None
        yield PipelineEvent("attack", 0.05, f"Running {acfg.attack} ({THREAT_MODELS[acfg.threat_model].label})")
        last = -1
        clock.background = True
        for kind, value in _attack_in_thread(prep, acfg, pcfg, limits):
            if kind == "progress" and expected and value != last and value <= expected:
                last = value
                yield PipelineEvent("attack-step", 0.05 + 0.7 * value / expected,
                                    f"{acfg.attack}: step {value}/{expected}")
            elif kind == "done":
                result_attack = value
        clock.background = False
        timings["attack"] = clock.now() - t
        yield PipelineEvent("attack", 0.75, f"{acfg.attack} finished in {result_attack.seconds:.1f} s")

    t = clock.now()
    clean_trace = PurifyTrace()
    for s in trace_steps(prep, z_clean, pcfg):
        clean_trace.steps.append(s)
        yield PipelineEvent("purify-clean", 0.75 + 0.1 * s.step / max(pcfg.steps, 1),
                            f"Purifying the clean embedding: step {s.step}/{pcfg.steps}", step=s, classnames=names)
    adv_trace = adversarial = purified = None
    if result_attack is not None:
        adv_trace = PurifyTrace()
        with torch.no_grad():
            z_adv = prep.classifier.encode(result_attack.x_adv)
            adversarial = _prediction(prep.classifier.logits_from_embedding(z_adv), prep.classnames)
        for s in trace_steps(prep, z_adv, pcfg):
            adv_trace.steps.append(s)
            yield PipelineEvent("purify-adv", 0.85 + 0.15 * s.step / max(pcfg.steps, 1),
                                f"Purifying the adversarial embedding: step {s.step}/{pcfg.steps}", step=s,
                                classnames=names)
        purified = _step_prediction(adv_trace.steps[-1], prep.classnames)
    timings["purify"] = clock.now() - t
    timings["total"] = clock.now() - t0

    result = PipelineResult(
        backbone=prep.backbone.name, meaningless=prep.backbone.spec.meaningless, classnames=prep.classnames,
        template_set=template_set, x=prep.x, class_embeddings=prep.classifier.class_embeddings,
        blank=prep.blank, clean=clean,
        clean_purified=_step_prediction(clean_trace.steps[-1], prep.classnames),
        attack=result_attack, adversarial=adversarial, purified=purified, clean_trace=clean_trace,
        adv_trace=adv_trace, attack_config=acfg, purify_config=pcfg, warnings=warnings, timings=timings)
    yield PipelineEvent("done", 1.0, "Done", result=result, classnames=names)


def _step_prediction(step: PurifyStep, classnames: Sequence[str]) -> Prediction:
    return Prediction(step.top1, classnames[step.top1], step.probs.tolist())


def run_pipeline(image, classnames, attack: AttackConfig | None = AttackConfig(),
                 purify: PurifyConfig = PAPER_DEFAULTS, model: str | None = None,
                 template_set: str = DEFAULT_TEMPLATE_SET, limits: Limits = LIMITS) -> PipelineResult:
    """`run` without the stream: the final PipelineResult."""
    for event in run(image, classnames, attack, purify, model, template_set, limits):
        if event.result is not None:
            return event.result
    raise CLIPureError("The pipeline ended without a result.")  # unreachable by construction


def compare_threat_models(image, classnames, attack: AttackConfig, purify: PurifyConfig = PAPER_DEFAULTS,
                          model: str | None = None, template_set: str = DEFAULT_TEMPLATE_SET,
                          limits: Limits = LIMITS, on_progress=None) -> list[PipelineResult]:
    """The same attack (same seed) under every threat model, on the same image.

    on_progress(fraction, message) is called as each threat model starts.
    """
    results = []
    for k, name in enumerate(THREAT_MODELS):
        if on_progress is not None:
            on_progress(k / len(THREAT_MODELS), f"{attack.attack} under the {name} threat model")
        cfg = AttackConfig(**{**attack.to_dict(), "threat_model": name})
        results.append(run_pipeline(image, classnames, cfg, purify, model, template_set, limits))
    return results


def classify(image, classnames, model: str | None = None, template_set: str = DEFAULT_TEMPLATE_SET,
             limits: Limits = LIMITS) -> tuple[Prediction, Prepared]:
    """Bare zero-shot CLIP on one image, no attack and no purification."""
    prep = prepare(image, classnames, model, template_set, limits)
    with torch.no_grad():
        return _prediction(prep.classifier(prep.x), prep.classnames), prep
