"""Write tests/fixtures/laion_prior_keys.json: the LAION prior's state-dict keys and shapes.

The LAION prior (zenglishuci/conditioned-prior, vit-l-14/prior_aes_finetune.pth, `ema_model`) is a
dalle2_pytorch DiffusionPrior with the official network settings; this records every key and
shape of that prior as dalle2_pytorch 0.15.4 builds it (clip=None, so no `clip.*` keys), sorted,
for tests/test_layouts.py. Runs where make_prior_reference.py runs (see official_prior.py):

    /somewhere/d2/bin/python scripts/record_prior_keys.py
"""
from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

import dalle2_pytorch
import torch
from official_prior import official_prior

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "laion_prior_keys.json"
LAION_NETWORK = {"dim": 768, "depth": 24, "dim_head": 64, "heads": 32}    # the official DiffusionPriorNetwork


def main() -> None:
    state = official_prior(**LAION_NETWORK).state_dict()
    dtypes = {v.dtype for v in state.values()}
    assert dtypes == {torch.float32}, dtypes          # so the JSON need not say a dtype per key
    meta = {"dalle2_pytorch": dalle2_pytorch.__version__, "rotary_embedding_torch": version("rotary-embedding-torch"),
            "network": LAION_NETWORK, "dtype": "float32"}
    keys = {k: list(state[k].shape) for k in sorted(state)}
    # one line per field and per key, so a diff of the fixture reads key by key
    text = ("{\n" + "".join(f" {json.dumps(k)}: {json.dumps(v)},\n" for k, v in meta.items()) + ' "keys": {\n'
            + ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in keys.items()) + "\n }\n}\n")
    assert json.loads(text) == {**meta, "keys": keys}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(OUT, len(state), "keys,", sum(v.numel() for v in state.values()), "values")


if __name__ == "__main__":
    main()
