"""Image intake: whatever a user sends -> a validated RGB PIL image.

Accepts a path, bytes, a PIL image or an HxW(x3/4) uint8 array. Handles grayscale, RGBA
(composited on white), palette, 16-bit, CMYK and EXIF orientation. Pillow's decompression-bomb
guard stays on; our own, lower megapixel limit is checked from the header before decoding, and
so is the aspect ratio. check_pixel_budget bounds what resizing to a model's resolution allocates.
"""
from __future__ import annotations

import io
import math
import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from app.common.errors import InvalidImageError
from app.common.limits import LIMITS, Limits


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16-bit and 32-bit greyscale: scale to 8 bits instead of clipping at 255.
        arr = np.asarray(img, dtype=np.float64)
        if img.mode.startswith("I;16") or (img.mode == "I" and arr.max() > 255):
            arr = arr / 257.0
        elif img.mode == "F" and arr.max() <= 1.0:
            arr = arr * 255.0
        img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV, RGBA-on-white -> RGB


def _check_aspect(w: int, h: int, limits: Limits) -> None:
    if max(w, h) > limits.max_aspect_ratio * min(w, h):
        raise InvalidImageError(
            f"The image is {w}x{h} pixels, its long side more than {limits.max_aspect_ratio:g} times its "
            f"short side; crop it closer to a square.")


def resize_bytes(w: int, h: int, image_size: int) -> int:
    """Bytes that the model transform's resize allocates for a w x h RGB image (an upper bound).

    open_clip resizes the SHORT side to image_size (torchvision's rule: the long side becomes
    int(image_size * long / short)), then centre-crops. Pillow resamples in two passes, first
    horizontal to (new_w, h), then vertical to (new_w, new_h), at 4 bytes a pixel, and each pass
    keeps a table of bicubic filter weights (doubles) and bounds per output pixel.
    """
    short, long = min(w, h), max(w, h)
    new_long = int(image_size * long / short)
    new_w, new_h = (new_long, image_size) if w >= h else (image_size, new_long)

    def weights(in_size: int, out_size: int) -> int:
        taps = 2 * math.ceil(2.0 * max(in_size / out_size, 1.0)) + 1   # bicubic support 2, widened to downscale
        return out_size * (taps * 8 + 8)

    return 4 * new_w * (h + new_h) + weights(w, new_w) + weights(h, new_h)


def check_pixel_budget(img: Image.Image, image_size: int, limits: Limits = LIMITS) -> Image.Image:
    """Return img if resizing it to image_size stays within limits.max_preprocess_mb, else raise
    InvalidImageError with one sentence. Call before the model transform: a 1x100000 image would
    otherwise be resized to 224 x 22,400,000 pixels (about 20 GB)."""
    w, h = img.size
    if w < 1 or h < 1:
        raise InvalidImageError("The image is empty.")
    _check_aspect(w, h, limits)
    need = resize_bytes(w, h, image_size)
    if need > limits.max_preprocess_mb * 2**20:
        raise InvalidImageError(
            f"Resizing this {w}x{h} image to {image_size} pixels would need {need / 2**20:,.0f} MB, over the "
            f"{limits.max_preprocess_mb:g} MB preprocessing limit; crop it closer to a square.")
    return img


def load_image(source, limits: Limits = LIMITS) -> Image.Image:
    """Return a validated RGB image, or raise InvalidImageError with one sentence."""
    if source is None or (isinstance(source, (str, bytes)) and len(source) == 0):
        raise InvalidImageError("No image was given; upload an image or pick an example.")
    max_bytes = int(limits.max_file_mb * 1024 * 1024)
    if isinstance(source, np.ndarray):
        if source.ndim not in (2, 3) or source.size == 0:
            raise InvalidImageError(f"An image array must be HxW or HxWxC, got shape {source.shape}.")
        source = Image.fromarray(source.astype(np.uint8) if source.dtype != np.uint8 else source)
    if isinstance(source, Image.Image):
        img = source
    else:
        if isinstance(source, (str, os.PathLike)):
            path = Path(source)
            if not path.is_file():
                raise InvalidImageError(f"The image file {path.name!r} does not exist.")
            if path.stat().st_size > max_bytes:
                raise InvalidImageError(f"The file is larger than the {limits.max_file_mb:g} MB limit.")
            data = path.read_bytes()
        elif isinstance(source, (bytes, bytearray)):
            data = bytes(source)
            if len(data) > max_bytes:
                raise InvalidImageError(f"The file is larger than the {limits.max_file_mb:g} MB limit.")
        else:
            raise InvalidImageError(f"Cannot read an image from a {type(source).__name__}.")
        try:
            img = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise InvalidImageError("The file is not an image that Pillow can read.") from None
        except Image.DecompressionBombError:
            raise InvalidImageError("The image is too large to decode safely (decompression bomb guard).") from None
        except (OSError, SyntaxError, ValueError) as e:   # e.g. an ICC profile or text chunk over Pillow's limit
            raise InvalidImageError(f"The image file is corrupt or its metadata is too large to read "
                                    f"({type(e).__name__}).") from None
    w, h = img.size
    if w < 1 or h < 1:
        raise InvalidImageError("The image is empty.")
    _check_aspect(w, h, limits)
    if w * h > limits.max_megapixels * 1e6:
        raise InvalidImageError(
            f"The image has {w * h / 1e6:.1f} megapixels, over the {limits.max_megapixels:g} megapixel limit.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img.load()
            img = ImageOps.exif_transpose(img)
            return _to_rgb(img)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise InvalidImageError(f"The image file is corrupt or truncated ({type(e).__name__}).") from None


def source_sha256(source) -> str | None:
    """SHA-256 of an image given as a file or bytes (what the user uploaded); None for arrays and
    PIL images, which have no file. Call after load_image accepted the source."""
    if isinstance(source, (str, os.PathLike)):
        return hashlib.sha256(Path(source).read_bytes()).hexdigest()
    if isinstance(source, (bytes, bytearray)):
        return hashlib.sha256(bytes(source)).hexdigest()
    return None
