"""What one request produces: the PipelineResult, and the events a streamed request yields."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from app.attacks import AttackConfig, AttackResult
from app.attacks.gradients import GradientDiagnostics
from app.defences import Prediction, PurifyConfig, Trajectory, TrajectoryStep
from app.flows.scoring import Outcome


@dataclass
class PipelineResult:
    backbone: str
    precision: str                   # the encoders' precision (PRECISIONS)
    meaningless: bool                # random weights: predictions mean nothing
    classnames: list[str]
    template_set: str
    x: torch.Tensor                  # (1, 3, S, S) model-resolution input in [0,1]
    class_embeddings: torch.Tensor   # (C, D) unit text embeddings t_c
    blank: torch.Tensor              # (D,) blank target b
    clean_trajectory: Trajectory     # purification of E_img(x); batch of one
    attack: AttackResult | None
    adv_trajectory: Trajectory | None  # purification of E_img(x_adv)
    outcome: Outcome | None          # the yes/no answers about the attack
    attack_config: AttackConfig | None
    purify_config: PurifyConfig
    warnings: list[str]
    timings: dict[str, float]        # seconds per phase
    gradient: GradientDiagnostics | None = None   # the attacker's pixel gradient at x (app/attacks/gradients.py)
    device: str = "cpu"              # where the backbone ran
    input_sha256: str | None = None  # the uploaded file's SHA-256 (None for an in-memory image)

    @property
    def x_adv(self) -> torch.Tensor | None:
        return None if self.attack is None else self.attack.x_adv

    @property
    def clean(self) -> Prediction:
        """Bare CLIP on x."""
        return self.clean_trajectory.prediction(0, self.classnames)

    @property
    def clean_purified(self) -> Prediction:
        """CLIPure on x."""
        return self.clean_trajectory.prediction(-1, self.classnames)

    @property
    def adversarial(self) -> Prediction | None:
        """Bare CLIP on x_adv."""
        return None if self.adv_trajectory is None else self.adv_trajectory.prediction(0, self.classnames)

    @property
    def purified(self) -> Prediction | None:
        """CLIPure on x_adv."""
        return None if self.adv_trajectory is None else self.adv_trajectory.prediction(-1, self.classnames)

    @property
    def trajectory(self) -> Trajectory:
        """The trajectory people inspect: the adversarial one when there is an attack."""
        return self.adv_trajectory or self.clean_trajectory


@dataclass
class PipelineEvent:
    phase: str                       # "prepare", "purify-clean", "clean", "attack", "attack-step", "purify-adv",
    #                                  "diagnose", "done", and "heartbeat" (work still runs in a worker:
    #                                  preparing, attacking or diagnosing; it may carry text progress)
    fraction: float | None           # progress within the whole request, None = indeterminate
    message: str
    step: TrajectoryStep | None = None  # set in the purify phases: the step just computed (batch of one)
    result: PipelineResult | None = None
    classnames: list[str] | None = None  # the cleaned class names, once known
