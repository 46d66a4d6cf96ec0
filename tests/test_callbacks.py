"""The UI callbacks as plain functions: no server, no browser."""
import gradio as gr
import pytest

from app.views.presets import EXAMPLES_DIR
from app.ui import audit_panel as ap
from app.ui import callbacks as cb
from app.ui import events as ev
from app.ui import form as fm

IMAGE = str(EXAMPLES_DIR / "cat.png")
VALUES = dict(image=IMAGE, classnames="cat, dog, car, plane", backbone="tiny-random", template_set="single",
              attack="PGD", threat_model="adaptive", eps=8, steps=2, step_size=0, seed=1, targeted=False,
              target="dog", defence="clipure-cos", purify_steps=4, purify_step_size=30.0, momentum=0.0, norm="l2",
              grad_scope="sample", precision="fp32", purify_seed=0, eot=1)


def values(names=fm.FORM, **changes):
    return [{**fm.Form().values, **VALUES, **changes}[n] for n in names]


def test_form_builds_the_configs_from_widget_values():
    form = fm.Form.of(fm.FORM, values())
    a, p = form.attack_config(), form.purify_config()
    assert a.step_size is None and a.target is None and not a.targeted   # 0 = eps/4; target only when targeted
    assert fm.Form.of(fm.FORM, values(targeted=True)).attack_config().target == "dog"
    assert (p.steps, p.step_size, p.grad_scope) == (4, 30.0, "sample")


def test_run_outputs_are_ordered_by_name_and_unknown_names_are_refused():
    out = fm.run_outputs(status="x", replay=3)
    assert out[fm.RUN_OUTPUTS.index("status")] == "x" and out[fm.RUN_OUTPUTS.index("replay")] == 3
    assert len(out) == len(fm.RUN_OUTPUTS)
    with pytest.raises(AssertionError):
        fm.run_outputs(no_such_output=1)


def test_user_errors_turns_engine_errors_into_one_gr_error_also_in_generators():
    from app.common.errors import OutOfRangeError

    @fm.user_errors
    def stream():
        yield 1
        raise OutOfRangeError("Steps must be between 1 and 200, got 500.")
    gen = stream()
    assert next(gen) == 1
    with pytest.raises(gr.Error, match="Steps must be between 1 and 200"):
        next(gen)


def test_run_demo_streams_to_a_complete_result():
    updates = list(cb.run_demo(*values()))
    final = dict(zip(fm.RUN_OUTPUTS, updates[-1]))
    assert final["status"].startswith("**Done in") and final["replay"] == 4
    assert "Step 4/4" in final["replay_note"] and final["replay_label"]   # the replay is filled at the end
    assert final["purified_label"] and final["result_state"].purify_config.steps == 4
    statuses = [dict(zip(fm.RUN_OUTPUTS, u))["status"] for u in updates[:-1]]
    assert any("PGD" in str(s) for s in statuses)   # progress beside the button, during the attack


def test_run_demo_refuses_bad_input_in_one_sentence():
    updates = []
    with pytest.raises(gr.Error, match="L-inf eps must be between 0 and 32"):   # the toast
        for u in cb.run_demo(*values(eps=50)):
            updates.append(dict(zip(fm.RUN_OUTPUTS, u)))
    last = updates[-1]   # and the sentence in the status line; no result widget touched
    assert last["status"].startswith("**Not run:** L-inf eps must be between 0 and 32")
    assert all(v == gr.skip() for u in updates for k, v in u.items() if k != "status")


def test_replay_shows_the_prediction_at_the_chosen_step():
    final = dict(zip(fm.RUN_OUTPUTS, list(cb.run_demo(*values()))[-1]))
    r = final["result_state"]
    label, note, probs, cos, rotation, latent = ev.on_replay(r, 2)
    assert label == r.adv_trajectory.prediction(2, r.classnames).top(cb.TOP_K, r.classnames)
    assert "Step 2/4" in note
    assert probs.axes[0].lines and cos is not None and latent is not None   # only the plot in view is drawn
    assert all(isinstance(f, type(cos)) for f in (cos, rotation, latent)) and not hasattr(cos, "axes")
    marked = ev.on_plot_tab(r, 2, "cos_plot")                               # its tab opened: drawn, step marked
    assert any(line.get_xdata()[0] == 2 for line in marked.axes[0].lines if len(line.get_xdata()) == 2)
    after = ev.on_plots_after_run(r, 0, "map_plot")
    assert not any(hasattr(f, "axes") for f in after[:3]) and after[3].axes
    assert ev.on_plot_tab(r, 1, "rot_plot").axes                              # the rotation view, at step 1
    assert not hasattr(ev.on_plots_after_run(r, 0, "prob_plot")[0], "axes")   # the run drew it already
    assert ev.on_replay(None, 2)[0] is not None   # no run yet: nothing changes (gr.skip)


def test_classify_api_and_target_menu():
    *_, out = cb.classify_api(*values(fm.COMMON + fm.PRECISION))   # a stream: the last value is the answer
    assert out["classnames"] == ["cat", "dog", "car", "plane"] and out["meaningless"]
    update = ev.on_classnames("cat, dog, cat", "zebra")
    assert update["choices"] == ["cat", "dog"] and update["value"] == "dog"


def test_every_yes_no_comes_from_the_one_outcome():
    final = dict(zip(fm.RUN_OUTPUTS, list(cb.run_demo(*values(purify_steps=5)))[-1]))
    r = final["result_state"]
    o = r.outcome
    assert ("succeeded" if o.fooled_clip else "failed") in final["adv_note"]
    assert ("succeeded" if o.fooled_defence else "failed") in final["purified_note"]
    assert ("changed" if o.defence_changed_clean else "same") in final["clean_note"]
    assert "T = 5 is odd" in final["stats"] and "2-cycle" in final["stats"]      # the odd-T note
    import json
    d = json.loads(open(final["json_file"]).read())
    assert d["attack_config"]["step_size"] == 2.0 and d["attack_config"]["step_size_default"]   # eps 8 / 4
    assert d["attack_succeeded"] == {"bare_clip": o.fooled_clip, "defence": o.fooled_defence}
    from app.views import comparison
    row = comparison.threat_model_row(r)
    assert row["fooled the defence"].startswith("yes" if o.fooled_defence else "no")


def test_the_status_says_when_the_defence_had_already_changed_the_clean_answer():
    from app.views.presets import EXAMPLES_DIR
    final = dict(zip(fm.RUN_OUTPUTS, list(cb.run_demo(*values(
        image=str(EXAMPLES_DIR / "toy-red-circle.png"), classnames="red circle, red square, yellow square, blue square",
        backbone="toy-shapes", defence="clipure-diff", threat_model="undefended", eps=4, steps=1, purify_steps=10)))[-1]))
    r = final["result_state"]
    assert r.outcome.defence_changed_clean and not r.outcome.fooled_defence   # the toy prior: wrong before any attack
    status = final["status"]
    assert "on CLIPure-Diff: **failed**" in status and "already changed the clean answer" in status
    assert f"({r.clean.label} → {r.clean_purified.label})" in status and "left it there" in status
    assert "already changed the clean answer" in final["purified_note"]
    other = dict(zip(fm.RUN_OUTPUTS, list(cb.run_demo(*values()))[-1]))["result_state"]
    assert ("already changed" in cb.done_status(other, 1.0)) == other.outcome.defence_changed_clean


def test_a_target_equal_to_the_clean_class_is_refused_in_one_sentence():
    clean = list(cb.classify_api(*values(fm.COMMON + fm.PRECISION)))[-1]["label"]
    with pytest.raises(gr.Error, match="already the clean prediction"):
        list(cb.run_demo(*values(targeted=True, target=clean, threat_model="undefended")))


def test_a_refusal_after_progress_leaves_no_stale_progress_bar(monkeypatch):
    from app.common.budget import OverBudget
    from app.flows.results import PipelineEvent

    def run(*a, **k):
        yield PipelineEvent("attack", 0.3, "PGD under adaptive")
        raise OverBudget("The request took longer than 120 s and was stopped.")
    monkeypatch.setattr(cb, "run", run)
    updates = []
    with pytest.raises(gr.Error, match="longer than"):
        for u in cb.run_demo(*values()):
            updates.append(dict(zip(fm.RUN_OUTPUTS, u)))
    assert "PGD" in updates[0]["status"]
    assert updates[-1]["status"].startswith("**Not run:** The request took longer") and "⏳" not in updates[-1]["status"]


def test_a_refusal_puts_its_sentence_in_the_status_line_and_marks_earlier_results():
    """Run, then eps 999, then Run: the refusal's sentence is in the status line, not only in a toast."""
    updates = []
    with pytest.raises(gr.Error, match="eps"):
        for u in cb.run_demo(*values(eps=999)):
            updates.append(dict(zip(fm.RUN_OUTPUTS, u)))
    status = updates[-1]["status"]
    assert status.startswith("**Not run:**") and "eps" in status and "earlier request" in status
    final = dict(zip(fm.RUN_OUTPUTS, list(cb.run_demo(*values(steps=1, purify_steps=2)))[-1]))
    assert final["status"].startswith("**Done in")   # the next good run owns the status line again


def test_a_text_file_upload_gets_one_sentence(tmp_path):
    fake = tmp_path / "notes.png"
    fake.write_text("not an image at all")
    image, status = ev.on_upload(str(fake))
    assert image is None and status.count(".") >= 1 and "image" in status.lower()


def test_lessons_set_form_fields_and_open_the_stage_with_only_their_proof():
    from app.views.presets import LESSONS
    from app.ui import lessons as ls
    proofs = {"images": "_lesson_images", "rotation": "_lesson_plot", "compare": "_lesson_table"}
    for k, lesson in enumerate(LESSONS):
        assert set(lesson.settings) <= set(fm.FORM)
        out = ls.on_lesson(k)()
        assert len(out) == len(lesson.settings) + len(ls.lesson_outputs(k))
        stage = dict(zip(ls.lesson_outputs(k), out[len(lesson.settings):]))
        assert stage["_stage"]["visible"] and lesson.text in stage["_lesson_text"]
        assert [key for key in proofs.values() if stage[key]["visible"]] == [proofs[lesson.proof]]
        if lesson.action == "compare":   # earlier results cleared, the page's compare panel hidden
            assert stage["status"] == "" and stage["result_state"] is None and stage["clean_label"] is None
            assert stage["_compare_panel"]["visible"] is False
    assert [lesson.proof for lesson in LESSONS] == ["images", "rotation", "compare", "compare", "compare"]
    assert LESSONS[2].settings["precision"] == "fp16" and LESSONS[2].action == "compare"
    assert LESSONS[3].settings["defence"] == "ttc" and LESSONS[3].settings["precision"] == "fp32"   # another defence
    assert LESSONS[1].replay_from == 1 and LESSONS[1].settings["image"] != LESSONS[0].settings["image"]


def test_gpu_duration_grows_with_the_request():
    from app.ui.hosting import MAX_SECONDS
    request_seconds = fm.gpu_seconds(fm.FORM)   # what spaces calls: the call's own arguments
    short = request_seconds(*values(steps=10, threat_model="undefended"))
    long = request_seconds(*values(steps=100, threat_model="adaptive", purify_steps=10))
    assert short < long <= MAX_SECONDS
    assert long < request_seconds(*values(attack="AutoAttack", steps=100, threat_model="adaptive")) <= MAX_SECONDS
    assert request_seconds(*values(attack="AutoAttack", steps=200, threat_model="adaptive", purify_steps=20)) == MAX_SECONDS
    base = request_seconds(*values(steps=60, threat_model="adaptive", purify_steps=10))
    diff = request_seconds(*values(steps=60, threat_model="adaptive", purify_steps=10, defence="clipure-diff"))
    assert diff > base   # each of its steps runs the prior
    # K queries a step against a randomised defence; against a deterministic one K is refused, and costs nothing more
    assert request_seconds(*values(steps=60, threat_model="adaptive", purify_steps=10, defence="clipure-diff", eot=4)) > diff
    assert request_seconds(*values(steps=60, threat_model="adaptive", purify_steps=10, eot=4)) == base
    assert request_seconds(*values(attack="no such attack")) >= 20   # a bad name is the engine's to refuse


def test_clipure_diff_is_offered_only_where_a_prior_exists_and_says_it_is_randomised():
    assert [k for _, k in ev.defences_for("tiny-random")] == ["clipure-cos", "ttc", "jpeg"]   # no prior needed
    assert "clipure-diff" in [k for _, k in ev.defences_for("toy-shapes")]
    assert "clipure-diff" in [k for _, k in ev.defences_for("ViT-L-14-quickgelu/openai")]
    assert ev.on_defence_menu("tiny-random", "clipure-diff")["value"] == "clipure-cos"   # falls back
    assert ev.on_defence_menu("toy-shapes", "clipure-diff")["value"] == "clipure-diff"
    note, title, seed, eot, *rows = ev.on_defence("clipure-diff")
    assert "randomised" in note and seed["visible"] and eot["visible"] and title["label"] == "Attacked: CLIPure-Diff"
    note, title, seed, eot, *rows = ev.on_defence("clipure-cos")
    assert note.startswith("**CLIPure-Cos:**") and not seed["visible"] and not eot["visible"]
    assert not any(r["visible"] for r in rows)
    note, title, seed, eot, *rows = ev.on_defence("ttc")   # randomised too (its start), and it says what it does
    assert "counterattacks" in note and "no official threat model" in note and seed["visible"] and eot["visible"]
    assert [r["visible"] for r in rows] == [k == "ttc" for k in ev.own_param_rows()]   # TTC's own parameters
    note, title, seed, eot, *rows = ev.on_defence("jpeg")   # deterministic: no seed, no EOT
    assert "BPDA" in note and not seed["visible"] and title["label"] == "Attacked: JPEG"


def test_hiding_the_eot_count_and_seed_resets_them():
    # A hidden field still sends its value: K = 8 left over from CLIPure-Diff would be refused for CLIPure-Cos,
    # and so would a bad purification seed.
    _, _, seed, eot, *_ = ev.on_defence("clipure-cos")
    assert eot["value"] == 1 and not eot["visible"] and seed["value"] == 0 and not seed["visible"]
    _, _, seed, eot, *_ = ev.on_defence("clipure-diff")
    assert "value" not in eot and "value" not in seed   # shown again: the user's values are theirs to set


def test_the_defence_note_lists_the_attacks_that_average_and_asks_for_k_above_one():
    from app.attacks import ATTACKS
    note, *_ = ev.on_defence("clipure-diff")
    averaging = [k for k, spec in ATTACKS.items() if spec.eot]
    assert "AutoAttack-custom" in averaging and f"with {', '.join(averaging)};" in note
    assert "K > 1" in note and "10" in note and "APGD*" not in note


@pytest.mark.parametrize("eot, says", [(2.5, "whole number, got 2.5"), (0, "between 1 and 32, got 0"),
                                       (100, "between 1 and 32, got 100"), (-1, "between 1 and 32, got -1")])
def test_a_bad_eot_count_is_refused_in_one_sentence_that_names_it(eot, says):
    with pytest.raises(gr.Error, match=f"EOT count .* must be .*{says}"):
        list(cb.run_demo(*values(backbone="toy-shapes", defence="clipure-diff", eot=eot)))


def test_no_number_field_rounds_or_bounds_what_is_typed():
    # precision=0 rounds 2.5 to 2 without a word; minimum/maximum answer with Gradio's generic sentence.
    from app.ui.layout import build_demo
    demo = build_demo("tiny-random")
    numbers = [b for b in demo.blocks.values() if isinstance(b, gr.Number)]
    assert {b.elem_id for b in numbers} >= {"eps", "steps", "p-steps", "p-seed", "eot"}
    for b in numbers:
        assert (b.precision, b.minimum, b.maximum) == (None, None, None), (b.label, b.precision)
        assert b.preprocess(2.5) == 2.5 and b.preprocess(-1) == -1


def test_purification_seed_and_eot_reach_the_configs_and_sit_last_in_the_form():
    # after them only each defence's own parameters, then the older name of `defence`: old positional calls hold
    own = len(fm.OWN_PARAMS) + len(fm.ALIASES)
    assert fm.FORM[-own - 2:-own] == ("purify_seed", "eot") and fm.FORM.index("precision") == len(fm.FORM) - own - 3
    assert fm.FORM[-1] == "method" and {"ttc_eps", "ttc_tau_thres", "ttc_beta", "jpeg_quality"} <= set(fm.OWN_PARAMS)
    form = fm.Form.of(fm.FORM, values(purify_seed=7, eot=3))
    assert form.purify_config().seed == 7 and form.attack_config().eot == 3


def test_a_defences_own_parameters_and_the_older_name_reach_its_config():
    p = fm.Form.of(fm.FORM, values(defence="ttc", ttc_steps=3, ttc_tau_thres=0.5)).purify_config()
    assert p.defence == "ttc" and p.own().steps == 3 and p.own().tau_thres == 0.5 and p.own().beta == 2.0
    p = fm.Form.of(fm.FORM, values(method="jpeg", jpeg_quality=40)).purify_config()   # `method`, the older name
    assert p.defence == "jpeg" and p.own().quality == 40
    assert fm.Form.of(fm.FORM, values()).purify_config().params is None   # CLIPure: its fields are the form's


def test_clipure_diff_run_plots_the_prior_loss_per_step():
    from app.views.presets import examples_for
    path, names = examples_for(True)[0]
    final = dict(zip(fm.RUN_OUTPUTS, list(cb.run_demo(*values(
        image=path, classnames=names, backbone="toy-shapes", defence="clipure-diff", purify_steps=2, steps=1,
        threat_model="undefended", purify_seed=3)))[-1]))
    r = final["result_state"]
    assert r.purify_config.seed == 3 and r.trajectory.prior_loss is not None
    assert final["cos_plot"] is None                         # not in view after a run: not drawn
    fig = ev.on_plot_tab(r, r.trajectory.steps, "cos_plot")
    assert len(fig.axes) == 2 and "prior" in fig.axes[1].get_title()
    assert len(fig.axes[1].get_lines()[0].get_ydata()) == 3   # T + 1 points
    # On a phone (narrow) the two panels are stacked and the legend goes below: readable at 390 px.
    phone = ev.on_plot_tab(r, 1, "cos_plot", True)
    top, bottom = (ax.get_position() for ax in phone.axes[:2])
    assert top.y0 > bottom.y1 and abs(top.x0 - bottom.x0) < 1e-6              # one above the other
    w, h = phone.get_size_inches()
    assert w <= 5 and h > w and phone.legends and not phone.axes[1].get_legend()
    assert fig.get_size_inches()[0] > 15                                       # desktop: the panel's width
    marker = [t for t in phone.axes[0].texts if t.get_text() == "step 1"]
    assert marker and marker[0].get_ha() == "left"
    last = ev.on_plot_tab(r, 2, "cos_plot", True).axes[0].texts
    assert [t.get_ha() for t in last if t.get_text() == "step 2"] == ["right"]   # not into the legend
    probs = ev.on_plot_tab(r, 1, "prob_plot", True)
    assert probs.get_size_inches()[0] <= 5 and probs.axes[0].get_position().y0 > probs.axes[1].get_position().y1
    assert ev.on_plots_after_run(r, 1, "prob_plot", True)[0].axes              # redrawn for the phone
    # The replay reports what CLIPure-Diff optimises, the prior loss at that step, not the unused blank.
    _, note, *_ = ev.on_replay(r, 1)
    assert f"prior loss **{float(r.trajectory.prior_loss[1, 0]):.4f}**" in note and "blank" not in note
    assert "blank" in ev.on_replay(dict(zip(fm.RUN_OUTPUTS, list(cb.run_demo(*values()))[-1]))["result_state"], 1)[1]


def test_streamed_status_of_clipure_diff_shows_the_prior_loss():
    from app.views.presets import examples_for
    path, names = examples_for(True)[0]
    statuses = [dict(zip(fm.RUN_OUTPUTS, u))["status"] for u in cb.run_demo(*values(
        image=path, classnames=names, backbone="toy-shapes", defence="clipure-diff", purify_steps=2, steps=1,
        threat_model="undefended"))]
    purifying = [s for s in statuses if isinstance(s, str) and "top-1" in s]
    assert purifying and all("prior loss" in s and "blank" not in s for s in purifying)


def test_audit_streams_progress_then_the_checks_table_and_the_sweep():
    import json
    from pathlib import Path
    updates = list(ap.audit_demo(*values(threat_model="official", steps=2)))
    progress = [u[0] for u in updates[:-1] if isinstance(u[0], str)]   # the rest: heartbeats (gr.skip())
    assert all(p.startswith("⏳") for p in progress) and len(progress) >= 2
    status, table, gradient, fig, exported = updates[-1]
    assert status.startswith("**Audit done in")
    assert list(table["check"]) == [f"({k})" for k in "abcdef"]
    assert set(table["result"]) <= {'<span class="flagged">FLAGGED</span>', "ok"}   # FLAGGED in red on the page
    assert exported["visible"] and json.loads(Path(exported["value"]).read_text())["checks"][0]["name"] == "a"
    assert "norm" in gradient and "exactly zero" in gradient
    assert len(fig.axes[0].get_lines()) == 2   # the threat model and adaptive


def test_audit_api_returns_the_audit_as_json_and_refuses_bad_input():
    import json
    *_, out = ap.audit_api(*values(threat_model="official", steps=2))
    json.dumps(out)
    assert {c["name"] for c in out["checks"]} == set("abcdef")
    assert set(out["gradient"]) >= {"norm", "zero_fraction", "cos_to_exact"} and "official" in out["sweep"]
    assert out["attack"]["eot"] == 1 and out["purify"]["defence"] == "clipure-cos" and out["backbone"] == "tiny-random"
    with pytest.raises(gr.Error, match="L-inf eps must be between 0 and 32"):
        list(ap.audit_api(*values(eps=50)))


def test_paper_preset_sets_the_protocol_and_says_what_is_scaled_down():
    from app.evaluate.protocols import PROTOCOLS
    from app.common.limits import LIMITS
    from app.ui import lessons as ls
    out = ls.on_paper("toy-shapes")
    v = dict(zip(ap.PAPER_PRESET_FIELDS, out))
    image, stage = out[len(ap.PAPER_PRESET_FIELDS)], dict(zip(ls.STAGE, out[len(ap.PAPER_PRESET_FIELDS) + 1:]))
    assert image.endswith(".png") and "toy-" in image                       # an example that fits the backbone
    assert "Now press Run" in stage["_lesson_text"] and f"about {ls.PAPER_RUN_S['cpu']} s" in stage["_lesson_text"]
    assert set(v) <= set(fm.FORM)
    assert (v["attack"], v["eps"], v["steps"], v["threat_model"], v["precision"], v["template_set"]) == \
        ("AutoAttack-custom", 4.0, 100, "official", "fp16", "ensemble")
    assert (v["purify_steps"], v["purify_step_size"], v["momentum"], v["norm"], v["grad_scope"]) == (10, 30.0, 0.0, "l2", "batch")
    note = stage["_lesson_text"]
    assert all(u in note for u in PROTOCOLS["paper"].unmatched)
    assert "batches of 2" in note and f"{LIMITS.max_request_seconds:.0f} s" in note and "Attack steps" in note
    assert ap.paper_preset_api()["values"] == ap.paper_preset()


def test_the_audit_takes_the_forms_eot_count_and_names_the_defence():
    from app.views.presets import examples_for
    path, names = examples_for(True)[0]
    diff = values(image=path, classnames=names, backbone="toy-shapes", defence="clipure-diff", threat_model="adaptive",
                  steps=1, purify_steps=2, purify_seed=5, eot=2)
    *_, out = ap.audit_api(*diff)
    assert out["attack"]["eot"] == 2 and (out["purify"]["defence"], out["purify"]["seed"]) == ("clipure-diff", 5)
    assert out["gradient"]["draws"] == 2
    status, _, gradient, fig, _ = list(ap.audit_demo(*diff))[-1]
    assert "CLIPure-Diff" in status and "seed 5" in status and "EOT K=2" in status
    assert "mean of 2 draws" in gradient
    title = fig.get_suptitle().replace("\n", " ")
    assert "CLIPure-Diff" in title and "seed 5" in title and "EOT K=2" in title
    status, *_ = list(ap.audit_demo(*values(threat_model="official", steps=2)))[-1]
    assert "CLIPure-Cos" in status and "seed" not in status and "EOT" not in status
    with pytest.raises(gr.Error, match="EOT count must be 1 here, not 2"):   # CLIPure-Cos draws nothing
        list(ap.audit_demo(*values(threat_model="adaptive", steps=2, eot=2)))


def test_a_bad_upload_then_an_example_leaves_no_stale_status(tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"not an image at all")
    image, status = ev.on_upload(str(bad))
    assert image is None and status.startswith("**Not used:**")

    class Click:   # what gr.SelectData carries for a gallery click
        index = 0
    path, names, status = ev.on_example(Click(), "toy-shapes")
    assert path.endswith(".png") and names and status.startswith("Example loaded") and "Not used" not in status


def test_every_action_that_starts_a_result_opens_the_headline_plot_and_empties_the_rotation_view():
    from app.ui import lessons as ls
    rot, tabs, in_view = ls.headline_in_view()
    assert rot is None and in_view == "prob_plot" and tabs.selected == "prob_plot"
    for k in range(len(ls.LESSONS)):   # every lesson, compare or run, owns those outputs
        assert set(ls.HEADLINE) <= set(ls.lesson_outputs(k))
