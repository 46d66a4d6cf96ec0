"""Render the toy-shapes example images in assets/examples (fixed seeds, 128 px).

    python scripts/make_toy_examples.py
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from torchvision.transforms.functional import to_pil_image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from app.toy import shapes  # noqa: E402
from app.views.presets import EXAMPLES_DIR, TOY_EXAMPLES  # noqa: E402


def main() -> None:
    colours, names = list(shapes.COLOURS), list(shapes.SHAPES)
    for k, (fname, _) in enumerate(TOY_EXAMPLES):
        colour, shape = fname.removeprefix("toy-").removesuffix(".png").split("-")
        gen = torch.Generator().manual_seed(10_000 + k)
        img = shapes.render(torch.tensor([colours.index(colour)]), torch.tensor([names.index(shape)]), gen, size=128)
        to_pil_image(img[0]).save(EXAMPLES_DIR / fname)
        print(EXAMPLES_DIR / fname)


if __name__ == "__main__":
    main()
