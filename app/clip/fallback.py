"""The backbone the app starts on: the default one, or the bundled toy-shapes model when its
weights cannot be had (offline, or the hub does not answer), with one notice saying why and how
to get the full model."""
from __future__ import annotations

import os
import socket
from contextlib import contextmanager

from app.clip import models
from app.common.errors import WeightsUnavailableError
from app.clip.models import FALLBACK_BACKBONE, TOY_CLASSNAMES, Backbone, get_spec, load_backbone

PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def _hub_reachable(timeout: float = 2.0) -> bool:
    """Whether the Hugging Face hub answers a TCP connection within `timeout` seconds. True without
    a probe when HF_HUB_OFFLINE is set (the cache decides) or a proxy is configured (a direct
    connection says nothing about the proxy)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes") or \
            any(os.environ.get(v) for v in PROXY_VARIABLES):
        return True
    host = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("//")[-1].split("/")[0]
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


@contextmanager
def _cache_only():
    """huggingface_hub in offline mode for the duration (it reads the flag at call time), then as before."""
    import huggingface_hub.constants
    before = huggingface_hub.constants.HF_HUB_OFFLINE
    huggingface_hub.constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        huggingface_hub.constants.HF_HUB_OFFLINE = before


def load_default(name: str | None = None) -> tuple[Backbone, str | None]:
    """Load the default backbone, or fall back to the bundled toy-shapes model.

    Returns (backbone, notice); notice is None unless the fallback was taken, and then says
    why and how to get the full model. When the hub does not answer at once, the default is
    looked up in the local cache only: huggingface_hub would retry for about 23 s, and a
    classroom should not wait. Later loads (the Backbone menu) try the hub as usual.
    """
    name = name or models.DEFAULT_BACKBONE   # read now: the server sets the one it starts on
    unreachable = get_spec(name).needs_download and not _hub_reachable()
    try:
        if unreachable:
            with _cache_only():
                return load_backbone(name), None
        return load_backbone(name), None
    except WeightsUnavailableError as e:
        reason = ("the Hugging Face hub did not answer within 2 s and they are not in the local cache"
                  if unreachable else e.reason)
        notice = (f"The weights of {name} could not be loaded ({reason}), so the app runs the bundled "
                  f"toy-shapes model (a small CLIP that knows {len(TOY_CLASSNAMES)} coloured shapes). "
                  f"To get the full model, "
                  f"start the app once with access to the Hugging Face hub (and HF_HUB_OFFLINE unset), "
                  f"or pick it in the Backbone menu when the hub is reachable.")
        return load_backbone(FALLBACK_BACKBONE), notice
