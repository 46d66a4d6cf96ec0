"""Engine-side hardening for a public Space (issue 12): input caps that hold before any expensive
work, linear-time class names, a pixel budget before the resize, one sentence for bad numbers."""
import io
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.clip.classnames import parse_classnames
from app.common.errors import (
    InvalidClassNamesError,
    InvalidImageError,
    OutOfRangeError,
    check_int,
    check_range,
)
from app.clip.images import check_pixel_budget, load_image, resize_bytes
from app.common.limits import LIMITS, Limits

NO_CAPS = Limits(max_class_text_chars=10**9, max_classname_chars=10**9)


class CountingTokenizer:
    """Wraps a tokenizer and counts the characters it is asked to encode."""

    def __init__(self, inner):
        self.inner, self.chars, self.calls = inner, 0, 0

    def encode(self, text):
        self.chars += len(text)
        self.calls += 1
        return self.inner.encode(text)


def one_sentence(err) -> bool:
    text = str(err)
    return text.endswith(".") and "\n" not in text and len(text) < 200


def old_cut(name, tokenizer, budget):
    """The pre-issue-12 truncation, kept as the reference: drop the last word and re-tokenize
    until the name fits, then drop characters."""
    words = name.split()
    while len(words) > 1 and len(tokenizer.encode(" ".join(words))) > budget:
        words.pop()
    cut = " ".join(words)
    while len(tokenizer.encode(cut)) > budget and len(cut) > 1:
        cut = cut[:-1]
    return cut


# --- class names ---------------------------------------------------------------------------

def test_class_text_over_the_cap_is_refused_before_tokenizing(tiny):
    tok = CountingTokenizer(tiny.tokenizer)
    text = "cat, " + " ".join(["word"] * 3000)              # 15,004 characters
    with pytest.raises(InvalidClassNamesError, match="10,000 character limit") as e:
        parse_classnames(text, tok, tiny.context_length)
    assert tok.calls == 0 and one_sentence(e.value)
    with pytest.raises(InvalidClassNamesError, match="character limit"):
        parse_classnames(["cat", "x" * 20_000], tok, tiny.context_length)   # a list counts too
    assert tok.calls == 0


def test_one_name_over_the_cap_is_refused_before_tokenizing(tiny):
    tok = CountingTokenizer(tiny.tokenizer)
    long_name = "very " * 100                                # 500 characters, 1 name
    with pytest.raises(InvalidClassNamesError, match="300 character limit for one name") as e:
        parse_classnames(f"cat, {long_name}", tok, tiny.context_length)
    assert tok.calls == 0 and one_sentence(e.value)
    # at the caps exactly: accepted
    names, _ = parse_classnames(["cat", "a" * LIMITS.max_classname_chars], tiny.tokenizer, tiny.context_length)
    assert names[0] == "cat"


def test_truncation_is_linear_in_the_text(tiny):
    """3,000 one-token words (caps lifted): each word is tokenized about once, not once per
    dropped word (the old loop encoded ~4.5 million words for this text)."""
    tok = CountingTokenizer(tiny.tokenizer)
    text = "cat, " + " ".join(["word"] * 3000)
    names, warns = parse_classnames(text, tok, tiny.context_length, limits=NO_CAPS)
    assert tok.chars < 4 * len(text), tok.chars
    assert any("was cut" in w for w in warns)
    assert len(tiny.tokenizer.encode(f"a photo of a {names[1]}.")) + 2 <= tiny.context_length


@pytest.mark.parametrize("name", [
    "very " * 40 + "long name",                              # the case tests/test_inputs.py uses
    "golden retriever puppy playing in the snow on a sunny winter morning near the lake " * 2,
    "t-shirt, with stripes".replace(",", ";") + " and dots" * 20,
    "Königspinguin auf einer Eisscholle im südlichen Polarmeer bei Sonnenuntergang " * 2,
    "a" * 250,                                               # one word too long for the context
    "short " + "b" * 250,                                    # second word does not fit at all
    "crème brûlée",                                          # fits: left alone
])
def test_one_pass_truncation_equals_the_old_result(tiny, name):
    templates = [lambda c: f"a photo of a {c}."]
    budget = tiny.context_length - 2 - len(tiny.tokenizer.encode(templates[0]("")))
    names, warns = parse_classnames(["cat", name], tiny.tokenizer, tiny.context_length, templates)
    expected = " ".join(name.split())
    if len(tiny.tokenizer.encode(expected)) > budget:
        expected = old_cut(expected, tiny.tokenizer, budget)
        assert any("was cut" in w for w in warns)
    else:
        assert not warns
    assert names[1] == expected
    assert len(tiny.tokenizer.encode(templates[0](names[1]))) + 2 <= tiny.context_length


def test_normal_class_lists_are_unchanged(tiny):
    names, warns = parse_classnames("cat, dog,\n\n Cat , dog ,  bird", tiny.tokenizer, tiny.context_length)
    assert names == ["cat", "dog", "bird"] and len(warns) == 2


# --- images --------------------------------------------------------------------------------

def png(w, h) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((h, w, 3), 200, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("w, h", [(1, 100_000), (100_000, 1), (10, 201)])
def test_thin_images_are_refused_from_the_header(w, h):
    with pytest.raises(InvalidImageError, match="crop it closer to a square") as e:
        load_image(png(w, h))
    assert one_sentence(e.value)


def test_to_pixels_bounds_images_that_skip_load_image(tiny):
    with pytest.raises(InvalidImageError, match="crop it closer to a square"):
        tiny.to_pixels(Image.new("RGB", (1, 100_000)))
    x = tiny.to_pixels(Image.new("RGB", (20, 400)))          # 20:1 is allowed
    assert tuple(x.shape) == (1, 3, tiny.image_size, tiny.image_size)


def test_budget_refuses_what_the_aspect_limit_lets_through():
    img = Image.new("RGB", (1, 100_000))
    with pytest.raises(InvalidImageError, match="MB preprocessing limit") as e:
        check_pixel_budget(img, 224, Limits(max_aspect_ratio=1e9))
    assert one_sentence(e.value) and "would need 20,251 MB" in str(e.value)


@pytest.mark.parametrize("size", [224, 336])
def test_no_accepted_image_exceeds_the_budget(size):
    """Scan shapes at the megapixel and aspect limits, both orientations and small images."""
    worst = 0
    for ratio in np.linspace(1, LIMITS.max_aspect_ratio, 77):
        for area in (LIMITS.max_megapixels * 1e6, 1e6, 5e4, 400):
            short = max(1, int(math.sqrt(area / ratio)))
            long = int(short * ratio)
            worst = max(worst, resize_bytes(long, short, size), resize_bytes(short, long, size))
    assert worst <= LIMITS.max_preprocess_mb * 2**20, worst / 2**20


def kib(key: str) -> int:
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key))


def peak_mib(fn) -> float:
    """Peak RSS above the start (MiB) while fn runs; Linux resets the peak via clear_refs."""
    Path("/proc/self/clear_refs").write_text("5")
    base = kib("VmRSS")
    fn()
    return (kib("VmHWM") - base) / 1024


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc to reset the peak RSS")
def test_thin_image_peak_memory_stays_under_the_budget(tiny):
    """1x100000 used to make the tiny model's resize allocate ~570 MiB (~20 GB at 224 px)."""
    thin = png(1, 100_000)

    def refused():
        with pytest.raises(InvalidImageError):
            tiny.to_pixels(load_image(thin))

    def refused_without_load_image():
        with pytest.raises(InvalidImageError):
            tiny.to_pixels(Image.frombytes("RGB", (1, 100_000), b"\xc8" * 300_000))

    assert peak_mib(refused) < LIMITS.max_preprocess_mb
    assert peak_mib(refused_without_load_image) < LIMITS.max_preprocess_mb
    at_the_limit = png(20, 400)                              # the thinnest accepted shape
    assert peak_mib(lambda: tiny.to_pixels(load_image(at_the_limit))) < LIMITS.max_preprocess_mb


# --- numbers -------------------------------------------------------------------------------

@pytest.mark.parametrize("value, match", [
    (None, "is missing"),
    ("", "is missing"),
    ("   ", "is missing"),
    ("abc", "must be a number between 1 and 200, got 'abc'"),
    (float("nan"), "got NaN"),
    ("nan", "got NaN"),
    (float("inf"), "finite number"),
    ("-inf", "finite number"),
    (True, "must be a number"),
    ([3], "must be a number"),
    ("9" * 500, "finite number"),                           # overflows float: infinity
    ("x" * 10_000, r"got 'x+\.\.\."),                        # the value is cut in the message
    (201, "between 1 and 200, got 201"),
    (2.5, "whole number"),
])
def test_bad_numbers_get_one_sentence(value, match):
    with pytest.raises(OutOfRangeError, match=match) as e:
        check_int("Attack steps", value, 1, 200)
    assert one_sentence(e.value) and str(e.value).startswith("Attack steps")


def test_numbers_are_never_clamped():
    assert check_range("L-inf eps", "4", 0, 32) == 4.0
    assert check_int("Attack steps", 200.0, 1, 200) == 200
    with pytest.raises(OutOfRangeError, match="L-inf eps is missing; give a number between 0 and 32 \\(in 1/255\\)"):
        check_range("L-inf eps", None, 0, 32, " (in 1/255)")
    for bad in (-1e-9, 32.000001):
        with pytest.raises(OutOfRangeError):
            check_range("L-inf eps", bad, 0, 32)


def test_bounds_are_written_as_people_read_them():
    from app.common.errors import check_int, check_range
    with pytest.raises(OutOfRangeError, match=r"between 0 and 2147483647, got -1\.$"):
        check_int("The purification seed", -1, 0, 2**31 - 1)
    with pytest.raises(OutOfRangeError, match=r"between 0\.001 and 1000, got 5000\.$"):
        check_range("The step size", 5000, 0.001, 1000.0)
