"""Class names from what a user types: split, cleaned, deduplicated, fitted to the text context."""
from __future__ import annotations

from app.errors import InvalidClassNamesError
from app.limits import LIMITS, Limits


def _split(text_or_list) -> list[str]:
    if text_or_list is None:
        raw = []
    elif isinstance(text_or_list, str):
        raw = text_or_list.replace("\n", ",").split(",")
    else:
        raw = list(text_or_list)
    return [" ".join(str(n).split()) for n in raw]   # collapse inner whitespace


def split_classnames(text_or_list) -> list[str]:
    """Comma- or newline-separated text (or a list) -> names, blanks and case-insensitive
    duplicates dropped, first spelling kept. Never raises (the UI's target menu uses it)."""
    names, seen = [], set()
    for n in _split(text_or_list):
        if n and n.lower() not in seen:
            seen.add(n.lower())
            names.append(n)
    return names


def parse_classnames(text_or_list, tokenizer=None, context_length: int = 77, templates=None,
                     limits: Limits = LIMITS) -> tuple[list[str], list[str]]:
    """Comma- or newline-separated text (or a list) -> (clean names, warnings).

    Blank and duplicate names are dropped with a warning; names too long for the tokenizer
    context (in the longest template) are cut to fit, with a warning.
    """
    stripped = _split(text_or_list)
    names = split_classnames(text_or_list)
    warnings = []
    blanks = sum(1 for n in stripped if not n)
    dups = len(stripped) - blanks - len(names)
    if blanks and len(stripped) > 1:
        warnings.append(f"Ignored {blanks} blank class name{'s' if blanks > 1 else ''}.")
    if dups:
        warnings.append(f"Removed {dups} duplicate class name{'s' if dups > 1 else ''}.")
    if len(names) < limits.min_classes:
        raise InvalidClassNamesError(
            f"Give at least {limits.min_classes} different class names, separated by commas or new lines.")
    if len(names) > limits.max_classes:
        raise InvalidClassNamesError(f"Give at most {limits.max_classes} class names; got {len(names)}.")
    if tokenizer is not None and hasattr(tokenizer, "encode"):
        longest = max(templates or [lambda c: f"a photo of a {c}."], key=lambda t: len(tokenizer.encode(t(""))))
        budget = context_length - 2 - len(tokenizer.encode(longest("")))  # 2 = start and end tokens
        for i, n in enumerate(names):
            if len(tokenizer.encode(n)) > budget:
                words = n.split()
                while len(words) > 1 and len(tokenizer.encode(" ".join(words))) > budget:
                    words.pop()
                cut = " ".join(words)
                while len(tokenizer.encode(cut)) > budget and len(cut) > 1:
                    cut = cut[:-1]
                warnings.append(f"Class name {n[:40]!r}... was cut to {cut!r} to fit the text encoder's context.")
                names[i] = cut
        if len({n.lower() for n in names}) < len(names):
            raise InvalidClassNamesError("Two class names are the same after cutting them to the context length.")
    return names, warnings
