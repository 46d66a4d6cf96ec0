"""The masking audit's panel and endpoint, and the paper's protocol as a preset."""
from __future__ import annotations

import time

import gradio as gr
import pandas as pd

from app import report
from app.audit import CHECKS, Audit, audit_image
from app.evaluate.protocols import PROTOCOLS
from app.hosting import gpu, request_seconds
from app.limits import LIMITS
from app.plots import sweep_figure
from app.streaming import in_thread
from app.ui.form import (
    AUDIT_ATTACKS,
    AUDIT_COLUMNS,
    FORM,
    Form,
    cancellable,
    progress_text,
    user_errors,
)


def _audit(form: Form, on_progress=None) -> Audit:
    """The masking audit of the form's image: PGD (L-inf) at the form's eps, steps and seed, under
    its threat model, with its backbone, templates, precision and purification."""
    return audit_image(form.image, form.classnames, form.backbone, form.template_set, form.values.get("precision"),
                       form.threat_model, form.purify_config(), form.eps, form.steps, form.seed, on_progress,
                       eot=form.attack_config().eot)


def audit_view(result: Audit, wall_s: float) -> tuple:
    """The audit panel's (status, checks table, gradient line, eps-sweep figure)."""
    rows = [[f"({c.name})", CHECKS[c.name], "FLAGGED" if c.flagged else "ok", c.detail] for c in result.checks]
    flagged = [c.name for c in result.checks if c.flagged]
    verdict = (f"checks {', '.join(f'({n})' for n in flagged)} flagged: signs of gradient masking" if flagged
               else "no check flagged")
    gradient = report.gradient_text(result.gradient, result.threat_model, result.precision)
    defence = report.defence_text(result.purify, result.attack.eot)
    status = (f"**Audit done in {wall_s:.1f} s:** {verdict} for {defence} under `{result.threat_model}` "
              f"(reference class: {result.image_label}).")
    fig = sweep_figure(result.sweep_eps, result.sweep, result.image_label,
                       f"PGD (L-inf) | threat model: {result.threat_model} | {defence} | {result.precision}")
    return status, pd.DataFrame(rows, columns=AUDIT_COLUMNS), gradient, fig


def _audit_in_thread(form: Form):
    """The audit in a worker under the request's budget (app/streaming.py); yields ("progress",
    (fraction, message)), ("tick", None) and then ("done", Audit)."""
    return in_thread(lambda report: _audit(form, lambda f, m: report((f, m))), "clipure-audit")


@gpu(duration=lambda *values: request_seconds(*values, threat_models=AUDIT_ATTACKS))
@user_errors
def audit_demo(*values):
    """The audit panel: progress beside the button while the audit runs, then the result."""
    started = time.monotonic()
    yield progress_text(None, "Audit: loading the model and the class names"), gr.skip(), gr.skip(), gr.skip()
    for kind, value in _audit_in_thread(Form.of(FORM, values)):
        if kind == "done":
            yield audit_view(value, time.monotonic() - started)
        elif kind == "tick":   # a heartbeat, so a cancel can close the stream during a long phase
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip()
        elif kind == "progress":
            yield progress_text(value[0], f"Audit: {value[1]}"), gr.skip(), gr.skip(), gr.skip()


@gpu(duration=lambda *values: request_seconds(*values, threat_models=AUDIT_ATTACKS))
@user_errors
@cancellable()
def audit_api(*values) -> dict:
    """The masking audit (checks a-f, the attacker's gradient, the eps sweep) as one JSON object."""
    *_, (_, result) = _audit_in_thread(Form.of(FORM, values))
    return result.to_dict()


def paper_preset() -> dict:
    """The paper's protocol (PROTOCOLS["paper"]) as widget values by FORM name."""
    p = PROTOCOLS["paper"].values
    return dict(attack=p["attacks"][0], threat_model=p["threat_models"][0], eps=p["eps"][0], steps=p["steps"],
                precision=p["precision"], template_set=p["templates"], method=p["defences"][0],
                p_steps=p["purify_steps"], p_step_size=p["etas"][0], momentum=p["momentum"], norm=p["update_norm"],
                grad_scope=p["grad_scope"], step_size=0, targeted=False)


def paper_preset_note() -> str:
    """What the preset cannot match, and what the public demo scales down."""
    p = PROTOCOLS["paper"]
    unmatched = "".join(f"\n- {u}" for u in p.unmatched)
    return (f"**The paper's protocol** ({p.description}): AutoAttack custom, L-inf 4/255, 100 steps, the official "
            f"threat model, fp16, the 80-template ensemble, T=10 η=30 γ=0 L2 with the batch-coupled norm. The paper "
            f"used `{p.values['model']}`; pick it under More settings if this machine has it.\n\n"
            f"**What torchattacks cannot match:**{unmatched}\n\n"
            f"**What this demo scales down:** one image instead of batches of 2 (so the batch norm couples "
            f"nothing), and one request may run at most {LIMITS.max_request_seconds:.0f} s: if it is cut off, "
            f"lower **Attack steps**.")


def on_paper_preset():
    """The preset button: the widgets in PAPER_PRESET_FIELDS order, then the note."""
    values = paper_preset()
    return (*(values[k] for k in PAPER_PRESET_FIELDS), paper_preset_note())


PAPER_PRESET_FIELDS = tuple(paper_preset())


def paper_preset_api() -> dict:
    """The paper's protocol: the values to send to /run (by FORM name) and what the demo can't match."""
    return {"values": paper_preset(), "form": list(FORM), "unmatched": list(PROTOCOLS["paper"].unmatched),
            "note": paper_preset_note()}
