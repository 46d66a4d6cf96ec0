"""The purification trajectory: what each step of a purifier did, for a batch of images.

Both purifiers produce it, the pipeline streams it step by step, the plots draw it and the
exports write it. Index 0 is the input embedding; index t is the embedding after t steps.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass
class Prediction:
    """One image's zero-shot prediction: the top-1 and the softmax over the class names."""
    index: int
    label: str
    probs: list[float]        # (C,)

    def top(self, k: int, classnames: Sequence[str]) -> dict[str, float]:
        order = sorted(range(len(self.probs)), key=lambda i: -self.probs[i])[:k]
        return {classnames[i]: float(self.probs[i]) for i in order}

    @classmethod
    def from_probs(cls, probs: torch.Tensor, classnames: Sequence[str]) -> "Prediction":
        """probs: (C,) softmax."""
        i = int(probs.argmax())
        return cls(i, classnames[i], probs.float().tolist())


@dataclass
class TrajectoryStep:
    """Step t of a batch's purification, as it is computed (the streamed unit)."""
    step: int
    embedding: torch.Tensor            # (N, D) z_t
    cos_to_blank: torch.Tensor         # (N,) cos(z_t, b)
    probs: torch.Tensor | None = None  # (N, C) class probabilities of z_t; None without class names
    prior_loss: torch.Tensor | None = None  # (N,) CLIPure-Diff's denoising loss at z_t
    # A pixel-space defence (TTC): the image at this step, and the counterattack's tau and weights.
    pixels: torch.Tensor | None = None      # (N, 3, S, S)
    tau: torch.Tensor | None = None         # (N,)
    weights: torch.Tensor | None = None     # (N, K+1)

    @property
    def top1(self) -> torch.Tensor | None:
        return None if self.probs is None else self.probs.argmax(-1)


@dataclass
class Trajectory:
    """A whole purification: every step of N images, stacked along the first axis."""
    embeddings: torch.Tensor              # (T+1, N, D); [0] is the input
    cos_to_blank: torch.Tensor            # (T+1, N)
    probs: torch.Tensor | None = None     # (T+1, N, C)
    prior_loss: torch.Tensor | None = None  # (T+1, N), CLIPure-Diff only
    pixels: torch.Tensor | None = None      # (T+1, N, 3, S, S), TTC only: each step's image
    tau: torch.Tensor | None = None         # (N,), TTC only
    weights: torch.Tensor | None = None     # (N, K+1), TTC only

    @classmethod
    def from_steps(cls, steps: Sequence[TrajectoryStep]) -> "Trajectory":
        def stack(name):
            values = [getattr(s, name) for s in steps]
            return None if any(v is None for v in values) else torch.stack(values)
        last = steps[-1]
        return cls(stack("embedding"), stack("cos_to_blank"), stack("probs"), stack("prior_loss"), stack("pixels"),
                   last.tau, last.weights)

    @property
    def steps(self) -> int:
        """T, the number of purification steps (the trajectory has T+1 points)."""
        return self.embeddings.shape[0] - 1

    @property
    def purified(self) -> torch.Tensor:
        """(N, D) the final embedding, the one CLIPure classifies."""
        return self.embeddings[-1]

    @property
    def top1(self) -> torch.Tensor:
        """(T+1, N) the top-1 class index at each step."""
        return self.probs.argmax(-1)

    def prediction(self, step: int, classnames: Sequence[str], i: int = 0) -> Prediction:
        """Image i's prediction after `step` steps (-1: the purified one)."""
        return Prediction.from_probs(self.probs[step, i], classnames)

    def step(self, t: int) -> TrajectoryStep:
        at = lambda v: None if v is None else v[t]  # noqa: E731
        return TrajectoryStep(t, self.embeddings[t], self.cos_to_blank[t], at(self.probs), at(self.prior_loss),
                              at(self.pixels), self.tau, self.weights)

    def select(self, i: int) -> "Trajectory":
        """Image i alone, as a batch of one."""
        pick = lambda v: None if v is None else v[:, i:i + 1]  # noqa: E731
        row = lambda v: None if v is None else v[i:i + 1]     # noqa: E731
        return Trajectory(pick(self.embeddings), pick(self.cos_to_blank), pick(self.probs), pick(self.prior_loss),
                          pick(self.pixels), row(self.tau), row(self.weights))
