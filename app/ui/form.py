"""The request form: one typed Form, the only decoder of what the page and the API send, and the
endpoints' signatures made from it.

Every endpoint takes fields of Form, in Form's order, positionally or by name, with Form's
defaults (`endpoint`); Gradio reads that signature, so an API client calls `/run` with only the
image and the class names. Callbacks return {name: value} and `run_outputs` orders them as
RUN_OUTPUTS.
"""
from __future__ import annotations

import inspect
from dataclasses import MISSING, asdict, dataclass, field, fields, make_dataclass
from functools import wraps

import gradio as gr

from app.attacks import AttackConfig
from app.common.budget import Budget, activate_each, active
from app.common.errors import CLIPureError
from app.common.limits import LIMITS
from app.defences import DEFENCES, PAPER_DEFAULTS, PurifyConfig
from app.flows.request import Request
from app.common.streaming import in_thread


@dataclass
class _Fields:
    """One request's widget values, by name, with the page's defaults. Values are kept as sent: a
    wrong one is the engine's to refuse, in one sentence that names the field. Form adds each
    defence's own parameters (DEFENCE_PARAMS) after these."""
    image: object = None              # a file path (an upload or an example); required by every endpoint
    classnames: str = ""              # comma- or newline-separated; required by every endpoint
    backbone: str | None = None       # a BACKBONES key; None: the default (the one the page starts on)
    template_set: str = "single"      # "single" or "ensemble" (80 prompts a class: slow on a CPU)
    attack: str = "PGD"
    threat_model: str = "undefended"
    eps: float = 4.0                  # L-inf in 1/255, L2 in pixel units
    steps: int = 10                   # attack iterations (queries for Square)
    step_size: float = 0.0            # the attack's step in eps units; 0 = the attack's default (eps/4)
    seed: int = 0
    targeted: bool = False
    target: str | None = None         # a class name; used only when targeted
    defence: str = PAPER_DEFAULTS.defence   # a DEFENCES key
    purify_steps: int = PAPER_DEFAULTS.steps            # purification steps T
    purify_step_size: float = PAPER_DEFAULTS.step_size  # purification step size η
    momentum: float = PAPER_DEFAULTS.momentum        # γ
    norm: str = PAPER_DEFAULTS.norm
    grad_scope: str = PAPER_DEFAULTS.grad_scope
    precision: str = "fp32"
    purify_seed: int = PAPER_DEFAULTS.seed   # a randomised defence's seed (CLIPure-Diff's draws, TTC's start)
    eot: int = 1                       # the attacker's EOT draws per step (randomised defences)


def param_name(defence: str, name: str) -> str:
    """The form field of a defence's own parameter: ttc_eps, jpeg_quality."""
    return f"{defence.replace('-', '_')}_{name}"


# Each defence's own parameters (its spec's config dataclass), as form fields and API parameters:
# field name -> (defence, the config's field). Their defaults are the config's.
DEFENCE_PARAMS = {param_name(key, f.name): (key, f) for key, spec in DEFENCES.items() if spec.config is not None
                  for f in fields(spec.config)}


class _Methods:
    @classmethod
    def of(cls, names, values) -> "Form":
        """From values in the order of `names` (the positional API, the page's inputs)."""
        if len(names) != len(values):
            raise CLIPureError(f"This endpoint takes {len(names)} values ({', '.join(names)}), got {len(values)}.")
        return cls(**dict(zip(names, values)))

    @property
    def values(self) -> dict:
        return asdict(self)

    def attack_config(self) -> AttackConfig:
        return AttackConfig(attack=self.attack, threat_model=self.threat_model, eps=self.eps, steps=self.steps,
                            step_size=self.step_size or None, seed=self.seed, targeted=bool(self.targeted),
                            target=(self.target or None) if self.targeted else None, eot=self.eot)

    def purify_config(self) -> PurifyConfig:
        defence = self.method or self.defence   # `method`: the older name, still accepted
        spec = DEFENCES.get(defence)
        params = None
        if spec is not None and spec.config is not None:   # its own parameters, from their fields
            given = {f.name: getattr(self, param_name(defence, f.name)) for f in fields(spec.config)}
            params = spec.config(**{k: v for k, v in given.items() if v is not None})   # empty: the default
        return PurifyConfig(defence=defence, steps=self.purify_steps, step_size=self.purify_step_size,
                            momentum=self.momentum, norm=self.norm, grad_scope=self.grad_scope,
                            seed=self.purify_seed, params=params)

    def request(self) -> Request:
        """What the user asked for, as the engine's request flows take it."""
        return Request(self.image, self.classnames, self.backbone, self.template_set, self.precision)




Form = make_dataclass(
    "Form", [(name, f.type, field(default=f.default if f.default is not MISSING else None))
             for name, (_, f) in DEFENCE_PARAMS.items()]
    + [("method", "str | None", field(default=None))],   # the older name of `defence`; given, it wins
    bases=(_Fields, _Methods))
Form.__doc__ = _Fields.__doc__

# The request form, in API order: what the user picked, then the attack, then the purification.
COMMON = ("image", "classnames", "backbone", "template_set")
ATTACK_FIELDS = ("attack", "threat_model", "eps", "steps", "step_size", "seed", "targeted", "target")
PURIFY_FIELDS = ("defence", "purify_steps", "purify_step_size", "momentum", "norm", "grad_scope")
# Appended last, so API calls written before it existed still work (it defaults to fp32).
PRECISION = ("precision",)
# For randomised purifiers (CLIPure-Diff): the purification seed and the attacker's EOT count K.
# Appended after PRECISION for the same reason (they default to 0 and 1).
RANDOMISED = ("purify_seed", "eot")
# Then each defence's own parameters, and last the older name of `defence`.
OWN_PARAMS = tuple(DEFENCE_PARAMS)
ALIASES = ("method",)
FORM = tuple(f.name for f in fields(Form))
assert FORM == COMMON + ATTACK_FIELDS + PURIFY_FIELDS + PRECISION + RANDOMISED + OWN_PARAMS + ALIASES
REQUIRED = ("image", "classnames")   # no default in any endpoint's signature

# /purify's inputs: no attack; the purification seed appended last.
PURIFY_API = COMMON + PURIFY_FIELDS + PRECISION + ("purify_seed",) + OWN_PARAMS + ALIASES
# The masking audit's outputs on the page: progress, the checks, the gradient, the eps sweep, its JSON.
AUDIT_OUTPUTS = ("_audit_status", "_audit_table", "_audit_gradient", "_audit_plot", "_audit_json")
AUDIT_COLUMNS = ["check", "what it looks for", "result", "detail"]
# The audit runs about 13 PGD attacks and a Square attack of 10x the steps (app/audit.py).
AUDIT_ATTACKS = 14

# What /run fills, in order; callbacks return {name: value} and `run_outputs` orders them.
RUN_OUTPUTS = ("clean_label", "adv_label", "purified_label", "clean_note", "adv_note", "purified_note",
               "adv_image", "pert_image", "stats", "adv_download", "prob_plot", "cos_plot", "map_plot",
               "json_file", "csv_file", "status", "result_state", "replay", "replay_label", "replay_note",
               "defence_image")   # appended last: the image a pixel-space defence classifies (TTC, JPEG)


def signature(names) -> inspect.Signature:
    """The endpoint signature for fields `names`: image and class names required, the rest Form's defaults."""
    defaults = Form()
    return inspect.Signature([inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                **({} if n in REQUIRED else {"default": getattr(defaults, n)}))
                              for n in names])


def bind(names, args, kwargs) -> Form:
    """The Form of one call, positional (in `names` order) or by keyword; a bad call gets one sentence."""
    try:
        bound = signature(names).bind(*args, **kwargs)
    except TypeError as e:
        raise CLIPureError(f"This endpoint takes {', '.join(names)} (image and classnames required): {e}.") from None
    return Form(**bound.arguments)


def gpu_seconds(names, threat_models: int = 1):
    """ZeroGPU's dynamic duration for an endpoint taking `names`: spaces calls it with the call's own
    arguments (hosting.request_seconds, on their Form). A call that does not bind gets the minimum."""
    from app.ui.hosting import MIN_SECONDS, request_seconds

    def seconds(*args, **kwargs) -> int:
        try:
            return request_seconds(bind(names, args, kwargs), threat_models)
        except CLIPureError:   # refused in the call itself, in one sentence
            return MIN_SECONDS
    return seconds


def endpoint(names):
    """Decorator: fn(form: Form) becomes an endpoint taking the fields `names`, positionally or by name,
    with Form's defaults. Its signature is what Gradio shows and API clients call."""
    sig = signature(names)

    def wrap(fn):
        if inspect.isgeneratorfunction(fn):
            @wraps(fn)
            def stream(*args, **kwargs):
                yield from fn(bind(names, args, kwargs))
            call = stream
        else:
            @wraps(fn)
            def call(*args, **kwargs):
                return fn(bind(names, args, kwargs))
        call.__signature__ = sig   # functools.wraps copies it outwards, through every decorator
        return call
    return wrap


def user_errors(fn):
    """The engine's one-sentence errors become gr.Error; anything else stays a real error.
    Works for plain functions and for generators (streamed endpoints). Each call runs under its
    own budget (app/common/budget.py): LIMITS.max_request_seconds, and for a stream a stop flag that is
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
    (app/common/streaming.py), and the stream yields a no-op update at every heartbeat, so a cancel or a
    disconnect can close it (Gradio stops a request only between two yields). The last value is
    the endpoint's answer, so API clients see no difference."""
    def wrap(fn):
        @wraps(fn)
        def stream(*args, **kwargs):
            for kind, value in in_thread(lambda report: fn(*args, **kwargs), f"clipure-{fn.__name__}"):
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
