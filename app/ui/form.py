"""The request form: which widget values each endpoint takes, in API order, and the one adapter
from those values to the engine's configs.

Every endpoint takes the fields of FORM it names, in FORM's order, so the positional API and the
page never drift: `Form.of(names, values)` builds the configs; callbacks return {name: value} and
`run_outputs` orders them as RUN_OUTPUTS.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from functools import wraps

import gradio as gr

from app.attacks import AttackConfig
from app.budget import Budget, activate_each, active
from app.errors import CLIPureError
from app.limits import LIMITS
from app.purifiers import PurifyConfig
from app.streaming import in_thread

# The request form, in API order: what the user picked, then the attack, then the purification.
COMMON = ("image", "classnames", "backbone", "template_set")
ATTACK_FIELDS = ("attack", "threat_model", "eps", "steps", "step_size", "seed", "targeted", "target")
PURIFY_FIELDS = ("method", "p_steps", "p_step_size", "momentum", "norm", "grad_scope")
# Appended last, so API calls written before it existed still work (it defaults to fp32).
PRECISION = ("precision",)
# For randomised purifiers (CLIPure-Diff): the purification seed and the attacker's EOT count K.
# Appended after PRECISION for the same reason (they default to 0 and 1).
RANDOMISED = ("p_seed", "eot")
FORM = COMMON + ATTACK_FIELDS + PURIFY_FIELDS + PRECISION + RANDOMISED

# /purify's inputs: no attack; the purification seed appended last.
PURIFY_API = COMMON + PURIFY_FIELDS + PRECISION + ("p_seed",)
# The masking audit's outputs on the page: progress, the checks, the gradient, the eps sweep.
AUDIT_OUTPUTS = ("_audit_status", "_audit_table", "_audit_gradient", "_audit_plot")
AUDIT_COLUMNS = ["check", "what it looks for", "result", "detail"]
# The audit runs about 13 PGD attacks and a Square attack of 10x the steps (app/audit.py).
AUDIT_ATTACKS = 14

# What /run fills, in order; callbacks return {name: value} and `run_outputs` orders them.
RUN_OUTPUTS = ("clean_label", "adv_label", "purified_label", "clean_note", "adv_note", "purified_note",
               "adv_image", "pert_image", "stats", "adv_download", "prob_plot", "cos_plot", "map_plot",
               "json_file", "csv_file", "status", "result_state", "replay", "replay_label", "replay_note")




@dataclass
class Form:
    """The widget values of one request, by FORM name."""
    values: dict

    @classmethod
    def of(cls, names, values) -> "Form":
        if len(names) != len(values):
            raise CLIPureError(f"This endpoint takes {len(names)} values ({', '.join(names)}), got {len(values)}.")
        return cls(dict(zip(names, values)))

    def __getattr__(self, name):
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    def attack_config(self) -> AttackConfig:
        v = self.values
        return AttackConfig(attack=v["attack"], threat_model=v["threat_model"], eps=v["eps"], steps=v["steps"],
                            step_size=v["step_size"] or None, seed=v["seed"], targeted=bool(v["targeted"]),
                            target=(v["target"] or None) if v["targeted"] else None, eot=v.get("eot", 1))

    def purify_config(self) -> PurifyConfig:
        v = self.values
        return PurifyConfig(method=v["method"], steps=v["p_steps"], step_size=v["p_step_size"],
                            momentum=v["momentum"], norm=v["norm"], grad_scope=v["grad_scope"],
                            seed=v.get("p_seed", 0))

    def engine_args(self) -> dict:
        return dict(model=self.backbone, template_set=self.template_set, precision=self.values.get("precision"))


def user_errors(fn):
    """The engine's one-sentence errors become gr.Error; anything else stays a real error.
    Works for plain functions and for generators (streamed endpoints). Each call runs under its
    own budget (app/budget.py): LIMITS.max_request_seconds, and for a stream a stop flag that is
    set when Gradio closes it (cancel, disconnect)."""
    if inspect.isgeneratorfunction(fn):
        @wraps(fn)
        def stream(*args, **kwargs):
            try:
                yield from activate_each(Budget(LIMITS.max_request_seconds), fn(*args, **kwargs))
            except CLIPureError as e:
                raise gr.Error(str(e), print_exception=False) from None
        return stream

    @wraps(fn)
    def call(*args, **kwargs):
        try:
            with active(Budget(LIMITS.max_request_seconds)):
                return fn(*args, **kwargs)
        except CLIPureError as e:
            raise gr.Error(str(e), print_exception=False) from None
    return call


def cancellable(outputs: int = 1):
    """Make a plain endpoint a stream: its work runs in a worker under the request's budget
    (app/streaming.py), and the stream yields a no-op update at every heartbeat, so a cancel or a
    disconnect can close it (Gradio stops a request only between two yields). The last value is
    the endpoint's answer, so API clients see no difference."""
    def wrap(fn):
        @wraps(fn)
        def stream(*values):
            for kind, value in in_thread(lambda report: fn(*values), f"clipure-{fn.__name__}"):
                if kind == "done":
                    yield value
                elif kind == "tick":
                    yield gr.skip() if outputs == 1 else tuple(gr.skip() for _ in range(outputs))
        return stream
    return wrap


def run_outputs(**values) -> tuple:
    """A value for every /run output, in RUN_OUTPUTS order; gr.skip() leaves the rest as they are."""
    assert set(values) <= set(RUN_OUTPUTS), set(values) - set(RUN_OUTPUTS)
    return tuple(values.get(name, gr.skip()) for name in RUN_OUTPUTS)


def progress_text(fraction: float | None, message: str) -> str:
    """The status line beside the button: a text bar, so progress shows where the user clicked."""
    if fraction is None:
        return f"⏳ {message}"
    filled = int(round(20 * fraction))
    return f"⏳ `{'█' * filled}{'░' * (20 - filled)}` {100 * fraction:.0f}% · {message}"
