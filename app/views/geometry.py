"""The purification drawn exactly: a trajectory in the plane of its input and the blank.

For CLIPure-Cos (L2 update, one gradient norm per sample, gamma = 0) every step stays in the
plane spanned by u_0 = z_0 / |z_0| and b_hat, and turns u by atan(eta) (docs/design.md, "What the
method does"). Plane measures what a trajectory did in that plane; it assumes nothing: a
step that leaves the plane (the L-inf update, momentum, the batch norm, CLIPure-Diff) says by
how much in `out_of_plane`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Plane:
    """One trajectory of T steps in the basis (e1, e2) of the plane of u_0 and the blank (float64)."""
    e1: torch.Tensor            # (D,) b / |b|
    e2: torch.Tensor            # (D,) u_0's part orthogonal to e1, normalised
    points: torch.Tensor        # (T+1, 2) (u_t . e1, u_t . e2), u_t = z_t/|z_t|: on the unit circle iff in the plane
    angles: torch.Tensor        # (T+1,) signed angle from the blank to u_t in the plane, degrees (u_0's is positive)
    turns: torch.Tensor         # (T,) angle between u_t and u_{t+1} in D dimensions, degrees
    out_of_plane: torch.Tensor  # (T,) |d - P d| / |d| for d = u_{t+1} - u_t (0 for a step that did not move)
    classes: torch.Tensor       # (C, 2) each class direction t_c projected into the plane
    class_lengths: torch.Tensor  # (C,) |P t_c|: 1 for a class in the plane, 0 for one orthogonal to it

    @property
    def class_angles(self) -> torch.Tensor:
        """(C,) each projected class direction's signed angle from the blank, degrees."""
        return torch.rad2deg(torch.atan2(self.classes[:, 1], self.classes[:, 0]))


def plane_coordinates(embeddings: torch.Tensor, blank: torch.Tensor, class_embeddings: torch.Tensor) -> Plane:
    """embeddings: (T+1, D) one trajectory or (T+1, N, D) (sample 0 is taken); blank (D,); class_embeddings (C, D)."""
    z = embeddings[:, 0] if embeddings.dim() == 3 else embeddings
    u = F.normalize(z.detach().double().cpu(), dim=-1)                     # (T+1, D)
    e1 = F.normalize(blank.detach().double().cpu(), dim=0)
    e2 = _orthogonal_part(u, e1)
    basis = torch.stack([e1, e2])                                          # (2, D)
    points = u @ basis.T                                                   # (T+1, 2)
    d = u[1:] - u[:-1]                                                     # (T, D) each step's move
    off = (d - (d @ basis.T) @ basis).norm(dim=-1)
    step_len = d.norm(dim=-1)
    classes = F.normalize(class_embeddings.detach().double().cpu(), dim=-1) @ basis.T
    return Plane(e1, e2, points,
                 angles=torch.rad2deg(torch.atan2(points[:, 1], points[:, 0])),
                 # 2 atan2(|u - v|, |u + v|): the angle between unit vectors, exact near 0 and 180 degrees
                 turns=torch.rad2deg(2 * torch.atan2(step_len, (u[1:] + u[:-1]).norm(dim=-1))),
                 out_of_plane=torch.where(step_len > 0, off / step_len.clamp_min(1e-300), torch.zeros_like(off)),
                 classes=classes, class_lengths=classes.norm(dim=-1))


def _orthogonal_part(u: torch.Tensor, e1: torch.Tensor) -> torch.Tensor:
    """e2: the first u_t (u_0 unless it lies along the blank) made orthogonal to e1 and normalised;
    a trajectory that never leaves the blank's line gets the coordinate axis least aligned with it."""
    for v in u:
        w = v - (v @ e1) * e1
        if w.norm() > 1e-9:
            return w / w.norm()
    axis = torch.zeros_like(e1)
    axis[e1.abs().argmin()] = 1.0
    w = axis - (axis @ e1) * e1
    return w / w.norm()


def rotation_text(turns: torch.Tensor, step_size: float | None, tol_deg: float = 0.1) -> str:
    """'each step turns 88.1° = atan(30)' when every measured turn is atan(eta) to tol_deg; else the measured
    range."""
    if turns.numel() == 0:
        return "no purification steps"
    lo, hi = float(turns.min()), float(turns.max())
    if step_size is not None:
        expected = math.degrees(math.atan(step_size))
        if abs(lo - expected) <= tol_deg and abs(hi - expected) <= tol_deg:
            return f"each step turns {expected:.1f}° = atan({step_size:g})"
    return f"each step turns {lo:.1f}°" if hi - lo < 0.05 else f"the steps turn {lo:.1f}°–{hi:.1f}°"
