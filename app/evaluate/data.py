"""Evaluation data: the toy world, an ImageFolder tree, or CIFAR from a local torchvision root.

Every dataset is a fixed list of (image id, label) with class names; images load per batch, at
the model's resolution, as pixels in [0,1]. Which images a run uses (--n) is the first n of a
fixed shuffle (seed 0) of the whole set, so it depends on neither --seed nor the sharding.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from PIL import Image

from app.common.errors import CLIPureError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".jpeg"}
CIFAR10_CLASSNAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SELECTION_SEED = 0


@dataclass
class Dataset:
    name: str
    classnames: list[str]
    ids: list                               # image ids (int or str), in evaluation order
    labels: list[int]                       # index into classnames
    load_fn: Callable[[list[int], object], torch.Tensor]   # (positions, backbone) -> (N, 3, S, S) in [0,1]

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, positions: Sequence[int], backbone) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3, S, S) pixels at the backbone's resolution and (N,) labels of the images at these positions."""
        x = self.load_fn(list(positions), backbone)
        return x, torch.tensor([self.labels[i] for i in positions])

    def take(self, n: int | None) -> "Dataset":
        """The first n of a fixed shuffle (all images, in that order, when n is None)."""
        order = torch.randperm(len(self.ids), generator=torch.Generator().manual_seed(SELECTION_SEED)).tolist()
        order = order[:n] if n is not None else order
        if n is not None and n > len(self.ids):
            raise CLIPureError(f"--n {n} asks for more images than the {len(self.ids):,} in {self.name}.")
        base = self.load_fn
        return Dataset(self.name, self.classnames, [self.ids[i] for i in order], [self.labels[i] for i in order],
                       lambda pos, bb: base([order[p] for p in pos], bb))


def _pixels(image: Image.Image, backbone) -> torch.Tensor:
    """The backbone's own resize and centre crop (app.clip.models), pixels in [0,1], (3, S, S)."""
    with image:
        return backbone.pixel_transform(image.convert("RGB"))


def _toy(n: int | None) -> Dataset:
    from app.toy import shapes
    from app.toy.heldout import HELDOUT_SEED, heldout
    count = n or 1000
    cache: dict[int, tuple] = {}

    def images(size):
        if size not in cache:   # generated once per size; 8-bit like the app's images
            cache[size] = heldout(count, size)
        return cache[size]

    labels = shapes.sample(count, seed=HELDOUT_SEED, size=8).labels.tolist()   # labels do not depend on size
    return Dataset("toy", list(shapes.CLASSNAMES), list(range(count)), labels,
                   lambda pos, bb: images(bb.image_size)[0][pos])


def _folder_classnames(folders: list[str], spec: str | None) -> list[str]:
    if spec is None:
        return [f.replace("_", " ") for f in folders]
    if spec == "imagenet":
        from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES
        if len(folders) != len(IMAGENET_CLASSNAMES) or not all(f.startswith("n") for f in folders):
            raise CLIPureError(f"--classnames imagenet needs the 1,000 synset folders (n01440764 ...) of the "
                               f"ImageNet validation set; found {len(folders)} folders.")
        return list(IMAGENET_CLASSNAMES)    # sorted synsets are the standard class order
    if spec == "cifar10":
        if len(folders) != 10:
            raise CLIPureError(f"--classnames cifar10 needs 10 class folders; found {len(folders)}.")
        return list(CIFAR10_CLASSNAMES)
    path = Path(spec)
    if not path.is_file():
        raise CLIPureError(f"--classnames {spec!r} is neither imagenet, cifar10 nor a file.")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if len(names) != len(folders):
        raise CLIPureError(f"{spec} lists {len(names)} class names for {len(folders)} class folders.")
    return names


def _image_folder(root: Path, classnames: str | None) -> Dataset:
    folders = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not folders:
        raise CLIPureError(f"{root} has no class subfolders (expected ImageFolder layout: {root}/CLASS/IMAGE).")
    names = _folder_classnames(folders, classnames)
    files, labels = [], []
    for k, f in enumerate(folders):
        for p in sorted((root / f).iterdir()):
            if p.suffix.lower() in IMAGE_SUFFIXES:
                files.append(p)
                labels.append(k)
    if not files:
        raise CLIPureError(f"{root} has class folders but no images.")

    def load(pos, bb):
        return torch.stack([_pixels(Image.open(files[i]), bb) for i in pos])

    return Dataset(str(root), names, [str(files[i].relative_to(root)) for i in range(len(files))], labels, load)


def _cifar(which: str, root: str | None) -> Dataset:
    if root is None:
        raise CLIPureError(f"--data {which} needs --root, a local torchvision root that holds it (no download).")
    import torchvision
    cls = torchvision.datasets.CIFAR10 if which == "cifar10" else torchvision.datasets.CIFAR100
    try:
        ds = cls(root, train=False, download=False)
    except RuntimeError:
        raise CLIPureError(f"{root} does not hold the {which} test set in torchvision's layout "
                           f"(nothing is downloaded).") from None
    names = [c.replace("_", " ") for c in ds.classes]

    def load(pos, bb):
        return torch.stack([_pixels(Image.fromarray(ds.data[i]), bb) for i in pos])

    return Dataset(which, names, list(range(len(ds))), [int(t) for t in ds.targets], load)


def open_dataset(data: str, n: int | None = None, root: str | None = None, classnames: str | None = None) -> Dataset:
    """--data toy | cifar10 | cifar100 | an ImageFolder path -> the n evaluation images."""
    if data == "toy":
        return _toy(n)            # freshly generated held-out images: exactly n of them
    if data in ("cifar10", "cifar100"):
        return _cifar(data, root).take(n)
    path = Path(data)
    if not path.is_dir():
        raise CLIPureError(f"--data {data!r} is not toy, cifar10, cifar100 or an existing folder.")
    return _image_folder(path, classnames).take(n)
