"""Image intake: whatever a user sends -> a validated RGB PIL image.

Accepts a path, bytes, a PIL image or an HxW(x3/4) uint8 array. Handles grayscale, RGBA
(composited on white), palette, 16-bit, CMYK and EXIF orientation. Pillow's decompression-bomb
guard stays on; our own, lower megapixel limit is checked from the header before decoding.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from app.errors import InvalidImageError
from app.limits import LIMITS, Limits


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
    w, h = img.size
    if w < 1 or h < 1:
        raise InvalidImageError("The image is empty.")
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
