"""Bad input gets its typed error; odd but valid images are converted correctly."""
import io
import re

import numpy as np
import pytest
from PIL import Image

from app.attacks import AttackConfig
from app.clip.classnames import parse_classnames
from app.common.errors import (
    CLIPureError,
    InvalidClassNamesError,
    InvalidImageError,
    UnknownNameError,
)
from app.clip.images import load_image
from app.common.limits import Limits
from app.flows.pipeline import run_pipeline
from app.flows.request import Request, prepare
from app.defences import PurifyConfig


def png_bytes(img, fmt="PNG", **kw):
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("source, match", [
    (None, "No image"),
    (b"", "No image"),
    (b"this is not an image at all", "not an image"),
    ("/definitely/not/here.png", "does not exist"),
    (12345, "Cannot read"),
])
def test_missing_or_non_images(source, match):
    with pytest.raises(InvalidImageError, match=match):
        load_image(source)


def test_truncated_file():
    data = png_bytes(Image.fromarray(np.random.RandomState(0).randint(0, 255, (64, 64, 3), dtype=np.uint8)))
    with pytest.raises(InvalidImageError, match="corrupt or truncated"):
        load_image(data[: len(data) // 2])


def test_pixel_limit_and_file_size_limit(tmp_path):
    big = Image.new("RGB", (6000, 5000))   # 30 MP, under Pillow's own guard, over ours
    with pytest.raises(InvalidImageError, match="megapixel limit"):
        load_image(png_bytes(big))
    with pytest.raises(InvalidImageError, match="MB limit"):
        load_image(b"\0" * 2048, Limits(max_file_mb=0.001))
    p = tmp_path / "a.png"
    p.write_bytes(b"\0" * 2048)
    with pytest.raises(InvalidImageError, match="MB limit"):
        load_image(p, Limits(max_file_mb=0.001))


def test_decompression_bomb_header_is_refused_before_decoding():
    # A tiny file whose header claims 20000 x 20000 pixels.
    bomb = png_bytes(Image.new("1", (20000, 20000)))
    assert len(bomb) < 200_000
    with pytest.raises(InvalidImageError, match="too large to decode safely"):
        load_image(bomb)       # Pillow's own guard, still on
    claims_30mp = png_bytes(Image.new("1", (6000, 5000)))
    with pytest.raises(InvalidImageError, match="30.0 megapixels"):
        load_image(claims_30mp)  # ours, from the header


def test_modes_convert_to_rgb():
    grey = Image.new("L", (4, 4), 128)
    assert load_image(png_bytes(grey)).getpixel((0, 0)) == (128, 128, 128)
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))        # fully transparent red -> white
    assert load_image(png_bytes(rgba)).getpixel((0, 0)) == (255, 255, 255)
    half = Image.new("RGBA", (4, 4), (0, 0, 0, 128))        # half-transparent black -> mid grey
    assert abs(load_image(half).getpixel((0, 0))[0] - 127) <= 1
    pal = Image.new("P", (4, 4))
    pal.putpalette([0, 0, 255] * 256)
    assert load_image(png_bytes(pal)).getpixel((0, 0)) == (0, 0, 255)
    deep = Image.fromarray(np.full((4, 4), 65535 // 2, dtype=np.uint16))  # 16-bit mid grey
    assert abs(load_image(png_bytes(deep)).getpixel((0, 0))[0] - 127) <= 1
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))      # pure red in CMYK
    r, g, b = load_image(png_bytes(cmyk, "JPEG", quality=100)).getpixel((1, 1))
    assert r > 200 and g < 60 and b < 60


def test_exif_rotation_is_applied():
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 20, 20))               # left half white
    exif = Image.Exif()
    exif[0x0112] = 6                                          # rotate 90 degrees clockwise to view
    out = load_image(png_bytes(img, "JPEG", exif=exif.tobytes(), quality=95))
    assert out.size == (20, 40)
    assert out.getpixel((10, 5))[0] > 200 and out.getpixel((10, 35))[0] < 50


def test_array_and_pil_inputs():
    arr = np.zeros((8, 9, 3), dtype=np.uint8)
    assert load_image(arr).size == (9, 8)
    with pytest.raises(InvalidImageError, match="shape"):
        load_image(np.zeros((2, 2, 2, 2)))


def test_class_name_parsing_and_warnings(tiny):
    names, warns = parse_classnames("cat, dog,\n\n Cat , dog ,  bird", tiny.tokenizer, tiny.context_length)
    assert names == ["cat", "dog", "bird"]
    assert any("blank" in w for w in warns) and any("2 duplicate" in w for w in warns)
    long = "very " * 40 + "long name"
    names, warns = parse_classnames(["cat", long], tiny.tokenizer, tiny.context_length)
    assert len(tiny.tokenizer.encode(f"a photo of a {names[1]}.")) + 2 <= tiny.context_length
    assert names[1].startswith("very") and any("was cut" in w for w in warns)


@pytest.mark.parametrize("text, match", [
    ("cat", "at least 2"),
    ("cat, cat, CAT", "at least 2"),
    (", ,\n", "at least 2"),
    (",".join(f"class {i}" for i in range(101)), "at most 100"),
])
def test_class_count_limits(text, match):
    with pytest.raises(InvalidClassNamesError, match=match):
        parse_classnames(text)


def test_unknown_names_list_the_valid_ones(noise_image):
    with pytest.raises(UnknownNameError, match="tiny-random") as e:
        prepare(Request(noise_image, "a, b", "ViT-Z-99"))
    assert "toy-shapes" in str(e.value)
    with pytest.raises(UnknownNameError, match="single, ensemble"):
        prepare(Request(noise_image, "a, b", "tiny-random", "many"))


@pytest.mark.parametrize("bad", [
    dict(image=b"not an image"),
    dict(image=None),
    dict(classnames="cat"),
    dict(backbone="ViT-Q-1"),
    dict(template_set="many"),
    dict(attack=AttackConfig(attack="PGX")),
    dict(attack=AttackConfig(eps=99)),
    dict(attack=AttackConfig(steps=None)),
    dict(attack=AttackConfig(targeted=True, target="zebra")),
    dict(purify=PurifyConfig(steps=-1)),
    dict(purify=PurifyConfig(norm="l3")),
    dict(purify=PurifyConfig(momentum=float("nan"))),
])
def test_every_error_is_one_sentence(noise_image, bad):
    """Bad input through the engine's front door gives one typed sentence, nothing more."""
    kw = dict(image=noise_image, classnames=["cat", "dog", "car"], attack=AttackConfig(steps=1),
              purify=PurifyConfig(), backbone="tiny-random", template_set="single", **{})
    kw.update(bad)
    with pytest.raises(CLIPureError) as e:
        run_pipeline(kw.pop("image"), kw.pop("classnames"), **kw)
    msg = str(e.value)
    assert isinstance(e.value, ValueError) and msg.endswith(".") and "\n" not in msg
    assert not re.search(r"[.!?] [A-Z]", msg), msg        # no second sentence
