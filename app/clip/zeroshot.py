"""Zero-shot CLIP: template sets, cached text embeddings, the blank target, the classifier.

    t_c    = normalize(mean_k normalize(E_txt(template_k(c))))      class embedding, (C, D)
    b      = mean_k normalize(E_txt(template_k("")))                 blank target, (D,)
    logits = s * cos(E_img(normalize_pixels(x)), t_c),  s = exp(logit_scale)
"""
from __future__ import annotations

import contextlib
import contextvars
import threading
from collections import OrderedDict
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

from app.common import budget
from app.clip.models import Backbone
from app.common.registry import Registry

TEMPLATE_SETS: Registry[tuple[Callable[[str], str], ...]] = Registry("template set", {
    "single": (lambda c: f"a photo of a {c}.",),
    "ensemble": tuple(OPENAI_IMAGENET_TEMPLATES),  # the 80 OpenAI ImageNet templates
})
DEFAULT_TEMPLATE_SET = "ensemble"


def get_templates(template_set: str) -> tuple[Callable[[str], str], ...]:
    return TEMPLATE_SETS[template_set]


# Who hears about text-encoding progress: (names encoded, names) after each chunk. The pipeline
# sets it around a request's preparation, so a cold ensemble shows per-class progress.
TEXT_PROGRESS: contextvars.ContextVar[Callable[[int, int], None] | None] = contextvars.ContextVar(
    "clipure_text_progress", default=None)


@torch.no_grad()
def _encode_prompts(backbone: Backbone, names: Sequence[str], templates, full_precision: bool) -> torch.Tensor:
    """(len(names), D): per name, the mean over templates of the normalised text embeddings.
    full_precision: encode with the text tower in fp32 (class names) or at the backbone's
    precision (the blank), as the official code does."""
    prompts = [t(n) for n in names for t in templates]
    tokens = backbone.tokenizer(prompts).to(backbone.device)
    out = []
    report = TEXT_PROGRESS.get() if full_precision else None   # class names only (the blank is one prompt set)
    with backbone.text_tower(full_precision) as model:
        for chunk in tokens.split(256):  # bounded memory for 100 names x 80 templates
            budget.check()   # a cancelled or overdue request stops between chunks
            out.append(model.encode_text(chunk).float())
            if report is not None:
                report(sum(len(c) for c in out) // len(templates), len(names))
    emb = F.normalize(torch.cat(out), dim=-1)
    return emb.view(len(names), len(templates), -1).mean(dim=1)


@torch.no_grad()
def _encode_blank(backbone: Backbone, templates) -> torch.Tensor:
    """(D,) the blank target b = mean_k normalize(E_txt(template_k(""))), not re-normalised.

    At fp16 and bf16 as the official code computes it: each template's prompt encoded on its own
    (a batch of one), normalised, divided by its norm once more, then the mean. In half precision
    a prompt's embedding depends on its batch (the kernels block a batch of 80 differently from one
    prompt): batched, the toy model's 80-template blank was 1.45e-5 from the official one. In fp32,
    the app's default, the prompts stay one batch (80 encoder passes cost 1.2 to 4 times one batch
    on this CPU; the two differ by 3e-8, fp32 rounding)."""
    if backbone.precision == "fp32":
        return _encode_prompts(backbone, [""], templates, False)[0]
    embs = []
    with backbone.text_tower(False) as model:
        for t in templates:
            budget.check()   # a cancelled or overdue request stops between prompts
            e = F.normalize(model.encode_text(backbone.tokenizer([t("")]).to(backbone.device)).float(), dim=-1)
            embs.append(e / e.norm())
    return torch.stack(embs, dim=1).mean(dim=1)[0]


class TextEmbeddingCache:
    """LRU cache of class embeddings keyed by (model, device, template set, class names).

    A repeated request costs no text-encoder pass; `hits` and `misses` make that testable.
    Safe under several threads (the queue's heavy and light lanes run at once): a key is computed
    by one of them while the others asking for it wait, then hit.
    """

    def __init__(self, max_entries: int = 64):
        self.max_entries = max_entries
        self._store: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._pinned: set[tuple] = set()   # filled at the server's start (app/flows/warm.py); never evicted
        self._pinning = False               # inside `pinned()`: every entry computed or hit is pinned
        self._lock = threading.Lock()
        self._computing: dict[tuple, threading.Lock] = {}   # one lock per key being computed
        self.hits = 0
        self.misses = 0

    def _hit(self, key):
        """The stored value (a hit), or None; call with _lock held."""
        if key not in self._store:
            return None
        self._store.move_to_end(key)
        self.hits += 1
        if self._pinning:
            self._pinned.add(key)
        return self._store[key]

    def _get(self, key, compute):
        with self._lock:
            value = self._hit(key)
            if value is not None:
                return value
            computing = self._computing.setdefault(key, threading.Lock())
        with computing:
            with self._lock:   # another thread computed it while this one waited
                value = self._hit(key)
            if value is not None:
                return value
            try:
                value = compute()
            except BaseException:   # a cancelled request: a thread still waiting computes it itself
                with self._lock:
                    self._computing.pop(key, None)
                raise
            with self._lock:
                self._computing.pop(key, None)
                self.misses += 1
                self._store[key] = value
                if self._pinning:
                    self._pinned.add(key)
                unpinned = [k for k in self._store if k not in self._pinned]
                while len(unpinned) > self.max_entries:
                    del self._store[unpinned.pop(0)]
        return value

    @contextlib.contextmanager
    def pinned(self):
        """Entries computed or looked up inside stay for the life of the process (the warm start)."""
        self._pinning = True
        try:
            yield self
        finally:
            self._pinning = False

    def class_embeddings(self, backbone: Backbone, classnames: Sequence[str], template_set: str) -> torch.Tensor:
        """(C, D) unit class embeddings t_c."""
        templates = get_templates(template_set)
        key = (backbone.name, str(backbone.device), backbone.precision, backbone.pretrained, template_set,
               tuple(classnames))
        return self._get(key, lambda: F.normalize(_encode_prompts(backbone, classnames, templates, True), dim=-1))

    def blank_embedding(self, backbone: Backbone, template_set: str) -> torch.Tensor:
        """(D,) blank target b: the class slot left empty ("a photo of a ."). Not re-normalised."""
        templates = get_templates(template_set)
        key = (backbone.name, str(backbone.device), backbone.precision, backbone.pretrained, template_set, None)
        return self._get(key, lambda: _encode_blank(backbone, templates))


TEXT_CACHE = TextEmbeddingCache()


class ZeroShotClassifier(nn.Module):
    """Differentiable zero-shot CLIP: pixels (N, 3, S, S) in [0,1] -> logits (N, C).

    Normalisation of the pixels happens inside, so attacks work in [0,1] pixel space.
    """

    def __init__(self, backbone: Backbone, class_embeddings: torch.Tensor):
        super().__init__()
        self.clip = backbone.model
        self.register_buffer("mean", torch.tensor(backbone.mean, device=backbone.device).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(backbone.std, device=backbone.device).view(1, 3, 1, 1))
        self.register_buffer("class_embeddings", class_embeddings.float())   # (C, D), unit rows
        self.logit_scale = float(backbone.model.logit_scale.exp())           # s, about 100 for OpenAI
        self.dtype = backbone.dtype

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) in [0,1] -> (N, D) image embedding E_img, float32, not normalised."""
        x = (x - self.mean) / self.std
        return self.clip.encode_image(x.to(self.dtype)).float()

    def logits_from_embedding(self, z: torch.Tensor) -> torch.Tensor:
        """(N, D) -> (N, C): s * cos(z, t_c)."""
        return self.logit_scale * F.normalize(z, dim=-1) @ self.class_embeddings.T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits_from_embedding(self.encode(x))


def build_classifier(backbone: Backbone, classnames: Sequence[str], template_set: str = DEFAULT_TEMPLATE_SET,
                     cache: TextEmbeddingCache = TEXT_CACHE) -> ZeroShotClassifier:
    return ZeroShotClassifier(backbone, cache.class_embeddings(backbone, classnames, template_set)).eval()
