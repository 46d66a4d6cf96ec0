"""Limits that protect a public demo from a single heavy request. All checked on input."""
from __future__ import annotations

import os
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Limits:
    max_file_mb: float = 10.0          # uploaded file size
    max_megapixels: float = 25.0       # decoded image size; Pillow's bomb guard stays on too
    max_aspect_ratio: float = 20.0     # long side / short side; the centre crop keeps only 1/ratio of it
    # What resizing to the model resolution may allocate (Pillow keeps 4 bytes a pixel; the
    # shortest-side resize makes a horizontal and a vertical pass). With the two limits above,
    # an accepted image needs at most 24 MiB at 224 px and 39 MiB at 336 px.
    max_preprocess_mb: float = 64.0    # in MiB
    min_classes: int = 2               # a classifier needs at least two names
    max_classes: int = 100             # text-encoder cost grows with the class count
    max_class_text_chars: int = 10_000  # the whole class text, refused before it is split or tokenized
    max_classname_chars: int = 300     # one name; ~70 tokens of English, about what the 77-token context holds
    max_linf_eps: float = 32.0         # in 1/255 units
    max_l2_eps: float = 10.0           # in pixel units ([0,1] scale, whole image)
    max_attack_steps: int = 200        # iterations (queries for Square)
    max_purify_steps: int = 200
    max_eot: int = 32                  # gradients averaged per attack step (EOT): each costs a forward-backward
    max_step_size: float = 1000.0      # purification step size eta
    # The server (app/ui/server.py, app/common/budget.py):
    max_request_seconds: float = 120.0  # one request's engine time; ZeroGPU gives a call about 60-300 s
    max_json_body_mb: float = 1.0      # an API request body other than an upload (a data: URL cannot pass it)
    files_expire_s: int = 3600         # outputs, uploads and the app's own files are deleted after this
    max_loaded_backbones: int = 2      # least recently used backbones beyond this are dropped from memory

    @classmethod
    def from_env(cls) -> "Limits":
        """Override any field with CLIPURE_<FIELD> (e.g. CLIPURE_MAX_ATTACK_STEPS=500)."""
        kw = {}
        for f in fields(cls):
            raw = os.environ.get(f"CLIPURE_{f.name.upper()}")
            if raw is not None:
                kw[f.name] = type(f.default)(raw)
        return cls(**kw)


LIMITS = Limits.from_env()
