"""Plots draw what the computation did: every step a point, the oscillation kept."""
import numpy as np
import torch
from matplotlib.figure import Figure

from app.attacks import AttackConfig
from app.pipeline import run_pipeline
from app.plots import cosine_figure, latent_map_figure, probability_figure, sweep_figure
from app.purify import clipure_cos
from app.zeroshot import TEXT_CACHE
from tests.conftest import CLASSES


def test_cosine_plot_keeps_the_two_cycle_zigzag():
    blank = torch.randn(16, dtype=torch.float64)
    z = torch.randn(1, 16, dtype=torch.float64)
    z = z - 0.3 * (z @ blank) * blank / blank.norm() ** 2          # an angle below 88 degrees
    cos = clipure_cos(z, blank).cos_to_blank[:, 0].tolist()
    fig = cosine_figure({"input": cos})
    (line,) = fig.axes[0].get_lines()
    ys = line.get_ydata()
    assert len(ys) == 11 and np.allclose(ys, cos)                  # every step, unsmoothed
    assert all((ys[k + 1] - ys[k]) * (ys[k + 2] - ys[k + 1]) < 0 for k in range(9))   # zig-zag


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
    assert "threat model: adaptive" in fig._suptitle.get_text()


def test_latent_map_has_landmarks_and_one_arrow_per_step(noise_image, tiny):
    r = run_pipeline(noise_image, CLASSES, AttackConfig(steps=2), model="tiny-random", template_set="single")
    classes = TEXT_CACHE.class_embeddings(tiny, CLASSES, "single")
    blank = TEXT_CACHE.blank_embedding(tiny, "single")
    fig = latent_map_figure({"adversarial input": r.adv_trajectory.embeddings[:, 0]}, classes, blank, CLASSES, "cap")
    ax = fig.axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert all(any(t.endswith(c) for t in legend) for c in CLASSES) and any("blank" in t for t in legend)
    (quiver,) = [c for c in ax.collections if c.__class__.__name__ == "Quiver"]
    assert quiver.N == r.adv_trajectory.steps


def test_text_is_at_least_10_points_and_legends_sit_outside_the_axes():
    probs = {"adversarial input": np.random.default_rng(0).dirichlet(np.ones(5), 11)}
    fig = probability_figure(probs, CLASSES, clean_idx=2, caption="threat model: adaptive | PGD", step=3)
    fig.canvas.draw()
    texts = [t for t in fig.findobj(lambda a: hasattr(a, "get_fontsize") and hasattr(a, "get_text"))
             if t.get_text().strip()]
    assert texts and min(t.get_fontsize() for t in texts) >= 10
    ax = fig.axes[0]
    assert ax.get_legend().get_window_extent().x0 >= ax.get_window_extent().x1   # right of the data
    assert any(t.get_text() == "step 3" for t in ax.texts)                        # the replay marker


def test_latent_map_marks_the_replay_step(noise_image, tiny):
    r = run_pipeline(noise_image, CLASSES, AttackConfig(steps=2), model="tiny-random", template_set="single")
    classes = TEXT_CACHE.class_embeddings(tiny, CLASSES, "single")
    blank = TEXT_CACHE.blank_embedding(tiny, "single")
    fig = latent_map_figure({"adversarial input": r.adv_trajectory.embeddings[:, 0]}, classes, blank, CLASSES,
                            step=4)
    assert any("step 4" in t.get_text() for t in fig.axes[0].get_legend().get_texts())


def test_prior_loss_panel_and_eps_sweep_keep_10_point_text_and_outside_legends():
    cos, loss = {"adversarial input": [0.2, 0.3, 0.4]}, {"adversarial input": [1.5, 1.2, 1.0]}
    sweep = {"official": [0.9, 0.9, 0.8, 0.8], "adaptive": [0.6, 0.3, 0.1, 0.0]}
    for fig in (cosine_figure(cos, "cap", 1, loss), sweep_figure([2, 8, 16, 32], sweep, "cat", "cap")):
        fig.canvas.draw()
        texts = [t for t in fig.findobj(lambda a: hasattr(a, "get_fontsize") and hasattr(a, "get_text"))
                 if t.get_text().strip()]
        assert min(t.get_fontsize() for t in texts) >= 10
        ax = fig.axes[-1]
        assert ax.get_legend().get_window_extent().x0 >= ax.get_window_extent().x1
    fig = cosine_figure(cos, prior_losses=loss)
    assert len(fig.axes) == 2 and list(fig.axes[1].get_lines()[0].get_ydata()) == loss["adversarial input"]
    assert len(cosine_figure(cos).axes) == 1   # no prior, no panel
    fig = sweep_figure([2, 8, 16, 32], sweep, "cat")
    assert [ln.get_label() for ln in fig.axes[0].get_lines()] == ["official", "adaptive"]
