"""The diffusion prior of CLIPure-Diff: DALL-E 2's prior over CLIP image embeddings.

CLIPure-Diff scores an image embedding by the prior's denoising loss (docs/official-code.md,
"CLIPure-Diff"). This module holds the network and the loss; app/defences/priors.py says
where each backbone's prior comes from and loads its weights.

Why not the `dalle2_pytorch` package: `pip install --dry-run dalle2_pytorch` (1.15.6) wants
open-clip-torch<3, i.e. it would downgrade our pinned open_clip_torch 3.3.0 to 2.32.0, and pulls
27 packages (pyarrow, pandas, kornia, accelerate, webdataset, ...) that the app never uses. So
the network is re-implemented here; its state-dict keys are those of dalle2_pytorch 0.11.0 to
0.15.4 (LayerNorm `gamma`/`beta`, schedule under `noise_scheduler.*`), the only releases whose
`load_state_dict(..., strict=True)` takes such a checkpoint, as the official code does; the loader
also accepts the later gain name `g`.

Unconditional, as the official code asks (`cond_drop_prob = 1`): in those releases dropping the
condition masks the text tokens out of attention, so only the null key/value, the timestep, the
noisy image embedding and the learned query are seen. We therefore run just those three tokens,
at the positions they would hold behind the masked text tokens (`text_positions`); the text
content cannot change the output. tests/test_prior_reference.py checks loss and gradient against
dalle2_pytorch 0.15.4 itself. Later releases compute something else: from 0.23.0 the drop mask is
built but never applied (text always attended, padding replaced by learned null tokens), from
1.4.3 attention is cosine-similarity, and from 1.9.0 `cond_drop_prob` set after construction no
longer reaches `p_losses`. The official code does not pin a version.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from app.common.errors import OutOfRangeError


@dataclass(frozen=True)
class PriorConfig:
    dim: int = 768              # CLIP embedding width D
    depth: int = 24             # transformer blocks
    dim_head: int = 64
    heads: int = 32
    ff_mult: int = 4
    normformer: bool = True     # LayerNorm after the SwiGLU activation
    timesteps: int = 1000       # diffusion steps of the cosine schedule
    text_positions: int = 78    # masked text tokens in front: 77 text encodings + 1 text embedding

    @classmethod
    def from_json(cls, path: Path) -> "PriorConfig":
        return cls(**json.loads(Path(path).read_text()))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)


LAION_VIT_L_14 = PriorConfig()    # the official DiffusionPriorNetwork settings (docs/official-code.md)


class LayerNorm(nn.Module):
    """LayerNorm with a learned gain and a fixed zero bias, named as in dalle2_pytorch 0.x."""

    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))
        self.register_buffer("beta", torch.zeros(dim))

    def forward(self, x):
        return F.layer_norm(x, x.shape[-1:], self.gamma, self.beta)


class Rotary(nn.Module):
    """Rotary position embedding on the first `dim` channels, channel pairs (2i, 2i+1)."""

    def __init__(self, dim: int, theta: float = 10000.0):
        super().__init__()
        self.register_buffer("freqs", 1.0 / theta ** (torch.arange(0, dim, 2).float() / dim))

    def forward(self, x, pos):
        # x (..., n, d), pos (n,) absolute positions
        angles = (pos.to(self.freqs.dtype)[:, None] * self.freqs).repeat_interleave(2, -1)   # (n, rot)
        rot = angles.shape[-1]
        head, tail = x[..., :rot], x[..., rot:]
        pairs = head.unflatten(-1, (-1, 2))
        swapped = torch.stack((-pairs[..., 1], pairs[..., 0]), -1).flatten(-2)
        return torch.cat((head * angles.cos() + swapped * angles.sin(), tail), -1)


class RelPosBias(nn.Module):
    """T5-style bucketed relative position bias, one value per head."""

    def __init__(self, heads: int, num_buckets: int = 32, max_distance: int = 128):
        super().__init__()
        self.num_buckets, self.max_distance = num_buckets, max_distance
        self.relative_attention_bias = nn.Embedding(num_buckets, heads)

    def forward(self, q_pos, k_pos):
        back = (q_pos[:, None] - k_pos[None, :]).clamp_min(0)           # (i, j) how far back the key is
        exact = self.num_buckets // 2
        far = exact + (torch.log(back.float().clamp_min(1) / exact) / math.log(self.max_distance / exact)
                       * (self.num_buckets - exact)).long()
        bucket = torch.where(back < exact, back, far.clamp_max(self.num_buckets - 1))
        return self.relative_attention_bias(bucket).permute(2, 0, 1)     # (h, i, j)


class Attention(nn.Module):
    """Causal multi-query attention (many query heads, one key/value head) with a null key/value."""

    def __init__(self, dim: int, dim_head: int, heads: int, rotary: Rotary):
        super().__init__()
        self.heads, self.scale = heads, dim_head ** -0.5
        self.norm = LayerNorm(dim)
        self.null_kv = nn.Parameter(torch.randn(2, dim_head))
        self.to_q = nn.Linear(dim, dim_head * heads, bias=False)
        self.to_kv = nn.Linear(dim, dim_head * 2, bias=False)
        self.rotary_emb = rotary
        self.to_out = nn.Sequential(nn.Linear(dim_head * heads, dim, bias=False), LayerNorm(dim))

    def forward(self, x, pos, bias):
        b = x.shape[0]
        x = self.norm(x)
        q = self.to_q(x).unflatten(-1, (self.heads, -1)).transpose(1, 2) * self.scale   # (b, h, n, dh)
        k, v = self.to_kv(x).chunk(2, dim=-1)                                            # (b, n, dh)
        q, k = self.rotary_emb(q, pos), self.rotary_emb(k, pos)
        k = torch.cat((self.null_kv[0].expand(b, 1, -1), k), 1)                          # (b, 1+n, dh)
        v = torch.cat((self.null_kv[1].expand(b, 1, -1), v), 1)
        sim = torch.einsum("bhid,bjd->bhij", q, k) + bias                              # bias holds the causal mask
        out = torch.einsum("bhij,bjd->bhid", sim.softmax(-1), v)
        return self.to_out(out.transpose(1, 2).flatten(2))


class SwiGLU(nn.Module):
    def forward(self, x):
        x, gate = x.chunk(2, dim=-1)
        return x * F.silu(gate)


def feed_forward(dim: int, mult: int, normformer: bool) -> nn.Sequential:
    inner = dim * mult
    return nn.Sequential(LayerNorm(dim), nn.Linear(dim, inner * 2, bias=False), SwiGLU(),
                         LayerNorm(inner) if normformer else nn.Identity(), nn.Identity(),
                         nn.Linear(inner, dim, bias=False))


class CausalTransformer(nn.Module):
    def __init__(self, cfg: PriorConfig):
        super().__init__()
        self.rel_pos_bias = RelPosBias(cfg.heads)
        rotary = Rotary(min(32, cfg.dim_head))
        self.layers = nn.ModuleList(
            nn.ModuleList([Attention(cfg.dim, cfg.dim_head, cfg.heads, rotary),
                           feed_forward(cfg.dim, cfg.ff_mult, cfg.normformer)]) for _ in range(cfg.depth))
        self.norm = LayerNorm(cfg.dim)
        self.project_out = nn.Linear(cfg.dim, cfg.dim, bias=False)

    def forward(self, x, pos):
        # Key j sits one column right of its position (column 0 is the null key), as in dalle2_pytorch.
        bias = self.rel_pos_bias(pos, torch.cat((pos.new_zeros(1), pos + 1)))           # (h, n, 1+n)
        n = pos.shape[0]
        causal = torch.ones(n, n + 1, dtype=torch.bool, device=x.device).triu(2)       # a query sees null + keys <= itself
        bias = bias.to(x.dtype).masked_fill(causal, -torch.finfo(x.dtype).max)
        for attn, ff in self.layers:
            x = attn(x, pos, bias) + x
            x = ff(x) + x
        return self.project_out(self.norm(x))


class DiffusionPriorNetwork(nn.Module):
    """Predicts the clean (scaled) image embedding from a noisy one and the timestep."""

    def __init__(self, cfg: PriorConfig):
        super().__init__()
        self.cfg = cfg
        self.to_time_embeds = nn.Sequential(nn.Embedding(cfg.timesteps, cfg.dim))
        self.learned_query = nn.Parameter(torch.randn(cfg.dim))
        self.causal_transformer = CausalTransformer(cfg)

    def forward(self, noisy, t):
        # noisy (N, D), t (N,) -> (N, D). Tokens: [masked text ...] time, image, query.
        n = noisy.shape[0]
        tokens = torch.stack((self.to_time_embeds(t), noisy, self.learned_query.expand(n, -1)), 1)   # (N, 3, D)
        pos = torch.arange(3, device=noisy.device) + self.cfg.text_positions
        return self.causal_transformer(tokens, pos)[:, -1]


def cosine_alphas_cumprod(timesteps: int, s: float = 0.008) -> torch.Tensor:
    """(timesteps,) cumulative alpha of the cosine schedule (Nichol & Dhariwal), betas clipped at 0.999."""
    x = torch.linspace(0, timesteps, timesteps + 1, dtype=torch.float64)
    f = torch.cos((x / timesteps + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(0, 0.999)
    return torch.cumprod(1 - betas, 0).float()


class DiffusionPrior(nn.Module):
    """The denoising loss of an x0-predicting prior on scaled image embeddings (loss type l2)."""

    def __init__(self, cfg: PriorConfig):
        super().__init__()
        self.cfg = cfg
        self.net = DiffusionPriorNetwork(cfg)
        self.image_embed_scale = cfg.dim ** 0.5      # unit embeddings -> roughly unit variance per entry
        acp = cosine_alphas_cumprod(cfg.timesteps)
        self.register_buffer("sqrt_alphas_cumprod", acp.sqrt(), persistent=False)
        self.register_buffer("sqrt_one_minus_alphas_cumprod", (1 - acp).sqrt(), persistent=False)

    def p_losses(self, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Per-sample loss (N,): mean_d (net(q(x_t | x_start), t) - x_start)^2.

        x_start (N, D) is the scaled embedding z * image_embed_scale; t (N,) timesteps; noise (N, D).
        """
        a = self.sqrt_alphas_cumprod[t][:, None].to(x_start.dtype)
        s = self.sqrt_one_minus_alphas_cumprod[t][:, None].to(x_start.dtype)
        pred = self.net(a * x_start + s * noise, t)
        return (pred - x_start).pow(2).mean(-1)


def check_timesteps(low, high, prior: DiffusionPrior) -> tuple[int, int]:
    """The random-timestep range [low, high], inside the prior's schedule; else one sentence."""
    top = prior.cfg.timesteps - 1
    try:
        lo, hi = int(low), int(high)
    except (TypeError, ValueError):
        raise OutOfRangeError(f"The diffusion timestep range must be two whole numbers, got {low!r} and {high!r}.") \
            from None
    if lo != low or hi != high or not (0 <= lo <= hi <= top):
        raise OutOfRangeError(f"The diffusion timestep range must satisfy 0 <= low <= high <= {top}, "
                              f"got {low!r} to {high!r}.")
    return lo, hi
