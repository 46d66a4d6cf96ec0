"""The teacher's lessons say what happens on the bundled model; check that it does."""
from app.flows.pipeline import compare_threat_models, result_of, run, run_pipeline
from app.views.presets import LESSONS
from app.ui.form import FORM, Form


def form(lesson) -> Form:
    values = {**{n: None for n in FORM}, "purify_seed": 0, "eot": 1, **lesson.settings}
    return Form.of(FORM, [values[n] for n in FORM])


def test_lesson_one_fools_bare_clip():
    f = form(LESSONS[0])
    r = result_of(run(f.request(), f.attack_config(), f.purify_config()))
    assert r.outcome.fooled_clip and r.adversarial.label != r.clean.label
    assert r.attack.linf_255 <= f.eps + 1e-4   # float32 error of x * 255


def test_lesson_two_clipure_is_fooled_too_and_the_cosine_zig_zags():
    f = form(LESSONS[1])
    r = result_of(run(f.request(), f.attack_config(), f.purify_config()))
    assert r.outcome.fooled_clip and r.outcome.fooled_defence
    cos = r.adv_trajectory.cos_to_blank[:, 0]
    assert all((cos[t + 1] - cos[t]) * (cos[t + 2] - cos[t + 1]) < 0 for t in range(len(cos) - 2))   # zig-zag
    assert abs(float(cos[-1] - cos[0])) < 1e-4                                                         # back home
    from app.ui.lessons import _turns, result_text
    assert all(abs(t - 88.09) < 0.05 for t in _turns(r))   # each step turns atan(30), as the lesson says
    assert "88.1°" in result_text(1, r)


def test_lesson_three_official_fp16_keeps_the_clean_answer_and_adaptive_is_fooled():
    f = form(LESSONS[2])
    assert f.values["precision"] == "fp16" and LESSONS[2].action == "compare"
    rows = {r.attack_config.threat_model: r for r in compare_threat_models(
        f.request(), f.attack_config(), f.purify_config())}
    assert not rows["official"].outcome.fooled_defence
    assert rows["adaptive"].outcome.fooled_defence
    # the table shows why: the official attacker's gradient is exactly zero, the adaptive one's is not
    assert rows["official"].gradient.zero_fraction == 1.0 and rows["adaptive"].gradient.zero_fraction < 0.5
    from app.views.comparison import compare_table
    from app.ui.lessons import rows_text
    text = rows_text(compare_table(list(rows.values())))
    assert "Official pipeline:** CLIPure-Cos **not fooled**" in text and "exactly zero: **100%**" in text


def test_lesson_four_ttc_keeps_its_answer_against_bare_clip_attacks_and_not_through_the_defence():
    f = form(LESSONS[3])
    assert f.values["defence"] == "ttc" and LESSONS[3].action == "compare"
    rows = {r.attack_config.threat_model: r for r in compare_threat_models(
        f.request(), f.attack_config(), f.purify_config())}
    assert list(rows) == ["undefended", "adaptive", "bpda"]          # TTC has no official threat model
    assert rows["undefended"].clean_purified.label == rows["undefended"].clean.label == "red circle"
    assert not rows["undefended"].outcome.fooled_defence               # TTC's own evaluation: it holds here
    assert rows["adaptive"].outcome.fooled_defence and rows["bpda"].outcome.fooled_defence
    from app.views.comparison import compare_table
    from app.ui.lessons import rows_text
    text = rows_text(compare_table(list(rows.values())))
    assert "Undefended (transfer):** TTC **not fooled**" in text and "Adaptive (exact):** TTC **fooled**" in text


def test_lesson_five_jpeg_holds_until_bpda_and_its_exact_gradient_is_zero():
    f = form(LESSONS[4])
    assert f.values["defence"] == "jpeg" and LESSONS[4].action == "compare"
    rows = {r.attack_config.threat_model: r for r in compare_threat_models(
        f.request(), f.attack_config(), f.purify_config())}
    assert list(rows) == ["undefended", "adaptive", "bpda"]          # JPEG has no official threat model
    assert rows["undefended"].outcome.fooled_clip and not rows["undefended"].outcome.fooled_defence
    assert not rows["adaptive"].outcome.fooled_defence and rows["adaptive"].gradient.zero_fraction == 1.0
    assert rows["bpda"].outcome.fooled_defence and rows["bpda"].gradient.zero_fraction < 0.5
    from app.views.comparison import compare_table
    from app.ui.lessons import rows_text
    text = rows_text(compare_table(list(rows.values())))
    assert "BPDA:** JPEG **fooled**" in text and "exactly zero: **100%**" in text


def test_how_it_works_clipure_diff_figures_hold_on_the_toy_model():
    """The red-circle example, seed 0, T = 10, eta = 30: the prior loss averaged over shared draws at
    each step zig-zags and ends above where it started; each step turns the embedding by 129-144 deg."""
    from pathlib import Path

    import torch
    import torch.nn.functional as F

    from app.views.presets import EXAMPLES_DIR
    from app.defences import PurifyConfig
    from app.defences.priors import load_prior
    text = (Path(__file__).resolve().parent.parent / "app" / "how_it_works.md").read_text()
    for claim in ("one draw", "0 unless you change it", "0.62 at the input", "1.36 after step 1",
                  "between 0.65 and 1.26", "ended at 1.11", "129° to 144°", "double backpropagation",
                  "identity backward", "K = 10"):
        assert claim in text, claim
    names = ("red circle, red square, red triangle, red cross, green circle, green square, green triangle, "
             "green cross, blue circle, blue square, blue triangle, blue cross, yellow circle, yellow square, "
             "yellow triangle, yellow cross")
    r = run_pipeline(EXAMPLES_DIR / "toy-red-circle.png", names, None, PurifyConfig(defence="clipure-diff", seed=0),
                     backbone="toy-shapes", template_set="single")
    z = r.clean_trajectory.embeddings[:, 0].float()                       # (T+1, D)
    prior, n = load_prior("toy-shapes"), 500
    g = torch.Generator().manual_seed(1)
    t, noise = torch.randint(900, 1000, (n,), generator=g), torch.randn(n, z.shape[-1], generator=g)
    with torch.no_grad():
        mean = [prior.p_losses((zk * prior.image_embed_scale).expand(n, -1), t, noise).mean().item() for zk in z]
    assert abs(mean[0] - 0.62) < 0.05 and abs(mean[1] - 1.36) < 0.05 and abs(mean[-1] - 1.11) < 0.05, mean
    assert all(0.6 < m < 1.31 for m in mean[2:-1]) and mean[-1] > mean[0], mean
    u = F.normalize(z, dim=-1)
    turn = torch.rad2deg(torch.acos((u[1:] * u[:-1]).sum(-1).clamp(-1, 1)))
    assert 128.5 < turn.min() and turn.max() < 144.5, turn
    assert (r.clean.label, r.clean_purified.label) == ("red circle", "yellow square")
