"""Agreement with a reference computation: dalle2_pytorch's own DiffusionPrior.p_losses.

The fixture holds a tiny prior's state dict under the package's key names, inputs, and what
dalle2_pytorch 0.15.4 computed from them the way the official CLIPure-Diff code calls it
(cond_drop_prob = 1 set after construction, eval mode, 77 text tokens). It is written by
scripts/make_prior_reference.py, which says how; this test needs no dalle2_pytorch.
"""
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from app.defences.prior import DiffusionPrior, PriorConfig, Rotary
from app.defences.priors import load_state

FIXTURE = Path(__file__).parent / "fixtures" / "dalle2_prior_reference.safetensors"
# The generator's network; 78 masked text positions: 77 text encodings + the text embedding.
CFG = PriorConfig(dim=32, depth=2, dim_head=48, heads=4, ff_mult=4, normformer=True, timesteps=1000,
                  text_positions=78)


@pytest.fixture(scope="module")
def ref():
    with safe_open(str(FIXTURE), "pt") as f:
        meta = f.metadata()
    return meta, load_file(str(FIXTURE))


@pytest.fixture(scope="module")
def prior(ref):
    state = {k.removeprefix("state."): v for k, v in ref[1].items() if k.startswith("state.")}
    return load_state(DiffusionPrior(CFG), state, "dalle2_pytorch reference prior").eval()


def close(a, b, rel=1e-5):
    """Elementwise within rel, measured against the largest entry (gradients cross zero)."""
    return (a - b).abs().max().item() <= rel * b.abs().max().item()


def test_fixture_is_from_the_release_the_official_code_loads(ref):
    meta, t = ref
    assert meta["dalle2_pytorch"] == "0.15.4"
    assert "state.net.causal_transformer.norm.gamma" in t and "state.net.null_text_embed" not in t


def test_rotary_frequencies_are_the_packages(ref):
    ours = Rotary(min(32, CFG.dim_head)).freqs
    assert torch.equal(ours, ref[1]["state.net.causal_transformer.layers.0.0.rotary_emb.freqs"])


def test_per_sample_loss_and_gradient_match_dalle2_pytorch(ref, prior):
    t = ref[1]
    x = t["x"].clone().requires_grad_()
    loss = prior.p_losses(x, t["times"], t["noise"])                      # (N,)
    grad, = torch.autograd.grad(loss.sum(), x)
    assert close(loss.detach(), t["loss_per_sample"]), (loss, t["loss_per_sample"])
    assert close(grad, t["grad_sum"]), (grad - t["grad_sum"]).abs().max()


def test_official_p_losses_is_the_batch_mean(ref):
    """0.15.4's p_losses returns F.mse_loss's scalar: the mean over samples and dimensions."""
    t = ref[1]
    n = t["x"].shape[0]
    assert close(t["loss_per_sample"].mean().reshape(1), t["loss_batch_mean"])
    assert close(t["grad_batch_mean"] * n, t["grad_sum"])
