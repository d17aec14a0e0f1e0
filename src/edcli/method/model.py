"""The ED model (method.md §3.4): one small post-LN Transformer per feature level, pure nn.Modules.

Every module takes sizes and tensors, never paths or devices. Constants (reference features, distance
matrices, positional encoding) are buffers, so `.to()` moves them and checkpoints carry ref, dx and dy.
The attention modules return the learned sigma, not the Gaussian target: the target is built where it is
needed (edcli.method.prior), always in fp32. At inference (branches="score") the scoring branch reduces each
attention map to its KL rows in place and the other branch runs through the fused attention kernel, so no map is kept.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edcli.config import ARCHS, ModelConfig, level_widths
from edcli.errors import ConfigError, DataError
from edcli.method.attention import DifferenceAwareAttention, Embedding2D
from edcli.method.prior import (
    grid_axes,
    grid_distances,
)

BRANCH_MODES = ("all", "score", "train")
# Training ("train") fuses attention and loss terms (edcli.method.fused) for maps of at least this many values
# (L x S); smaller ones go through the maps path, faster there (measured at 256 x 256: 9 ms against 15-19 ms
# per attention's forward and backward; at 1024 x 1024 the fused path is the faster by far and keeps no map).
FUSED_MIN_ELEMENTS = 1 << 18


class LevelOutput(NamedTuple):
    recon: Tensor  # (B, L, C)
    # training ("all"): stacked (layers, ...) tensors; None in score mode, which keeps no map
    intra_attn: Tensor | None  # (layers, B, heads, L, L) softmax attention, None if not returned
    intra_sigma: Tensor | None  # (layers, B, heads, L, 2) sigma (y, x), fp32
    inter_attn: Tensor | None
    inter_sigma: Tensor | None
    # score mode only: mean over layers of the scoring branch's head-mean symmetric KL to the target (B, L)
    score_kl: Tensor | None = None
    # train mode only: per branch (D_t, D_a, H), each (layers, B, heads, L) in fp32 (edcli.method.fused)
    intra_terms: tuple | None = None
    inter_terms: tuple | None = None


class D2Fusion(nn.Module):
    """ED's fusion of the two branch streams: concat -> Linear 2d->4d -> ReLU -> Linear 4d->d."""

    def __init__(self, d_model: int):
        super().__init__()
        self.fc1 = nn.Linear(2 * d_model, 4 * d_model)
        self.fc2 = nn.Linear(4 * d_model, d_model)

    def forward(self, u: Tensor, v: Tensor) -> Tensor:
        return self.fc2(F.relu(self.fc1(torch.cat([u, v], dim=-1))))


class EDFeedForward(nn.Module):
    """fc1 -> depthwise 3x3 over the token grid -> GELU -> + g * median over tokens -> fc2."""

    def __init__(self, d_model: int, hidden: int, grid: tuple[int, int], dropout: float = 0.0):
        super().__init__()
        self.grid = tuple(grid)
        self.fc1 = nn.Linear(d_model, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.g = nn.Parameter(torch.ones(hidden))
        self.fc2 = nn.Linear(hidden, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, z: Tensor) -> Tensor:
        B, L, _ = z.shape
        H, W = self.grid
        h = self.fc1(z)  # (B, L, F)
        F_ = h.shape[-1]
        h = self.dwconv(h.transpose(1, 2).reshape(B, F_, H, W))  # tokens back onto the grid: (B, F, H, W)
        h = F.gelu(h.flatten(2).transpose(1, 2))  # (B, L, F)
        # torch.median returns the lower median for even L, as the reference.
        h = h + self.g * h.median(dim=1, keepdim=True).values  # (B, 1, F) broadcast over tokens
        return self.drop(self.fc2(self.drop(h)))


class FODFeedForward(nn.Module):
    """FOD's plain MLP: Linear -> GELU -> Linear."""

    def __init__(self, d_model: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(d_model, hidden)
        self.fc2 = nn.Linear(hidden, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, z: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(z)))))


class EncoderLayer(nn.Module):
    """Post-LN layer: branches -> fusion (ED: D2Fusion, FOD: u - v; one branch: x + a) -> LN -> LN(z + FFN(z))."""

    def __init__(
        self,
        d_model: int,
        heads: int,
        grid: tuple[int, int],
        ffn_ratio: int = 4,
        dropout: float = 0.0,
        arch: str = "ed",
        intra: bool = True,
        inter: bool = True,
        attn_out_proj: bool = False,
    ):
        super().__init__()
        learn = arch == "ed"
        self.intra_attn = DifferenceAwareAttention(d_model, heads, learn, attn_out_proj, dropout) if intra else None
        self.inter_attn = DifferenceAwareAttention(d_model, heads, learn, attn_out_proj, dropout) if inter else None
        self.fusion = D2Fusion(d_model) if (arch == "ed" and intra and inter) else None
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        hidden = ffn_ratio * d_model
        self.ffn = (
            EDFeedForward(d_model, hidden, grid, dropout) if arch == "ed" else FODFeedForward(d_model, hidden, dropout)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, ref: Tensor | None):
        """x (B, L, d); ref (1, L, d) embedded reference. Returns (x, (P, sigma) intra, (P, sigma) inter)."""
        intra = inter = (None, None)
        u = v = None
        if self.intra_attn is not None:
            a, p, s = self.intra_attn(x, x)
            u = x + self.drop(a)
            intra = (p, s)
        if self.inter_attn is not None:
            a, p, s = self.inter_attn(x, ref)
            v = x + self.drop(a)
            inter = (p, s)
        return self._finish(u, v), intra, inter

    def trained(self, x: Tensor, ref: Tensor | None, axes: tuple[Tensor, Tensor]):
        """Training without maps: the next x and each branch's (D_t, D_a, H) terms (or None)."""
        u = v = intra = inter = None
        if self.intra_attn is not None:
            a, intra = self.intra_attn.trained(x, x, axes)
            u = x + self.drop(a)
        if self.inter_attn is not None:
            a, inter = self.inter_attn.trained(x, ref, axes)
            v = x + self.drop(a)
        return self._finish(u, v), intra, inter

    def score(self, x: Tensor, ref: Tensor | None, axes: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """Inference: the next x and the scoring branch's KL rows (B, L): the inter branch's, or the intra one's
        when the inter branch is off. The other branch runs through the fused kernel and keeps no map."""
        u = v = None
        kl = None
        if self.intra_attn is not None:
            if self.inter_attn is None:
                a, kl = self.intra_attn.scored(x, x, axes)
            else:
                a = self.intra_attn.attend(x, x)
            u = x + self.drop(a)
        if self.inter_attn is not None:
            a, kl = self.inter_attn.scored(x, ref, axes)
            v = x + self.drop(a)
        return self._finish(u, v), kl

    def _finish(self, u: Tensor | None, v: Tensor | None) -> Tensor:
        """Fusion of the branch streams (ED: D2Fusion, FOD: u - v, one branch: itself), then the post-LN FFN."""
        if u is not None and v is not None:
            z = self.fusion(u, v) if self.fusion is not None else u - v  # FOD: u - v = a_intra - a_inter
        else:
            z = u if u is not None else v
        z = self.norm1(z)
        return self.norm2(z + self.ffn(z))


def _stack(maps: list) -> Tensor | None:
    return None if not maps or maps[0] is None else torch.stack(maps)  # (layers, ...)


class LevelModel(nn.Module):
    """The Transformer of one feature level: reconstructs pooled backbone tokens (B, L, C)."""

    def __init__(
        self,
        channels: int,
        grid: tuple[int, int],
        ref: Tensor,
        d_model: int,
        heads: int = 8,
        layers: int = 3,
        ffn_ratio: int = 4,
        dropout: float = 0.0,
        arch: str = "ed",
        intra: bool = True,
        inter: bool = True,
        attn_out_proj: bool = False,
    ):
        super().__init__()
        H, W = (int(g) for g in grid)
        L = H * W
        if arch not in ARCHS:
            raise ConfigError(f"unknown --arch {arch!r}; choose one of {', '.join(ARCHS)}")
        if not (intra or inter):
            raise ConfigError("both --no-intra and --no-inter given; at least one attention branch is needed")
        if tuple(ref.shape) != (channels, L):
            raise ConfigError(
                f"reference features have shape {tuple(ref.shape)}, expected (C, L) = ({channels}, {L}) "
                f"for grid {H}x{W}; rebuild the store with `ed features`"
            )
        if layers < 1 or heads < 1:
            raise ConfigError(f"layers ({layers}) and heads ({heads}) must be at least 1")
        self.channels, self.grid, self.d_model, self.heads = channels, (H, W), d_model, heads
        self.num_layers, self.ffn_ratio, self.dropout = layers, ffn_ratio, dropout
        self.arch, self.intra, self.inter, self.attn_out_proj = arch, intra, inter, attn_out_proj
        self.register_buffer("ref", ref.detach().float().clone())
        dx, dy = grid_distances((H, W))
        self.register_buffer("dx", dx)
        self.register_buffer("dy", dy)
        self.embed = Embedding2D(channels, d_model, (H, W))
        self.ref_embed = Embedding2D(channels, d_model, (H, W)) if inter else None
        self.layers = nn.ModuleList(
            EncoderLayer(d_model, heads, (H, W), ffn_ratio, dropout, arch, intra, inter, attn_out_proj)
            for _ in range(layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.proj = nn.Linear(d_model, channels)

    def forward(self, x: Tensor, branches: str = "all") -> LevelOutput:
        """x: (B, L, C) pooled tokens, row-major. branches="all" returns every attention map and sigma (training);
        "score" returns the reconstruction and the scoring branch's KL rows (score_kl), keeps no map and builds no
        autograd graph (inference only); "train" returns the reconstruction and each branch's loss terms
        (intra_terms, inter_terms) and keeps no map (with dropout > 0, or maps under FUSED_MIN_ELEMENTS, "all")."""
        if branches not in BRANCH_MODES:
            raise ConfigError(f"branches must be one of {BRANCH_MODES}, got {branches!r}")
        if x.dim() != 3 or x.shape[1:] != (self.grid[0] * self.grid[1], self.channels):
            L = self.grid[0] * self.grid[1]
            raise DataError(
                f"features of shape {tuple(x.shape)} do not fit this model, which expects "
                f"(B, {L}, {self.channels}); were they made with another backbone or image size?"
            )
        emb = self.embed(x)  # (B, L, d)
        # Embedded once per forward with batch 1 and never repeated; each inter attention expands its K/V to B.
        ref = self.ref_embed(self.ref.t().unsqueeze(0)) if self.inter else None  # (1, L, d)
        if branches == "score":
            return self._score(emb, ref)
        small = self.grid[0] * self.grid[1] * self.ref.shape[1] < FUSED_MIN_ELEMENTS
        if branches == "train" and not (self.dropout > 0 and self.training) and not small:
            axes = grid_axes(self.dx, self.dy)
            terms = []
            for layer in self.layers:
                emb, a, b = layer.trained(emb, ref, axes)
                terms.append((a, b))
            stacked = [None if ts[0] is None else tuple(torch.stack(z) for z in zip(*ts)) for ts in zip(*terms)]
            return LevelOutput(
                self.proj(self.norm(emb)), None, None, None, None, intra_terms=stacked[0], inter_terms=stacked[1]
            )
        intra_p, intra_s, inter_p, inter_s = [], [], [], []
        for layer in self.layers:
            emb, (pa, sa), (pe, se) = layer(emb, ref)
            intra_p.append(pa)
            intra_s.append(sa)
            inter_p.append(pe)
            inter_s.append(se)
        recon = self.proj(self.norm(emb))  # (B, L, C)
        return LevelOutput(recon, _stack(intra_p), _stack(intra_s), _stack(inter_p), _stack(inter_s))

    @torch.no_grad()
    def _score(self, emb: Tensor, ref: Tensor | None) -> LevelOutput:
        # inference only, without a graph: the maps are consumed in place in reused buffers
        axes = grid_axes(self.dx, self.dy)
        kl = None
        for layer in self.layers:
            emb, k = layer.score(emb, ref, axes)
            kl = k if kl is None else kl + k
        return LevelOutput(self.proj(self.norm(emb)), None, None, None, None, kl / len(self.layers))


class EDModel(nn.Module):
    """One LevelModel per backbone feature level."""

    def __init__(self, levels: list[LevelModel]):
        super().__init__()
        self.levels = nn.ModuleList(levels)

    def forward(self, xs: list[Tensor], branches: str = "all") -> list[LevelOutput]:
        if len(xs) != len(self.levels):
            raise DataError(f"got {len(xs)} feature levels, the model has {len(self.levels)}")
        return [level(x, branches) for level, x in zip(self.levels, xs)]


def build_ed_model(channels: list[int], grids: list[tuple[int, int]], refs: list[Tensor], cfg: ModelConfig) -> EDModel:
    """One LevelModel per level; widths from config.level_widths (explicit, reference 256/512, or the C/2 rule)."""
    n = len(channels)
    if len(grids) != n or len(refs) != n:
        raise ConfigError(
            f"{n} channel counts, {len(grids)} grids and {len(refs)} reference maps: one of each per level"
        )
    d_models = level_widths(channels, cfg)
    if len(d_models) != n:
        raise ConfigError(f"--d-model has {len(d_models)} values for {n} feature levels; give one per level or none")
    return EDModel(
        [
            LevelModel(
                c,
                g,
                r,
                d,
                heads=cfg.heads,
                layers=cfg.layers,
                ffn_ratio=cfg.ffn_ratio,
                dropout=cfg.dropout,
                arch=cfg.arch,
                intra=cfg.intra,
                inter=cfg.inter,
                attn_out_proj=cfg.attn_out_proj,
            )
            for c, g, r, d in zip(channels, grids, refs, d_models)
        ]
    )
