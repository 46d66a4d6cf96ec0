"""The masking audit's panel and endpoint, and the paper's protocol as a preset."""
from __future__ import annotations

import json
import time

import gradio as gr
import pandas as pd

from app.views import report
from app.audit import CHECKS, Audit, audit_image
from app.evaluate.protocols import PROTOCOLS
from app.ui.hosting import gpu
from app.common.limits import LIMITS
from app.views.plots import sweep_figure
from app.ui.server import downloads
from app.common.streaming import in_thread
from app.ui.form import (
    AUDIT_ATTACKS,
    AUDIT_COLUMNS,
    AUDIT_OUTPUTS,
    FORM,
    Form,
    cancellable,
    endpoint,
    gpu_seconds,
    progress_text,
    user_errors,
)


def _audit(form: Form, on_progress=None) -> Audit:
    """The masking audit of the form's image: PGD (L-inf) at the form's eps, steps and seed, under
    its threat model, with its backbone, templates, precision and purification."""
    return audit_image(form.request(), form.threat_model, form.purify_config(), eps=form.eps, steps=form.steps,
                       seed=form.seed, on_progress=on_progress, eot=form.attack_config().eot)


def audit_view(result: Audit, wall_s: float) -> tuple:
    """The audit panel's (status, checks table with FLAGGED in red, gradient line, eps-sweep figure,
    the audit's JSON behind its export button)."""
    # The result column is HTML (the table's datatype): FLAGGED in the page's red (app/ui/page.py).
    rows = [[f"({c.name})", CHECKS[c.name], '<span class="flagged">FLAGGED</span>' if c.flagged else "ok", c.detail]
            for c in result.checks]
    flagged = [c.name for c in result.checks if c.flagged]
    verdict = (f"checks {', '.join(f'({n})' for n in flagged)} flagged: signs of gradient masking" if flagged
               else "no check flagged")
    gradient = report.gradient_text(result.gradient, result.threat_model, result.precision)
    if result.gradient_at_random_start is not None:   # zero at the clean input: where PGD takes its first step
        gradient += "  \nAt PGD's random start: " + report.gradient_text(result.gradient_at_random_start,
                                                                         result.threat_model, result.precision)
    defence = report.defence_text(result.purify, result.attack.eot)
    status = (f"**Audit done in {wall_s:.1f} s:** {verdict} for {defence} under `{result.threat_model}` "
              f"(reference class: {result.image_label}).")
    fig = sweep_figure(result.sweep_eps, result.sweep, result.image_label,
                       f"PGD (L-inf), {result.attack.steps} steps | threat model: {result.threat_model} | "
                       f"{result.backbone} {result.precision} | {defence}")
    def write(folder):
        (folder / "audit.json").write_text(json.dumps(result.to_dict(), indent=1))
        return folder / "audit.json"
    path, missing = downloads(write)   # a full or read-only temp folder: the audit still shows, without its file
    exported = gr.update(value=str(path), visible=True) if path else gr.update(value=None, visible=False)
    return (status + (f" {missing}" if missing else ""), pd.DataFrame(rows, columns=AUDIT_COLUMNS), gradient, fig,
            exported)


def _audit_in_thread(form: Form):
    """The audit in a worker under the request's budget (app/common/streaming.py); yields ("progress",
    (fraction, message)), ("tick", None) and then ("done", Audit)."""
    return in_thread(lambda report: _audit(form, lambda f, m: report((f, m))), "clipure-audit")


@gpu(duration=gpu_seconds(FORM, threat_models=AUDIT_ATTACKS))
@user_errors
@endpoint(FORM)
def audit_demo(form: Form):
    """The audit panel: progress beside the button while the audit runs, then the result."""
    started = time.monotonic()
    skip = tuple(gr.skip() for _ in AUDIT_OUTPUTS[1:])
    yield progress_text(None, "Audit: loading the model and the class names"), *skip
    for kind, value in _audit_in_thread(form):
        if kind == "done":
            yield audit_view(value, time.monotonic() - started)
        elif kind == "tick":   # a heartbeat, so a cancel can close the stream during a long phase
            yield gr.skip(), *skip
        elif kind == "progress":
            yield progress_text(value[0], f"Audit: {value[1]}"), *skip


@gpu(duration=gpu_seconds(FORM, threat_models=AUDIT_ATTACKS))
@user_errors
@cancellable()
@endpoint(FORM)
def audit_api(form: Form) -> dict:
    """The masking audit (checks a-f, the attacker's gradient, the eps sweep) as one JSON object."""
    *_, (_, result) = _audit_in_thread(form)
    return result.to_dict()


def paper_preset() -> dict:
    """The paper's protocol (PROTOCOLS["paper"]) as widget values by FORM name."""
    p = PROTOCOLS["paper"].values
    return dict(attack=p["attacks"][0], threat_model=p["threat_models"][0], eps=p["eps"][0], steps=p["steps"],
                precision=p["precision"], template_set=p["template_set"], method=p["defences"][0],
                purify_steps=p["purify_steps"], purify_step_size=p["purify_step_sizes"][0], momentum=p["momentum"], norm=p["norm"],
                grad_scope=p["grad_scope"], step_size=0, targeted=False)


def paper_preset_note() -> str:
    """What the preset cannot match, and what the public demo scales down."""
    p = PROTOCOLS["paper"]
    unmatched = "".join(f"\n- {u}" for u in p.unmatched)
    return (f"**The paper's protocol** ({p.description}): AutoAttack custom, L-inf 4/255, 100 steps, the official "
            f"threat model, fp16, the 80-template ensemble, T=10 η=30 γ=0 L2 with the batch-coupled norm. The paper "
            f"used `{p.values['backbone']}`; pick it under More settings if this machine has it.\n\n"
            f"**What torchattacks cannot match:**{unmatched}\n\n"
            f"**What this demo scales down:** one image instead of batches of 2 (so the batch norm couples "
            f"nothing), and one request may run at most {LIMITS.max_request_seconds:.0f} s: if it is cut off, "
            f"lower **Attack steps**.")


PAPER_PRESET_FIELDS = tuple(paper_preset())


def paper_preset_api() -> dict:
    """The paper's protocol: the values to send to /run (by FORM name) and what the demo can't match."""
    return {"values": paper_preset(), "form": list(FORM), "unmatched": list(PROTOCOLS["paper"].unmatched),
            "note": paper_preset_note()}
