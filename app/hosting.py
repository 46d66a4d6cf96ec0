"""Hugging Face Spaces glue: ZeroGPU's @spaces.GPU when the package is there, a no-op otherwise.

`spaces` must be imported before torch; app.py does that first thing, so the import here
only picks up the module that is already loaded.
"""
from __future__ import annotations

try:
    import spaces
except ImportError:  # not on a Space: run on whatever device the engine picked
    spaces = None


def gpu(duration: int = 60):
    """Decorator: request a ZeroGPU slot for `duration` seconds per call, where available."""
    if spaces is not None:
        return spaces.GPU(duration=duration)
    return lambda fn: fn
