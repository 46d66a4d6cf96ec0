"""Plots draw what the computation did: every step a point, the oscillation kept, the geometry exact,
and every label legible on a projector and a phone."""
import math
import re

import matplotlib.text
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from app.attacks import AttackConfig
from app.views.geometry import plane_coordinates, rotation_text
from app.clip.models import TOY_CLASSNAMES
from app.flows.pipeline import run_pipeline
from app.views.plots import cosine_figure, latent_map_figure, probability_figure, rotation_figure, sweep_figure
from app.defences import clipure_cos
from app.clip.zeroshot import TEXT_CACHE
from tests.conftest import CLASSES
from tests.test_purify import D, embeddings_at_angles

# --- the rotation view's geometry against the closed form ------------------------------------

BLANK = torch.randn(D, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 0.7
CLASS_DIRECTIONS = F.normalize(torch.randn(16, D, generator=torch.Generator().manual_seed(3), dtype=torch.float64),
                               dim=-1)


@pytest.mark.parametrize("eta", [0.5, 2.0, 30.0])
def test_each_step_turns_atan_eta_on_the_unit_circle_of_the_plane(eta):
    z = 3.0 * embeddings_at_angles(BLANK, [62.0, 20.0])           # (2, D), norm 3: u = z / |z|
    plane = plane_coordinates(clipure_cos(z, BLANK, steps=10, step_size=eta).embeddings, BLANK, CLASS_DIRECTIONS)
    assert plane.points.shape == (11, 2) and plane.turns.shape == plane.out_of_plane.shape == (10,)
    torch.testing.assert_close(plane.points.norm(dim=-1), torch.ones(11, dtype=torch.float64), atol=1e-12, rtol=0)
    assert (plane.turns - math.degrees(math.atan(eta))).abs().max() < 1e-4
    assert plane.out_of_plane.max() < 1e-6                        # per-sample L2, gamma = 0: in the plane
    assert plane.angles[0] == pytest.approx(62.0, abs=1e-9)       # u_0's angle to the blank, positive
    assert rotation_text(plane.turns, eta) == f"each step turns {math.degrees(math.atan(eta)):.1f}° = atan({eta:g})"
    # the classes: projections of unit rows, so no longer than 1, and their lengths are their norms
    assert (plane.class_lengths <= 1 + 1e-12).all()
    torch.testing.assert_close(plane.class_lengths, plane.classes.norm(dim=-1))


def test_eta_30_is_a_two_cycle_across_the_blank():
    z = embeddings_at_angles(BLANK, [62.0])
    plane = plane_coordinates(clipure_cos(z, BLANK).embeddings, BLANK, CLASS_DIRECTIONS)   # T = 10, eta = 30
    turn = math.degrees(math.atan(30.0))
    assert turn == pytest.approx(88.09, abs=0.01)
    even, odd = plane.angles[0::2], plane.angles[1::2]
    torch.testing.assert_close(even, torch.full_like(even, 62.0), atol=1e-9, rtol=0)          # back at the start
    torch.testing.assert_close(odd, torch.full_like(odd, 62.0 - turn), atol=1e-9, rtol=0)    # past the blank
    assert (even > 0).all() and (odd < 0).all()


def test_the_linf_update_and_the_batch_norm_are_measured_not_assumed():
    z = embeddings_at_angles(BLANK, [62.0, 20.0])
    linf = plane_coordinates(clipure_cos(z, BLANK, norm="linf").embeddings, BLANK, CLASS_DIRECTIONS)
    assert linf.out_of_plane.max() > 0.01                           # sign(m) leaves the plane
    assert (linf.points.norm(dim=-1)[1:] < 1 - 1e-3).any()          # so its points fall inside the circle
    assert "=" not in rotation_text(linf.turns, 30.0)               # the measured range, not atan(eta)
    # The batch norm keeps each step in the plane but turns it by less than atan(eta) (docs/design.md, "What the method does").
    batch = plane_coordinates(clipure_cos(z, BLANK, steps=1, grad_scope="batch").embeddings, BLANK, CLASS_DIRECTIONS)
    assert batch.out_of_plane.max() < 1e-6 and batch.turns[0] < math.degrees(math.atan(30.0)) - 0.1


def test_rotation_figure_draws_the_plane_exactly():
    z = embeddings_at_angles(BLANK, [62.0])
    traj = clipure_cos(z, BLANK)
    names = list(TOY_CLASSNAMES)
    fig = rotation_figure(traj.embeddings, BLANK, CLASS_DIRECTIONS, names, "cap", step=10, step_size=30.0)
    ax = fig.axes[0]
    (points,) = [ln for ln in ax.get_lines() if len(ln.get_xdata()) == 11]
    plane = plane_coordinates(traj.embeddings, BLANK, CLASS_DIRECTIONS)
    assert np.allclose(np.c_[points.get_xdata(), points.get_ydata()], plane.points.numpy())   # every step, exact
    texts = _texts(fig)
    assert any("each step turns 88.1° = atan(30)" in t.lower() for t in texts)
    assert any("Every step stays in this plane" in t for t in texts)
    assert {"start: 62.0°", "step 1: −26.1°", "step 10: 62.0°", "0,2,…,10", "1,3,…,9", "blank"} <= set(texts)
    assert all(n in texts for n in names)                            # every class named beside the circle
    linf = rotation_figure(clipure_cos(z, BLANK, norm="linf").embeddings, BLANK, CLASS_DIRECTIONS, names)
    assert any("leave the plane by up to" in t for t in _texts(linf))
    phone = rotation_figure(traj.embeddings, BLANK, CLASS_DIRECTIONS, names, narrow=True)
    assert phone.get_figwidth() == pytest.approx(4.6) and {str(n) for n in range(1, 17)} <= set(_texts(phone))
    crowded = [f"{n} photographed on a plain white background, {k}" for k in range(3) for n in TOY_CLASSNAMES]
    directions = torch.randn(48, D, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    fig = rotation_figure(traj.embeddings, BLANK, F.normalize(directions, dim=-1), crowded)
    assert any(" of 48 classes named" in t for t in _texts(fig)) and legibility_problems(fig) == []   # says so


# --- the time-series figures -------------------------------------------------------------------

def test_cosine_plot_keeps_the_two_cycle_zigzag_and_says_each_step_is_a_rotation():
    g = torch.Generator().manual_seed(0)
    blank = torch.randn(16, generator=g, dtype=torch.float64)
    z = torch.randn(1, 16, generator=g, dtype=torch.float64)
    z = z - 0.3 * (z @ blank) * blank / blank.norm() ** 2
    cos = clipure_cos(z, blank).cos_to_blank[:, 0].tolist()
    fig = cosine_figure({"input": cos}, step_size=30.0)
    (line,) = fig.axes[0].get_lines()
    ys = line.get_ydata()
    assert len(ys) == 11 and np.allclose(ys, cos)                  # every step, unsmoothed
    assert all((ys[k + 1] - ys[k]) * (ys[k + 2] - ys[k + 1]) < 0 for k in range(9))   # zig-zag
    note = " ".join(_texts(fig)).replace("\n", " ")
    assert "atan(η) = atan(30) = 88.1°" in note and f"{cos[10]:.2f} (even steps) / {cos[9]:.2f} (odd steps)" in note


def test_probability_plot_marks_clean_and_target_with_shared_colours():
    probs = {"adversarial input": np.random.default_rng(0).dirichlet(np.ones(5), 11),
             "clean input": np.random.default_rng(1).dirichlet(np.ones(5), 11)}
    fig = probability_figure(probs, CLASSES, clean_idx=2, target_idx=4, caption="threat model: adaptive | PGD")
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    for ax, p in zip(fig.axes, probs.values()):
        lines = {ln.get_label(): ln for ln in ax.get_lines()}
        clean, target = lines["car (clean prediction)"], lines["tree (target)"]
        assert np.allclose(clean.get_ydata(), p[:, 2]) and np.allclose(target.get_ydata(), p[:, 4])
        assert clean.get_linewidth() > 2 and target.get_linestyle() == "--"
    colours = [{ln.get_label(): ln.get_color() for ln in ax.get_lines()} for ax in fig.axes]
    assert colours[0] == colours[1]
    assert "threat model: adaptive" in fig.get_suptitle()
    fig.canvas.draw()
    assert fig.legends[0].get_window_extent().x0 >= fig.axes[-1].get_window_extent().x1   # right of the data


def test_latent_map_has_landmarks_and_one_arrow_per_step(noise_image, tiny):
    r = run_pipeline(noise_image, CLASSES, AttackConfig(steps=2), backbone="tiny-random", template_set="single")
    classes = TEXT_CACHE.class_embeddings(tiny, CLASSES, "single")
    blank = TEXT_CACHE.blank_embedding(tiny, "single")
    fig = latent_map_figure({"adversarial input": r.adv_trajectory.embeddings[:, 0]}, classes, blank, CLASSES, "cap",
                            step=4)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert all(any(t.endswith(c) for t in legend) for c in CLASSES) and any("blank" in t for t in legend)
    assert any("step 4" in t for t in legend)                       # the replay step
    (quiver,) = [c for c in fig.axes[0].collections if c.__class__.__name__ == "Quiver"]
    assert quiver.N == r.adv_trajectory.steps
    others = torch.randn(15, classes.shape[1], generator=torch.Generator().manual_seed(5))
    many = torch.cat([classes, F.normalize(others, dim=-1)])
    fig = latent_map_figure({"input": r.adv_trajectory.embeddings[:, 0]}, many, blank,
                            CLASSES + list("abcdefghijklmno"))
    assert fig.legends[0].get_title().get_text() == "16 of 20 classes shown"   # the key says what it leaves out


def test_prior_loss_panel_and_eps_sweep():
    cos, loss = {"adversarial input": [0.2, 0.3, 0.4]}, {"adversarial input": [1.5, 1.2, 1.0]}
    fig = cosine_figure(cos, prior_losses=loss)
    assert len(fig.axes) == 2 and list(fig.axes[1].get_lines()[0].get_ydata()) == loss["adversarial input"]
    assert len(cosine_figure(cos).axes) == 1   # no prior, no panel
    fig = sweep_figure([2, 8, 16, 32], {"official": [0.9, 0.9, 0.8, 0.8], "adaptive": [0.6, 0.3, 0.1, 0.0]}, "cat")
    assert [ln.get_label() for ln in fig.axes[0].get_lines()] == ["official", "adaptive"]


# --- legible on a projector and a phone -------------------------------------------------------

LONG = [n if i % 3 else f"{n} on a plain white background" for i, n in enumerate(TOY_CLASSNAMES)]
CAPTION = ("threat model: adaptive | PGD, L-inf eps 4/255, 10 steps | toy-shapes fp32 | "
           "clipure-cos T=10 eta=30 gamma=0 l2 (sample)")


@pytest.fixture(scope="module")
def scene():
    """A CLIP-like scene: 16 toy classes and the blank near a common direction, an image near class 4
    and its attacked version, each purified with the paper's defaults (T = 10, eta = 30)."""
    g = torch.Generator().manual_seed(0)
    common = F.normalize(torch.randn(D, generator=g), dim=0)
    noise = lambda *shape: 0.3 * torch.randn(*shape, generator=g)  # noqa: E731
    classes = F.normalize(common + noise(16, D), dim=-1)
    blank = F.normalize(common + noise(D), dim=0)
    clean = clipure_cos(5 * F.normalize(classes[4] + noise(D), dim=0)[None], blank)
    adv = clipure_cos(5 * F.normalize(classes[4] + 0.5 * classes[9] + noise(D), dim=0)[None], blank)
    probs = lambda t: torch.softmax(100 * F.normalize(t.embeddings[:, 0], dim=-1) @ classes.T, -1).numpy()  # noqa
    return dict(classes=classes, blank=blank, clean=clean, adv=adv, probs={"adversarial input": probs(adv),
                                                                          "clean input": probs(clean)})


FIGURES = {
    "probability": lambda s, narrow: probability_figure(s["probs"], LONG, 4, None, CAPTION, 5, 10, narrow),
    "cosine": lambda s, narrow: cosine_figure({k: s[t].cos_to_blank[:, 0].tolist() for k, t in
                                               (("adversarial input", "adv"), ("clean input", "clean"))},
                                              CAPTION, 10, narrow=narrow, step_size=30.0),
    "cosine+prior": lambda s, narrow: cosine_figure({"adversarial input": [0.2, 0.3, 0.4]}, CAPTION, 2,
                                                    {"adversarial input": [1.5, 1.2, 1.0]}, narrow),
    "latent_map": lambda s, narrow: latent_map_figure({"adversarial input": s["adv"].embeddings[:, 0],
                                                       "clean input": s["clean"].embeddings[:, 0]},
                                                      s["classes"], s["blank"], LONG, CAPTION, step=10,
                                                      narrow=narrow),
    "rotation": lambda s, narrow: rotation_figure(s["adv"].embeddings, s["blank"], s["classes"], LONG, CAPTION,
                                                  step=10, narrow=narrow, step_size=30.0),
    "sweep": lambda s, narrow: sweep_figure([1, 2, 4, 8, 16, 32], {
        "official": [.9, .9, .9, .8, .8, .8], "adaptive": [.7, .4, .1, 0, 0, 0], "BPDA": [.8, .5, .2, .1, 0, 0],
        "undefended": [.5, .2, 0, 0, 0, 0]}, LONG[0], CAPTION, narrow=narrow),
}


def drawn_texts(fig: Figure) -> tuple[list, tuple[int, int]]:
    """[(Text, box in px)] of every visible, non-empty Text artist that drawing the figure draws (tick
    labels outside the view and hidden axes draw none), and the canvas size. Boxes are the text's own
    (an annotation's leader line is not text)."""
    drawn = set()
    draw = matplotlib.text.Text.draw

    def record(self, renderer):
        drawn.add(id(self))
        return draw(self, renderer)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(matplotlib.text.Text, "draw", record)
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
    renderer = canvas.get_renderer()
    texts = [(t, matplotlib.text.Text.get_window_extent(t, renderer)) for t in fig.findobj(matplotlib.text.Text)
             if id(t) in drawn and t.get_visible() and t.get_text().strip()]
    return texts, canvas.get_width_height()


def legibility_problems(fig: Figure, min_size: float = 14) -> list[str]:
    """Every text inside the canvas, none over another (touching within 1 px allowed), none below min_size pt."""
    texts, (w, h) = drawn_texts(fig)
    problems = [f"{t.get_text()!r} at {t.get_fontsize()} pt" for t, _ in texts if t.get_fontsize() < min_size]
    problems += [f"{t.get_text()!r} outside the {w}x{h} canvas: {b.bounds}" for t, b in texts
                 if b.x0 < -0.5 or b.y0 < -0.5 or b.x1 > w + 0.5 or b.y1 > h + 0.5]
    for i, (s, a) in enumerate(texts):
        for t, b in texts[i + 1:]:
            if min(a.x1, b.x1) - max(a.x0, b.x0) > 1 and min(a.y1, b.y1) - max(a.y0, b.y0) > 1:
                problems.append(f"{s.get_text()!r} over {t.get_text()!r}")
    return problems


def _texts(fig: Figure) -> list[str]:
    return [t.get_text() for t, _ in drawn_texts(fig)[0]]


@pytest.mark.parametrize("narrow", [False, True], ids=["desktop", "phone"])
@pytest.mark.parametrize("name", list(FIGURES))
def test_every_figure_is_legible(scene, name, narrow):
    fig = FIGURES[name](scene, narrow)
    assert legibility_problems(fig) == []
    # Desktop: the page's plot panel wide (about 1,216 px at 72 dpi); phone: 4.6 in = 331 px.
    width = fig.get_figwidth()
    assert fig.dpi == 72 and (width == pytest.approx(4.6) if narrow else 16.5 <= width <= 16.9)
    for ax in fig.axes:   # the replay marker sits above the data, not on a peak
        for marker in [t for t in ax.texts if re.fullmatch(r"step \d+", t.get_text())]:
            top = max(ax.transData.transform(np.c_[ln.get_xdata(), ln.get_ydata()])[:, 1].max()
                      for ln in ax.get_lines() if len(ln.get_xdata()) > 2)
            assert marker.get_window_extent().y0 > top + 2, (name, narrow)
