"""dalle2_pytorch 0.15.4's DiffusionPrior, built as the official CLIPure-Diff code builds it.

Shared by the scripts that record what that release stores or computes: make_prior_reference.py
(its loss on a tiny net) and record_prior_keys.py (the LAION prior's state-dict keys and shapes).

Needs dalle2_pytorch==0.15.4 in a virtual environment of its own (later releases want
open-clip-torch<3, and no release is a dependency of the app). 0.15.4 is the release that the
official CLIPure_Diff.py's own `decoder_versions` list (taken from LAION's notebook) names, and the
last of 0.11.0 to 0.15.4, the only releases whose state dict (LayerNorm `gamma`/`beta`, schedule
under `noise_scheduler.*`, no null text parameters) the official strict load accepts.
Its imports need, installed with --no-deps: einops einops-exts kornia kornia-rs x-clip
coca-pytorch resize-right rotary-embedding-torch vector-quantize-pytorch einx frozendict loguru
torch-einops-utils ema-pytorch accelerate psutil (plus torch, torchvision, numpy, tqdm, ftfy,
regex, packaging, pillow, pydantic, safetensors, e.g. from the app's venv via a .pth file).

    python -m venv /somewhere/d2 && /somewhere/d2/bin/pip install --no-deps dalle2_pytorch==0.15.4 ...
    /somewhere/d2/bin/python scripts/make_prior_reference.py
"""
from __future__ import annotations

import dalle2_pytorch
from dalle2_pytorch import DiffusionPrior, DiffusionPriorNetwork

RELEASE = "0.15.4"


def official_prior(dim: int, depth: int, dim_head: int, heads: int, **net_options) -> DiffusionPrior:
    """DiffusionPrior(clip=None, cond_drop_prob=0.1 at construction) over the official network's
    settings (normformer, one time / image / text embedding token, 1000 steps, ff_mult 4) at the
    given sizes; net_options go to DiffusionPriorNetwork (e.g. dropouts)."""
    assert dalle2_pytorch.__version__ == RELEASE, dalle2_pytorch.__version__
    net = DiffusionPriorNetwork(dim=dim, depth=depth, dim_head=dim_head, heads=heads, normformer=True,
                                num_time_embeds=1, num_image_embeds=1, num_text_embeds=1, num_timesteps=1000,
                                ff_mult=4, **net_options)
    return DiffusionPrior(net=net, clip=None, image_embed_dim=dim, timesteps=1000, cond_drop_prob=0.1,
                          loss_type="l2", condition_on_text_encodings=True)
