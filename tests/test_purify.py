"""CLIPure-Cos against its closed form, the official reference computation and its invariants."""
import math

import pytest
import torch
import torch.nn.functional as F

from app.common.errors import OutOfRangeError, UnknownNameError
from app.defences import (
    PAPER_DEFAULTS,
    PurifyConfig,
    clipure_cos,
    clipure_cos_iter,
    purify,
    rotation_per_step,
)

D = 64


def embeddings_at_angles(blank, degrees, seed=0):
    """Unit vectors at the given angles (degrees) from blank, each in a random plane with it."""
    g = torch.Generator().manual_seed(seed)
    b = F.normalize(blank, dim=0)
    out = []
    for deg in degrees:
        w = torch.randn(D, generator=g, dtype=blank.dtype)
        w = F.normalize(w - (w @ b) * b, dim=0)
        a = math.radians(deg)
        out.append(math.cos(a) * b + math.sin(a) * w)
    return torch.stack(out)


def official_reference(z, blank, steps, eta, gamma, norm, batch_norm):
    """The update as the official code writes it: autograd on -cos, then g_u = r g."""
    r = z.norm(dim=-1, keepdim=True)
    u = z / r
    m = torch.zeros_like(u)
    out = [z]
    for _ in range(steps):
        zz = (r * u).detach().requires_grad_(True)
        loss = -F.cosine_similarity(zz, blank.expand_as(zz), dim=-1).sum()
        g = torch.autograd.grad(loss, zz)[0]
        g_u = r * g
        n = g_u.norm() if batch_norm else g_u.norm(dim=-1, keepdim=True)
        m = gamma * m - (1 - gamma) * g_u / n
        u = u + eta * (m if norm == "l2" else m.sign())
        u = u / u.norm(dim=-1, keepdim=True)
        out.append(r * u)
    return torch.stack(out)


@pytest.fixture
def blank():
    return torch.randn(D, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 0.7


@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("scope", ["sample", "batch"])
@pytest.mark.parametrize("gamma", [0.0, 0.6])
def test_matches_official_reference(blank, norm, scope, gamma):
    z = torch.randn(3, D, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 2.5
    traj = clipure_cos(z, blank, steps=6, step_size=0.7, momentum=gamma, norm=norm, grad_scope=scope)
    ref = official_reference(z, blank, 6, 0.7, gamma, norm, scope == "batch")
    assert traj.embeddings.shape == (7, 3, D)
    torch.testing.assert_close(traj.embeddings, ref, atol=1e-10, rtol=1e-10)


def test_keeps_the_norm_and_starts_at_the_input(blank):
    z = torch.randn(4, D, dtype=torch.float64) * torch.tensor([[0.5], [1.0], [3.0], [10.0]], dtype=torch.float64)
    traj = clipure_cos(z, blank, steps=7, step_size=3.0)
    assert torch.equal(traj.embeddings[0], z)
    norms = traj.embeddings.norm(dim=-1)
    torch.testing.assert_close(norms, z.norm(dim=-1).expand_as(norms))


@pytest.mark.parametrize("eta", [0.1, 1.0, 30.0])
def test_one_step_rotates_by_atan_eta_in_the_plane(blank, eta):
    z = embeddings_at_angles(blank, [40.0, 75.0, 100.0])
    z1 = clipure_cos(z, blank, steps=1, step_size=eta).embeddings[1]
    b = F.normalize(blank, dim=0)
    # rotation angle between u0 and u1 is atan(eta)
    rot = torch.rad2deg(torch.acos((z * z1).sum(-1).clamp(-1, 1)))
    torch.testing.assert_close(rot, torch.full_like(rot, rotation_per_step(eta)), atol=1e-6, rtol=0)
    # the new angle to b is |theta0 - atan(eta)|, and u1 stays in span(u0, b)
    theta1 = torch.rad2deg(torch.acos((z1 @ b).clamp(-1, 1)))
    expected = (torch.tensor([40.0, 75.0, 100.0], dtype=torch.float64) - rotation_per_step(eta)).abs()
    torch.testing.assert_close(theta1, expected, atol=1e-6, rtol=0)
    basis = torch.stack([b.expand_as(z), F.normalize(z - (z @ b)[:, None] * b, dim=-1)], dim=1)  # (N, 2, D)
    inplane = torch.einsum("nkd,nd->nk", basis, z1)
    torch.testing.assert_close(inplane.norm(dim=-1), torch.ones(3, dtype=torch.float64))


def test_eta30_rotates_88_degrees():
    assert rotation_per_step(30.0) == pytest.approx(88.09, abs=0.01)


def test_official_defaults_two_cycle_returns_the_input(blank):
    # Angles below atan(30) = 88.1 degrees: step 1 overshoots past b, step 2 comes back.
    z = embeddings_at_angles(blank, [60.0, 72.0, 80.0, 87.0])
    traj = clipure_cos(z, blank, **{k: v for k, v in vars(PAPER_DEFAULTS).items() if k not in ("defence", "seed", "diffusion_timesteps", "params")})
    assert traj.embeddings.shape[0] == 11
    torch.testing.assert_close(traj.embeddings[-1], z, atol=1e-9, rtol=0)
    # the odd steps sit on the far side of b, close to it: the cosine oscillates
    cos = traj.cos_to_blank
    assert (cos[1::2] > cos[0::2][:5]).all() and (cos[2::2] - cos[0]).abs().max() < 1e-9
    # the same holds in float32, up to float error
    z32 = clipure_cos(z.float(), blank.float()).purified
    assert (z32 - z.float()).abs().max() < 1e-4


def test_batch_scope_couples_samples(blank):
    z = embeddings_at_angles(blank, [50.0, 80.0])
    alone = clipure_cos(z[:1], blank, steps=3, step_size=0.5, grad_scope="batch").purified
    together = clipure_cos(z, blank, steps=3, step_size=0.5, grad_scope="batch").purified[:1]
    per_sample = clipure_cos(z, blank, steps=3, step_size=0.5, grad_scope="sample").purified[:1]
    assert (alone - together).abs().max() > 1e-3    # depends on its batch mate
    torch.testing.assert_close(per_sample, alone)   # one sample alone: both scopes agree


def test_small_steps_raise_the_cosine_monotonically(blank):
    # 25 steps of atan(0.02) = 1.15 degrees: 28.6 degrees in all, less than the smallest angle
    z = embeddings_at_angles(blank, [30.0, 70.0, 110.0, 150.0])
    cos = clipure_cos(z, blank, steps=25, step_size=0.02).cos_to_blank   # (26, N)
    assert (cos[1:] > cos[:-1]).all()


def test_iter_streams_the_same_steps(blank):
    z = embeddings_at_angles(blank, [45.0])
    steps = list(clipure_cos_iter(z, blank, steps=4, step_size=2.0))
    torch.testing.assert_close(torch.stack(steps), clipure_cos(z, blank, 4, 2.0).embeddings)


def test_adaptive_backward_is_the_exact_gradient(blank):
    # Reference: differentiate the official update with create_graph=True.
    z0 = torch.randn(2, D, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    w = torch.randn(D, dtype=torch.float64)
    cfg = PurifyConfig(steps=3, step_size=0.8)

    def reference(z):
        r = z.norm(dim=-1, keepdim=True)
        u = z / r
        for _ in range(3):
            zz = r * u
            loss = -F.cosine_similarity(zz, blank.expand_as(zz), dim=-1).sum()
            g = torch.autograd.grad(loss, zz, create_graph=True)[0]
            g_u = r * g
            u = u - 0.8 * g_u / g_u.norm(dim=-1, keepdim=True)
            u = u / u.norm(dim=-1, keepdim=True)
        return r * u

    za = z0.clone().requires_grad_(True)
    (purify(za, blank, cfg, backward="adaptive") @ w).sum().backward()
    zr = z0.clone().requires_grad_(True)
    (reference(zr) @ w).sum().backward()
    torch.testing.assert_close(za.grad, zr.grad, atol=1e-10, rtol=1e-8)


def test_official_backward_shrinks_by_sqrt_one_plus_eta_squared(blank):
    # Directions detached: each step is u -> (u + c) / ||u + c|| with c constant, ||c|| = eta
    # and c tangent, so a gradient normal to the plane of u and b shrinks by exactly
    # 1 / sqrt(1 + eta^2) per step. The input is normalised first, as in the pipeline.
    z0 = embeddings_at_angles(blank, [70.0])[0]
    b = F.normalize(blank, dim=0)
    w = torch.randn(D, dtype=torch.float64)
    e = F.normalize(z0 - (z0 @ b) * b, dim=0)
    w = w - (w @ b) * b - (w @ e) * e         # normal to span(z0, b)
    for steps in (1, 2, 4, 10):
        z = z0.clone()[None].requires_grad_(True)
        out = purify(F.normalize(z, dim=-1), blank, PurifyConfig(steps=steps, step_size=30.0), backward="detached")
        (out @ w).sum().backward()
        ratio = z.grad.norm() / w.norm()
        assert ratio.item() == pytest.approx((1 + 30.0 ** 2) ** (-steps / 2), rel=1e-6)
        # the exact (adaptive) gradient of the 2-cycle is the identity's for even steps
        z = z0.clone()[None].requires_grad_(True)
        out = purify(F.normalize(z, dim=-1), blank, PurifyConfig(steps=steps, step_size=30.0), backward="adaptive")
        (out @ w).sum().backward()
        if steps % 2 == 0:
            torch.testing.assert_close(z.grad[0], w, atol=1e-8, rtol=1e-8)


def test_no_graph_when_not_asked(blank):
    z = embeddings_at_angles(blank, [60.0]).requires_grad_(True)
    assert not purify(z, blank, PAPER_DEFAULTS).requires_grad


def test_config_validation():
    assert PurifyConfig().validate() == PAPER_DEFAULTS
    with pytest.raises(OutOfRangeError, match="Purification steps"):
        PurifyConfig(steps=500).validate()
    with pytest.raises(OutOfRangeError, match="whole number"):
        PurifyConfig(steps=2.5).validate()
    with pytest.raises(OutOfRangeError, match="step size"):
        PurifyConfig(step_size=-1).validate()
    with pytest.raises(UnknownNameError, match="clipure-cos"):
        PurifyConfig(defence="clipure-x").validate()
    with pytest.raises(UnknownNameError, match="l2, linf"):
        PurifyConfig(norm="l1").validate()
