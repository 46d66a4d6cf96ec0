"""Class-name presets and the example images that fit them (data, no logic)."""
from __future__ import annotations

from pathlib import Path

from app.models import TOY_CLASSNAMES

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "assets" / "examples"

CLASS_PRESETS: dict[str, str] = {
    "CIFAR-10": "airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck",
    "Animals": "cat, dog, horse, cow, sheep, bird, fish, rabbit",
    "Space": "astronaut, rocket, galaxy, moon, satellite, planet, star cluster",
    "Food and drink": "cup of coffee, cup of tea, cake, pizza, salad, soup, sandwich",
    "People and things": "astronaut, photographer with a camera, cat, cup of coffee, rocket, horse",
    "Science images": "retina fundus photograph, galaxies in deep space, cells under a microscope, an x-ray, "
                      "the surface of the moon",
    "Toy shapes (16)": ", ".join(TOY_CLASSNAMES),
    "Toy shapes: red and blue": ", ".join(c for c in TOY_CLASSNAMES if c.split()[0] in ("red", "blue")),
}

# (image file in assets/examples, class-name preset). Photos are for real CLIP weights; the
# toy-shapes images fit the bundled model's vocabulary.
PHOTO_EXAMPLES: list[tuple[str, str]] = [
    ("cat.png", "CIFAR-10"),
    ("horse.png", "Animals"),
    ("astronaut.png", "Space"),
    ("rocket.jpg", "Space"),
    ("hubble.jpg", "Space"),
    ("coffee.png", "Food and drink"),
    ("cameraman.png", "People and things"),
    ("retina.jpg", "Science images"),
]
TOY_EXAMPLES: list[tuple[str, str]] = [
    ("toy-red-circle.png", "Toy shapes (16)"),
    ("toy-blue-square.png", "Toy shapes (16)"),
    ("toy-green-triangle.png", "Toy shapes (16)"),
    ("toy-yellow-cross.png", "Toy shapes (16)"),
    ("toy-green-circle.png", "Toy shapes (16)"),
    ("toy-red-square.png", "Toy shapes (16)"),
    ("toy-blue-cross.png", "Toy shapes: red and blue"),
    ("toy-yellow-triangle.png", "Toy shapes (16)"),
]


def examples_for(toy: bool) -> list[tuple[str, str]]:
    """[(image path, comma-separated class names)]: the toy-shapes ones, or the photos."""
    chosen = TOY_EXAMPLES if toy else PHOTO_EXAMPLES
    return [(str(EXAMPLES_DIR / f), CLASS_PRESETS[p]) for f, p in chosen]


def default_classnames(backbone_name: str) -> str:
    return CLASS_PRESETS["Toy shapes (16)" if backbone_name == "toy-shapes" else "CIFAR-10"]
