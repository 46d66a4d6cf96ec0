"""One typed error family for everything a user can get wrong.

Each message is one sentence meant to be shown as is (the UI turns it into a gr.Error).
"""
from __future__ import annotations

import errno
import math
from contextlib import contextmanager


class CLIPureError(ValueError):
    """Base class: bad input or an unavailable resource, described in one sentence."""


class InvalidImageError(CLIPureError):
    """No image, a file that is not an image, a corrupt one, or one over the size limits."""


class InvalidClassNamesError(CLIPureError):
    """Too few or too many class names, or a target that is not among them."""


class OutOfRangeError(CLIPureError):
    """A numeric setting (eps, steps, step size, ...) outside its allowed range."""


class UnknownNameError(CLIPureError):
    """A model, attack, threat model, template set or purifier name that is not registered."""

    def __init__(self, kind: str, name: str, valid):
        self.kind, self.name, self.valid = kind, name, list(valid)
        super().__init__(f"Unknown {kind} {name!r}; choose one of: {', '.join(map(str, self.valid))}.")


class UnsupportedError(CLIPureError):
    """A valid option combined with something it does not support (e.g. targeted DeepFool)."""


class WeightsUnavailableError(CLIPureError):
    """Pretrained weights could not be fetched or loaded."""

    def __init__(self, model: str, reason: str):
        self.model, self.reason = model, reason
        super().__init__(
            f"Could not load the weights of {model!r} ({reason}); connect to the Hugging Face hub "
            f"once so they are cached (or unset HF_HUB_OFFLINE), or pick the bundled 'toy-shapes' model."
        )


class StorageError(CLIPureError):
    """A folder or file that cannot be written: a full disk, a read-only file system, no permission."""


# The write failures a user can fix (free space, pick another folder), in words. Any other OSError
# (EIO, a bad descriptor) is a real fault and keeps its traceback.
STORAGE_FAULTS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
                  errno.EROFS: "the file system is read-only", errno.EACCES: "permission is denied",
                  errno.EPERM: "permission is denied"}


@contextmanager
def writing(path, remedy: str):
    """Turn a storage fault met inside the block into one StorageError sentence: what could not be
    written (the failing file when the OS names it, else `path`), why, and `remedy`."""
    try:
        yield
    except OSError as e:
        why = STORAGE_FAULTS.get(e.errno)
        if why is None:
            raise
        raise StorageError(f"Could not write {e.filename or path}: {why}; {remedy}.") from None


def _shown(value) -> str:
    """A value as it may appear in a message: repr, cut short (a request can send megabytes)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _number(x) -> str:
    """A bound as people read it: whole numbers in full (2147483647, not 2.14748e+09)."""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def check_range(name: str, value, low, high, unit: str = "") -> float:
    """Return value as a number if low <= value <= high, else raise OutOfRangeError.

    Missing values (None, blank text), text that is not a number, booleans, NaN and infinities
    each get their own sentence. Nothing is ever clamped.
    """
    between = f"between {_number(low)} and {_number(high)}{unit}"
    if value is None or (isinstance(value, str) and not value.strip()):
        raise OutOfRangeError(f"{name} is missing; give a number {between}.")
    if isinstance(value, bool):
        raise OutOfRangeError(f"{name} must be a number {between}, got {value!r}.")
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        raise OutOfRangeError(f"{name} must be a number {between}, got {_shown(value)}.") from None
    if math.isnan(v):
        raise OutOfRangeError(f"{name} must be a number {between}, got NaN.")
    if math.isinf(v):
        raise OutOfRangeError(f"{name} must be a finite number {between}, got {'-' if v < 0 else ''}infinity.")
    if not (low <= v <= high):
        raise OutOfRangeError(f"{name} must be {between}, got {_shown(value)}.")
    return v


def check_int(name: str, value, low: int, high: int) -> int:
    """Like check_range, for whole numbers."""
    v = check_range(name, value, low, high)
    if v != int(v):
        raise OutOfRangeError(f"{name} must be a whole number, got {_shown(value)}.")
    return int(v)
