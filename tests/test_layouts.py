"""Every registry entry that needs a download, in its real file layout, offline.

Each test writes, in a temporary HF_HOME, the files that open_clip 3.3 and huggingface_hub resolve
for one entry, with random weights at the real shapes:

    $HF_HOME/hub/models--ORG--NAME/refs/main                     <rev>
    $HF_HOME/hub/models--ORG--NAME/snapshots/<rev>/FILE

and loads the entry with the app's own loader in a fresh Python process (HF_HOME there,
HF_HUB_OFFLINE=1). huggingface_hub reads HF_HOME once, at import, so a new process is how to point
it elsewhere with nothing patched. The process prints one JSON line, which the test checks.
"""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import open_clip
import pytest
import torch
from open_clip.constants import (HF_CONFIG_NAME, HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME, OPENAI_DATASET_MEAN,
                                 OPENAI_DATASET_STD)
from safetensors.torch import save_file

from app.common.errors import WeightsUnavailableError
from app.clip.models import BACKBONES
from app.defences import priors
from app.defences.prior import LAION_VIT_L_14, DiffusionPrior

ROOT = Path(__file__).resolve().parents[1]
REVISION = "0123456789abcdef0123456789abcdef01234567"    # any 40 hex digits: a commit hash
PRIOR_KEYS = Path(__file__).parent / "fixtures" / "laion_prior_keys.json"


def hub_file(home: Path, repo: str, filename: str) -> Path:
    """The path huggingface_hub reads `filename` of model `repo` from (revision main), folders made."""
    folder = home / "hub" / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(REVISION)
    path = folder / "snapshots" / REVISION / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def random_clip(arch: str) -> dict[str, torch.Tensor]:
    """A randomly initialised open_clip `arch`'s state dict (seed 1: the app builds its random models
    from seed 0, so a match below is the file's weights, not a coincidence)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = open_clip.create_model(arch, pretrained=None)
    # own contiguous copies: safetensors refuses entries that share storage
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def save_weights(path: Path, state: dict[str, torch.Tensor]) -> None:
    save_file(state, str(path)) if path.suffix == ".safetensors" else torch.save(state, path)


def run_offline(home: Path, code: str, *args: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE")}
    env.update(HF_HOME=str(home), HF_HUB_OFFLINE="1", CLIPURE_DEVICE="cpu", CLIPURE_PRECISION="fp32")
    done = subprocess.run([sys.executable, "-c", PREAMBLE + code, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# Run in the fresh process: `written` reads back the state dict the test wrote.
PREAMBLE = """
import json, sys
import torch

def written(path, entry=None):
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return state[entry] if entry else state
"""

LOAD_BACKBONE = """
import numpy as np
from PIL import Image
from app.clip.models import load_backbone
from app.clip.zeroshot import build_classifier

name, weights = sys.argv[1:3]
bb = load_backbone(name)
state = bb.model.state_dict()
file = written(weights)
same = sum(torch.equal(v, file[k]) for k, v in state.items())
classes = ["cat", "dog", "car"]
image = Image.fromarray((np.random.RandomState(0).rand(300, 260, 3) * 255).astype(np.uint8))
logits = build_classifier(bb, classes, "single")(bb.to_pixels(image))          # (1, 3)
print(json.dumps({"name": bb.name, "pretrained": bb.pretrained, "same": same, "keys": len(state),
                  "activation": type(bb.model.visual.transformer.resblocks[0].mlp.gelu).__name__,
                  "mean": bb.mean, "std": bb.std, "size": bb.image_size,
                  "logits": logits[0].tolist(), "label": classes[int(logits.argmax())]}))
"""


def check_loaded(out: dict, name: str) -> None:
    """The requested entry with the file's weights (no fallback, no random init), classifying."""
    assert out["name"] == name and out["pretrained"], out
    assert out["same"] == out["keys"], f"{out['keys'] - out['same']} weights differ from the file"
    assert out["mean"] == list(OPENAI_DATASET_MEAN) and out["std"] == list(OPENAI_DATASET_STD)
    assert out["size"] == 224
    assert len(out["logits"]) == 3 and all(map(math.isfinite, out["logits"])) and out["label"]


# OpenAI entries: open_clip's pretrained table sends `openai` to a timm repository (hf_hub
# "ORG/NAME/", no file name), where it asks for open_clip_model.safetensors first and
# open_clip_pytorch_model.bin only when that is missing. Weights are open_clip's own state dict.
# Each entry takes 15-50 s (a fresh process, the weights written and read back): the default run
# keeps one B-32 entry of each layout (here the registry's default, below FARE4-B-32); the others
# are `slow`.
OPENAI = [
    pytest.param("ViT-B-32-quickgelu/openai", "timm/vit_base_patch32_clip_224.openai", id="B-32"),
    pytest.param("ViT-B-16-quickgelu/openai", "timm/vit_base_patch16_clip_224.openai", id="B-16",
                 marks=pytest.mark.slow),
    pytest.param("ViT-L-14-quickgelu/openai", "timm/vit_large_patch14_clip_224.openai", id="L-14",
                 marks=pytest.mark.slow),
]


@pytest.mark.parametrize("name,repo", OPENAI)
def test_openai_backbone_loads_from_its_hub_cache_layout(tmp_path, name, repo):
    arch = BACKBONES[name].arch
    assert open_clip.get_pretrained_cfg(arch, "openai")["hf_hub"] == repo + "/"
    weights = hub_file(tmp_path, repo, HF_SAFE_WEIGHTS_NAME)
    save_weights(weights, random_clip(arch))
    out = run_offline(tmp_path, LOAD_BACKBONE, name, str(weights))
    check_loaded(out, name)
    assert out["activation"] == "QuickGELU"       # OpenAI weights were trained with it


# hf-hub: entries: open_clip reads open_clip_config.json ({"model_cfg", "preprocess_cfg"}) and then
# the repository's default weights, open_clip_model.safetensors, else open_clip_pytorch_model.bin.
# The config is what open_clip's push_to_hf_hub writes: model_cfg the architecture's built-in config,
# preprocess_cfg the model's mean and std (OpenAI's; also open_clip's default when it is absent).
# The weights here are the .bin, so the fall-back from the missing .safetensors is exercised too.
CHS20 = [
    pytest.param("hf-hub:chs20/FARE4-ViT-B-32-laion2B-s34B-b79K", "ViT-B-32", id="FARE4-B-32"),
    pytest.param("hf-hub:chs20/fare2-clip", "ViT-L-14", id="fare2-L-14", marks=pytest.mark.slow),
    pytest.param("hf-hub:chs20/tecoa4-clip", "ViT-L-14", id="tecoa4-L-14", marks=pytest.mark.slow),
]


def write_hf_hub_config(home: Path, repo: str, arch: str) -> None:
    # model_cfg: a copy of open_clip's own model_configs/ARCH.json
    config = {"model_cfg": open_clip.get_model_config(arch),
              "preprocess_cfg": {"mean": list(OPENAI_DATASET_MEAN), "std": list(OPENAI_DATASET_STD)}}
    hub_file(home, repo, HF_CONFIG_NAME).write_text(json.dumps(config, indent=2))


@pytest.mark.parametrize("name,arch", CHS20)
def test_hf_hub_backbone_loads_from_its_hub_cache_layout(tmp_path, name, arch):
    repo = name.removeprefix("hf-hub:")
    write_hf_hub_config(tmp_path, repo, arch)
    weights = hub_file(tmp_path, repo, HF_WEIGHTS_NAME)
    save_weights(weights, random_clip(arch))
    check_loaded(run_offline(tmp_path, LOAD_BACKBONE, name, str(weights)), name)


LOAD_REFUSED = """
from app.clip.models import load_backbone
try:
    bb = load_backbone(sys.argv[1])
    print(json.dumps({"loaded": bb.name, "pretrained": bb.pretrained}))
except Exception as e:
    print(json.dumps({"error": type(e).__name__, "reason": getattr(e, "reason", str(e))}))
"""


def test_hf_hub_config_without_its_weights_is_an_error_not_random_weights(tmp_path):
    """A cache holding the config but not the weights (a first download cut short): open_clip itself
    only warns and builds random weights; the app must refuse rather than call them pretrained."""
    name, arch = CHS20[0].values
    write_hf_hub_config(tmp_path, name.removeprefix("hf-hub:"), arch)
    out = run_offline(tmp_path, LOAD_REFUSED, name)
    assert out == {"error": WeightsUnavailableError.__name__,
                   "reason": "they are not in the local cache and HF_HUB_OFFLINE is set"}, out


# The LAION prior: vit-l-14/prior_aes_finetune.pth in zenglishuci/conditioned-prior, a torch.save of
# {"ema_model": state dict, ...}, keys as dalle2_pytorch 0.15.4 names them (recorded, with their
# shapes, by scripts/record_prior_keys.py).
def recorded_prior_keys() -> dict[str, list[int]]:
    record = json.loads(PRIOR_KEYS.read_text())
    assert record["dalle2_pytorch"] == "0.15.4" and record["dtype"] == "float32", record["dalle2_pytorch"]
    return record["keys"]


def test_laion_prior_checkpoint_keys_map_onto_the_apps_network():
    theirs = recorded_prior_keys()
    with torch.device("meta"):            # the 24-layer network's shapes without its 1 GB of values
        prior = DiffusionPrior(LAION_VIT_L_14)
    ours = {k: list(v.shape) for k, v in prior.state_dict().items()}
    mapped = {k: priors._our_key(k) for k in theirs}
    kept = {name: theirs[k] for k, name in mapped.items() if name is not None}
    assert len(kept) == sum(name is not None for name in mapped.values())    # no two keys onto one of ours
    assert {name: ours.get(name) for name in kept} == kept                  # each onto ours, same shape
    assert {n for n, _ in prior.named_parameters()} <= kept.keys()           # every learned weight covered
    # Not loaded: ours recomputes the noise schedule (one value per timestep) and the rotary
    # frequencies (shared by every layer, same shape as theirs); nothing else is left out.
    dropped = [k for k, name in mapped.items() if name is None]
    schedule = [k for k in dropped if k.startswith("noise_scheduler.")]
    rotary = [k for k in dropped if k.endswith("rotary_emb.freqs")]
    assert sorted(schedule + rotary) == sorted(dropped) and len(rotary) == LAION_VIT_L_14.depth
    assert all(theirs[k] == [LAION_VIT_L_14.timesteps] for k in schedule)
    assert all(theirs[k] == ours[k] for k in rotary)
    assert set(ours) - kept.keys() == {k for k in ours if k.endswith("rotary_emb.freqs")}
    priors.load_state(prior, {k: torch.empty(s, device="meta") for k, s in theirs.items()}, "LAION prior")


LOAD_PRIOR = """
from app.defences.priors import _our_key, load_prior

prior = load_prior("ViT-L-14-quickgelu/openai")
ours, file = prior.state_dict(), written(sys.argv[1], "ema_model")
kept = [k for k in file if _our_key(k) is not None]
same = sum(torch.equal(ours[_our_key(k)], file[k]) for k in kept)
g = torch.Generator().manual_seed(0)
z = torch.nn.functional.normalize(torch.randn(2, 768, generator=g), dim=-1) * prior.image_embed_scale  # (2, D)
loss = prior.p_losses(z, torch.tensor([10, 500]), torch.randn(2, 768, generator=g))                    # (2,)
print(json.dumps({"same": same, "kept": len(kept), "loss": loss.tolist()}))
"""


@pytest.mark.slow   # 20-25 s (a 1 GB checkpoint); its fast one is the key mapping test above, on meta tensors
def test_laion_prior_loads_from_its_hub_cache_layout(tmp_path):
    gen = torch.Generator().manual_seed(1)
    state = {k: torch.randn(shape, generator=gen) for k, shape in recorded_prior_keys().items()}   # 249M values
    path = hub_file(tmp_path, priors.HUB_REPO, priors.HUB_FILE)
    torch.save({"ema_model": state}, path)
    del state
    out = run_offline(tmp_path, LOAD_PRIOR, str(path))
    assert out["same"] == out["kept"] == sum(priors._our_key(k) is not None for k in recorded_prior_keys()), out
    assert all(map(math.isfinite, out["loss"])), out
