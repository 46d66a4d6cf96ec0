"""Class-name presets and the example images that fit them (data, no logic)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from app.clip.models import TOY_BACKBONE, TOY_CLASSNAMES

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "assets" / "examples"

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
# The first one is fooled by the default attack (PGD-10, L-inf 4/255): the first run shows something.
TOY_EXAMPLES: list[tuple[str, str]] = [
    ("toy-green-circle.png", "Toy shapes (16)"),
    ("toy-red-circle.png", "Toy shapes (16)"),
    ("toy-blue-square.png", "Toy shapes (16)"),
    ("toy-green-triangle.png", "Toy shapes (16)"),
    ("toy-yellow-cross.png", "Toy shapes (16)"),
    ("toy-red-square.png", "Toy shapes (16)"),
    ("toy-blue-cross.png", "Toy shapes: red and blue"),
    ("toy-yellow-triangle.png", "Toy shapes (16)"),
]


TOY_PRESETS = ("Toy shapes (16)", "Toy shapes: red and blue")


def presets_for(backbone_name: str) -> list[str]:
    """The class-name presets that fit a backbone's vocabulary: the toy model knows 16 shapes only."""
    toy = backbone_name == TOY_BACKBONE
    return [k for k in CLASS_PRESETS if (k in TOY_PRESETS) == toy]


@dataclass(frozen=True)
class Lesson:
    """A teacher's lesson: an example, settings (FORM names), the action that makes its point and
    the one view that proves it, shown beside its text (app/ui/lessons.py)."""
    title: str
    text: str                 # what the class should see, beside the result
    action: str               # "run" or "compare"
    proof: str                # "images" (clean, attacked, perturbation), "rotation" or "compare"
    settings: dict = field(default_factory=dict)
    replay_from: int | None = None   # the purification step the rotation view opens at


_TOY = dict(image=str(EXAMPLES_DIR / "toy-green-circle.png"), classnames=CLASS_PRESETS["Toy shapes (16)"],
            backbone=TOY_BACKBONE, template_set="single", attack="PGD", threat_model="undefended", eps=4, steps=10,
            step_size=0, seed=0, targeted=False, target=None, defence="clipure-cos", purify_steps=10,
            purify_step_size=30.0, momentum=0.0, norm="l2", grad_scope="sample", precision="fp32")

LESSONS: list[Lesson] = [
    Lesson("1 · An attack fools CLIP",
           "PGD changes every pixel of this green circle by at most 4/255, too little to see: compare the clean "
           "and the attacked image below. Bare CLIP now answers with another shape. The third image is the "
           "change itself, amplified until it shows.",
           "run", "images", _TOY),
    Lesson("2 · The paper's defaults do nothing (the 2-cycle)",
           "Each CLIPure step turns the embedding towards the blank by atan(η) = 88.1° at η = 30, more than the "
           "angle between them, so step 1 lands on the far side of the blank and step 2 turns it back to where it "
           "started. After T = 10 steps CLIPure is handed the adversarial embedding and is fooled too. Move the "
           "step slider to walk the steps.",
           "run", "rotation", {**_TOY, "image": str(EXAMPLES_DIR / "toy-red-square.png")}, replay_from=1),
    Lesson("3 · Why the paper looks robust, and the adaptive attacker",
           "In the official code's fp16 the gradient through its purification rounds to exactly zero (the "
           "table's exact-zeros column), so the `official` row's attack never moves from PGD's random start and "
           "keeps the clean answer (measured on this toy model). The `adaptive` row differentiates the "
           "purification exactly, at the same precision, and is fooled. (fp16 can zero even the exact gradient "
           "where the clean answer is nearly certain; PGD's random start moves off that saturated point.)",
           "compare", "compare", {**_TOY, "precision": "fp16"}),
    Lesson("4 · Another defence, the same question (TTC)",
           "TTC (test-time counterattacks, CVPR 2025) defends the image: from a small random start it pushes "
           "CLIP's embedding away from where it is. Its own evaluation attacks bare CLIP, the `undefended` row, "
           "which leaves TTC's answer on this red circle alone; `adaptive` (through the counterattack) and `bpda` "
           "(it taken as the identity) change it. On 300 toy images (PGD-10, 4/255, fp32) an adaptive attacker "
           "averaging 10 random starts leaves TTC 14% against bare CLIP's 35%.",
           "compare", "compare", {**_TOY, "image": str(EXAMPLES_DIR / "toy-red-circle.png"), "defence": "ttc"}),
    Lesson("5 · Obfuscated gradients: JPEG looks robust until BPDA",
           "JPEG compression at quality 75 (Guo et al., 2018) washes out a small perturbation: the `undefended` "
           "row fools bare CLIP, not JPEG. Attacked through it (`adaptive`), JPEG looks robust, but only because "
           "its exact gradient is zero (the exact-zeros column: both roundings are flat), so PGD never moves. "
           "BPDA takes JPEG as the identity in the backward pass (Athalye et al., 2018) and breaks it.",
           "compare", "compare", {**_TOY, "image": str(EXAMPLES_DIR / "toy-blue-square.png"), "defence": "jpeg",
                                  "eps": 8}),
]


def examples_for(toy: bool) -> list[tuple[str, str]]:
    """[(image path, comma-separated class names)]: the toy-shapes ones, or the photos."""
    chosen = TOY_EXAMPLES if toy else PHOTO_EXAMPLES
    return [(str(EXAMPLES_DIR / f), CLASS_PRESETS[p]) for f, p in chosen]


def default_classnames(backbone_name: str) -> str:
    return CLASS_PRESETS["Toy shapes (16)" if backbone_name == TOY_BACKBONE else "CIFAR-10"]
