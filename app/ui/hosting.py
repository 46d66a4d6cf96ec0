"""Hugging Face Spaces glue: ZeroGPU's @spaces.GPU when the package is there, a no-op otherwise.

`spaces` must be imported before torch; app.py does that first thing, so the import here
only picks up the module that is already loaded. Each engine call asks ZeroGPU for a slot
sized from its own request (`request_seconds`), so a long attack is not cut off by a fixed
duration and a short one does not spend a long slot of the visitor's daily quota.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import inspect

try:
    import spaces
except ImportError:  # not on a Space: run on whatever device the engine picked
    spaces = None

import torch  # noqa: E402  (after spaces, which must come first)

MIN_SECONDS, MAX_SECONDS = 20, 300   # ZeroGPU allows about 5 minutes a call
# Generous GPU seconds per unit of work (ViT-L-14 on an H200 slice is well under these): an encoder
# pass (forward or backward), a prompt to encode, a latent purification step (app/flows/cost.py's unit).
PER_PASS, PER_PROMPT, PER_LATENT_STEP = 0.05, 0.004, 0.02


def request_seconds(form, threat_models: int = 1) -> int:
    """The ZeroGPU duration for one request (a Form: its fields by name, as sent): setup, the prompts
    to encode, and the request's encoder passes and latent steps from the one cost model
    (app/flows/cost.py), the attack counted once per threat model compared; capped at MAX_SECONDS.
    A value the engine will refuse gets the minimum (the refusal is the engine's)."""
    from app.attacks import ATTACKS
    from app.common.errors import CLIPureError
    from app.flows.cost import attack_cost, score_cost
    number = lambda key, default: (float(getattr(form, key)) if isinstance(getattr(form, key, None), (int, float))  # noqa: E731
                                   else default)
    classes = max(len(str(form.classnames or "").replace("\n", ",").split(",")), 2)
    prompts = (classes + 1) * (80 if form.template_set == "ensemble" else 1)
    try:
        purify = form.purify_config()
        work = score_cost(purify) * 2
        attack = getattr(form, "attack", None)
        if isinstance(attack, str) and attack in ATTACKS:
            work = work + attack_cost(attack, int(max(number("steps", 10), 1)), classes, form.threat_model, purify,
                                      int(max(number("eot", 1), 1))) * threat_models
    except (CLIPureError, TypeError, ValueError, KeyError):
        return MIN_SECONDS
    seconds = 10 + prompts * PER_PROMPT + (work.forwards + work.backwards) * PER_PASS + work.latent * PER_LATENT_STEP
    return int(min(max(seconds, MIN_SECONDS), MAX_SECONDS))


def to_host(value, device: str = "cpu"):
    """value with every tensor inside detached and moved to `device`: through tuples, lists,
    dicts and dataclasses (a PipelineResult and what it holds). Anything else is left as it is."""
    if isinstance(value, torch.Tensor):
        return value.detach().to(device)
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(to_host(v, device) for v in value)
    if isinstance(value, dict):
        return {k: to_host(v, device) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        moved = copy.copy(value)   # frozen dataclasses too: set through object.__setattr__
        for f in dataclasses.fields(value):
            object.__setattr__(moved, f.name, to_host(getattr(value, f.name), device))
        return moved
    return value


def _host_outputs(fn):
    """fn, with each value it returns or yields passed through to_host."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def stream(*args, **kwargs):
            for value in fn(*args, **kwargs):
                yield to_host(value)
        return stream

    @functools.wraps(fn)
    def call(*args, **kwargs):
        return to_host(fn(*args, **kwargs))
    return call


def gpu(duration=60):
    """Decorator: request a ZeroGPU slot per call, where available. `duration` is seconds, or a
    function of the call's arguments that returns them (spaces' dynamic duration).

    On ZeroGPU the call runs in a forked worker and what it returns or yields is pickled back to
    the main process, which must not receive CUDA tensors: every value leaves through to_host,
    here as on any other machine. Put the decorator outermost: a gr.Error raised inside reaches
    the visitor as it is, any other exception only as "ZeroGPU worker error"."""
    if spaces is not None:
        return lambda fn: spaces.GPU(duration=duration)(_host_outputs(fn))
    return _host_outputs
