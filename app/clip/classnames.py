"""Class names from what a user types: split, cleaned, deduplicated, fitted to the text context."""
from __future__ import annotations

from app.common.errors import InvalidClassNamesError
from app.common.limits import LIMITS, Limits


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


def _check_lengths(text_or_list, limits: Limits) -> None:
    """Refuse an over-long class text before anything is split, collapsed or tokenized."""
    cap = limits.max_class_text_chars
    if isinstance(text_or_list, str):
        total = len(text_or_list)
    else:
        total = 0
        for n in text_or_list or ():          # a list counts one separator per name
            total += len(str(n)) + 1
            if total > cap:
                break
    if total > cap:
        size = f"{total:,} characters long" if isinstance(text_or_list, str) else "too long"
        raise InvalidClassNamesError(f"The class names are {size}, over the {cap:,} character limit.")


def _fit_to_budget(name: str, tokenizer, budget: int) -> str:
    """The longest run of leading words whose tokens fit in budget (else the first word cut to fit).

    Each word is tokenized once: the tokenizers here split on whitespace before BPE, so a word
    prefix costs the sum of its words' tokens. One encode checks that; if a tokenizer breaks the
    assumption, a binary search over word counts (log n encodes) takes over. Linear in the name.
    """
    words = name.split()
    k, used = 0, 0
    for w in words:
        used += len(tokenizer.encode(w))
        if used > budget:
            break
        k += 1
    if k and len(tokenizer.encode(" ".join(words[:k]))) > budget:
        lo, hi = 0, k - 1                        # invariant: words[:lo] fits (or lo == 0)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if len(tokenizer.encode(" ".join(words[:mid]))) <= budget:
                lo = mid
            else:
                hi = mid - 1
        k = lo
    if k:
        return " ".join(words[:k])
    # Not even the first word fits: its longest character prefix that does, by binary search
    # (token counts grow with the prefix; a name is at most max_classname_chars long).
    first = words[0]
    lo, hi = 1, len(first)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(tokenizer.encode(first[:mid])) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return first[:lo]


def parse_classnames(text_or_list, tokenizer=None, context_length: int = 77, templates=None,
                     limits: Limits = LIMITS) -> tuple[list[str], list[str]]:
    """Comma- or newline-separated text (or a list) -> (clean names, warnings).

    Text over limits.max_class_text_chars and names over limits.max_classname_chars are refused
    before any tokenization. Blank and duplicate names are dropped with a warning; names too
    long for the tokenizer context (in the longest template) are cut to fit at a word boundary,
    with a warning. Cost is linear in the text length.
    """
    _check_lengths(text_or_list, limits)
    stripped = _split(text_or_list)
    too_long = [n for n in stripped if len(n) > limits.max_classname_chars]
    if too_long:
        raise InvalidClassNamesError(
            f"The class name {too_long[0][:40]!r}... is {len(too_long[0]):,} characters long, over the "
            f"{limits.max_classname_chars} character limit for one name.")
    names = split_classnames(stripped)
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
                cut = _fit_to_budget(n, tokenizer, budget)
                warnings.append(f"Class name {n[:40]!r}... was cut to {cut!r} to fit the text encoder's context.")
                names[i] = cut
        if len({n.lower() for n in names}) < len(names):
            raise InvalidClassNamesError("Two class names are the same after cutting them to the context length.")
    return names, warnings
