"""What a defence declares: the one interface every defence fills in, so that nothing outside
app/defences/ asks which defence is running (docs/design.md, "Adding a defence").

A defence maps pixels x (N, 3, S, S) in [0, 1] to class logits, through a trajectory whose point 0
is bare CLIP's view of x and whose last point is what the defence classifies. It acts either on the
embedding ("latent": CLIPure moves z on the sphere) or on the image ("pixel": TTC, JPEG).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping

import torch

from app.common.registry import Registry
from app.defences.trajectory import TrajectoryStep

SPACES = ("latent", "pixel")
# How gradients pass through a defence when an attacker differentiates it.
BACKWARDS = Registry("backward mode", {
    "none": "no autograd graph: purification is a constant to the attacker",
    "official": "the official code's graph: each step's gradient detached (autograd.grad without create_graph), "
                "r = ||z|| and u = z / r kept on it",
    "detached": "an idealisation: every step's direction detached, r included (the gradient shrinks by exactly "
                "(1 + eta^2)^(-T/2))",
    "adaptive": "exact gradients through every unrolled step",
    "bpda": "the defence forward, identity backward (Athalye et al. 2018)",
})


@dataclass(frozen=True)
class Passes:
    """The work of one query of a defended model, in encoder passes (the unit the evaluator's dry run
    and ZeroGPU's duration count) and latent purification steps (in units of a CLIPure-Cos step)."""
    forwards: int = 1      # image-encoder forward passes
    backwards: int = 0     # image-encoder backward passes (an attacker's gradient through the defence)
    latent: float = 0.0    # purification steps in the embedding (CLIPure-Diff's cost 10 each: the prior)

    def __add__(self, other: "Passes") -> "Passes":
        return Passes(self.forwards + other.forwards, self.backwards + other.backwards, self.latent + other.latent)

    def __mul__(self, k: float) -> "Passes":
        return Passes(int(self.forwards * k), int(self.backwards * k), self.latent * k)


# (defence: app.defences.defence.Defence, x (N, 3, S, S) or None, z (N, D) unit embeddings of x or None)
#   -> the trajectory, step by step; step 0 is bare CLIP on x. A latent defence starts from z when the
#   caller has it (no encoder pass), a pixel one needs x.
Steps = Callable[..., Iterator[TrajectoryStep]]
# (defence, x (N, 3, S, S), backward (a key of BACKWARDS), generator) -> logits (N, C): the model an
#   attacker queries; `backward` says how gradients pass through the defence (never "none": the
#   undefended threat model attacks bare CLIP and never calls this).
Attacked = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class DefenceSpec:
    label: str                      # its name in every sentence, panel title, column and JSON value
    description: str                # one line under the dropdown, with its paper
    space: str                      # "latent" (moves the embedding) or "pixel" (changes the image)
    steps: Steps                    # its trajectory on clean or attacked pixels (what scoring reports)
    attacked: Attacked              # the forward an attacker differentiates (threat models other than undefended)
    threat_models: tuple[str, ...]  # the threat models it has, in THREAT_MODELS' order
    default_threat_model: str       # the one the page, the audit and the API start from
    lacks: Mapping[str, str] = field(default_factory=dict)   # a threat model it lacks -> the sentence why
    randomised: bool = False        # draws randomness per query, so an attacker averages draws (EOT)
    config: type | None = None      # its own parameters' dataclass (PurifyConfig.params), None: CLIPure's fields
    reads: tuple[str, ...] = ()     # the PurifyConfig fields it reads (the evaluator sweeps eta only where read)
    # what a trajectory point is: (cfg) -> T, the points after the input; (cfg, t) -> the name of point t
    length: Callable = lambda cfg: cfg.steps
    point: Callable = lambda cfg, t: "the input" if t == 0 else f"purification step {t}"
    axis: str = "purification step"     # the x-axis of every per-step plot
    blank: bool = True              # it moves towards the blank: the cosine-to-blank and rotation views apply
    exact_rotation: Callable = lambda cfg: None   # (cfg) -> eta when each step is exactly a rotation by atan(eta)
    doing: str = "Purifying the {} embedding"   # the progress line, "{}" the image's name (clean, adversarial)
    # its cost per query (cfg, attacked: the attacker's gradient passes through it) and per scored image;
    # required: a defence that does not say what it costs is refused here, not counted as some default
    query_cost: Callable[..., Passes] | None = None
    score_cost: Callable[..., Passes] | None = None
    describe: Callable = lambda cfg: ""     # (cfg) -> its parameters in a few words, for captions
    record: Callable = lambda cfg: {}       # (cfg) -> its parameters, for the JSON record
    caveats: Callable = lambda cfg: []      # (cfg) -> sentences a reader must know (CLIPure-Cos's odd T)
    # what it says about one trajectory's decision (TTC: tau and the weights), or None
    decision: Callable = lambda cfg, trajectory: None
    iterate: Callable | None = None  # a latent defence's purifier of z (app.defences.latent.Iterate); None for pixels
    supports: Callable[[str | None], bool] = lambda backbone: True     # backbones it can defend
    # (backbone, device): load what it needs for that backbone, or raise one sentence if it can't
    check_backbone: Callable[[str | None, object], object] = lambda backbone, device: None

    def __post_init__(self):
        assert self.space in SPACES, f"{self.label}: space must be one of {SPACES}, not {self.space!r}"
        assert self.default_threat_model in self.threat_models, f"{self.label}: its default threat model is not one it has"
        assert callable(self.query_cost) and callable(self.score_cost), f"{self.label} declares no cost"


def seeded(cfg, device: torch.device | str = "cpu", stream: int = 0) -> torch.Generator:
    """A generator seeded from (cfg.seed, stream): the same seed gives the same randomised trajectory.
    Stream 0 scores (the defence's own draw); stream 1 is the attacker's queries, so the draw that
    is evaluated is never one the attacker has already seen."""
    return torch.Generator(device=device).manual_seed((cfg.seed * 1_000_003 + stream) % 2**63)
