"""The teacher's lessons say what happens on the bundled model; check that it does."""
from app.pipeline import compare_threat_models, run_pipeline
from app.presets import LESSONS
from app.ui.form import FORM, Form


def form(lesson) -> Form:
    values = {**{n: None for n in FORM}, "p_seed": 0, "eot": 1, **lesson.settings}
    return Form.of(FORM, [values[n] for n in FORM])


def test_lesson_one_fools_bare_clip():
    f = form(LESSONS[0])
    r = run_pipeline(f.image, f.classnames, f.attack_config(), f.purify_config(), **f.engine_args())
    assert r.outcome.fooled_clip and r.adversarial.label != r.clean.label
    assert r.attack.linf_255 <= f.eps + 1e-4   # float32 error of x * 255


def test_lesson_two_clipure_is_fooled_too_and_the_cosine_zig_zags():
    f = form(LESSONS[1])
    r = run_pipeline(f.image, f.classnames, f.attack_config(), f.purify_config(), **f.engine_args())
    assert r.outcome.fooled_clip and r.outcome.fooled_clipure
    cos = r.adv_trajectory.cos_to_blank[:, 0]
    assert all((cos[t + 1] - cos[t]) * (cos[t + 2] - cos[t + 1]) < 0 for t in range(len(cos) - 2))   # zig-zag
    assert abs(float(cos[-1] - cos[0])) < 1e-4                                                         # back home


def test_lesson_three_official_fp16_keeps_the_clean_answer_and_adaptive_is_fooled():
    f = form(LESSONS[2])
    assert f.values["precision"] == "fp16" and LESSONS[2].action == "compare"
    rows = {r.attack_config.threat_model: r for r in compare_threat_models(
        f.image, f.classnames, f.attack_config(), f.purify_config(), **f.engine_args())}
    assert not rows["official"].outcome.fooled_clipure
    assert rows["adaptive"].outcome.fooled_clipure
