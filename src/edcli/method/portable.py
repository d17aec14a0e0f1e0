"""The score mode of a LevelModel in plain functional ops, for graph export (ONNX).

The fast path (LevelModel(branches="score")) softmaxes in place (`out=`), consumes each attention map in place and
loops over head groups sized at run time; exporters reject or mis-trace those. This path does the same maths with
out-of-place ops on whole batches, with the grid axes computed once outside the graph. method/scorer.py's
MapScorer(portable=True) scores through it; tests/test_export.py checks it equals the fast path.
"""

from __future__ import annotations

import torch
from torch import Tensor

from edcli.method.attention import DifferenceAwareAttention
from edcli.method.model import EncoderLayer, LevelModel
from edcli.method.prior import EPS, outer, row_factors
from edcli.method.scoring import reconstruction_score, token_score


def _attention(attn: DifferenceAwareAttention, q_in: Tensor, kv_in: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Output (B, L, d), softmax attention (B*h, L, S) and the projected q (for the batch size)."""
    q, k, v = attn._project(q_in, kv_in)
    p = torch.softmax(torch.bmm(q, k.transpose(1, 2)), dim=-1)  # (B*h, L, S)
    return attn._merge(torch.bmm(p, v), q_in.shape[0]), p, q


def _scored(
    attn: DifferenceAwareAttention, q_in: Tensor, kv_in: Tensor, axes: tuple[Tensor, Tensor]
) -> tuple[Tensor, Tensor]:
    """As DifferenceAwareAttention.scored: output and Σ_j (t − p)(log(t+ε) − log(p+ε)) averaged over heads (B, L)."""
    B, L, _ = q_in.shape
    out, p, _ = _attention(attn, q_in, kv_in)
    ry, rx = row_factors(attn._sigma(q_in), *axes)  # (B, h, L, H), (B, h, L, W)
    te, pe = outer(ry, rx).flatten(0, 1) + EPS, p + EPS  # (B*h, L, L); t - p == te - pe
    kl = ((te - pe) * torch.log(te / pe)).sum(-1)  # one log of the ratio, as sym_kl_rows_ (B*h, L)
    return out, kl.view(B, attn.heads, L).mean(1)


def _lower_median(h: Tensor) -> Tensor:
    """torch.median over tokens (dim 1, the lower median for even L): median has no ONNX operator, so the largest
    of the (L+1)//2 smallest values (a TopK half the size of a full sort)."""
    k = (h.shape[1] - 1) // 2 + 1
    return torch.topk(h, k, dim=1, largest=False).values[:, k - 1 : k]  # (B, 1, F)


def _ffn(layer: EncoderLayer, z: Tensor) -> Tensor:
    ffn = layer.ffn
    if not hasattr(ffn, "dwconv"):  # FOD's plain MLP exports as it is
        return ffn(z)
    B, L, _ = z.shape
    H, W = ffn.grid
    h = ffn.fc1(z)
    h = ffn.dwconv(h.transpose(1, 2).reshape(B, h.shape[-1], H, W))
    h = torch.nn.functional.gelu(h.flatten(2).transpose(1, 2))
    return ffn.fc2(h + ffn.g * _lower_median(h))


def _layer(layer: EncoderLayer, x: Tensor, ref: Tensor | None, axes) -> tuple[Tensor, Tensor]:
    """As EncoderLayer.score (eval mode: dropout is the identity)."""
    u = v = kl = None
    if layer.intra_attn is not None:
        if layer.inter_attn is None:
            a, kl = _scored(layer.intra_attn, x, x, axes)
        else:
            a = _attention(layer.intra_attn, x, x)[0]
        u = x + a
    if layer.inter_attn is not None:
        a, kl = _scored(layer.inter_attn, x, ref, axes)
        v = x + a
    if u is not None and v is not None:
        z = layer.fusion(u, v) if layer.fusion is not None else u - v
    else:
        z = u if u is not None else v
    z = layer.norm1(z)
    return layer.norm2(z + _ffn(layer, z)), kl


def level_score(level: LevelModel, x: Tensor, axes: tuple[Tensor, Tensor], score: str = "ed") -> Tensor:
    """The score per token (B, L) of pooled tokens x (B, L, C): what MapScorer.level_parts and
    scoring.token_score give in the fast score mode."""
    emb = level.embed(x)
    ref = level.ref_embed(level.ref.t().unsqueeze(0)) if level.inter else None
    kl = 0.0
    for layer in level.layers:
        emb, k = _layer(layer, emb, ref, axes)
        kl = kl + k
    recon = level.proj(level.norm(emb))
    return token_score(reconstruction_score(recon, x), kl / len(level.layers), score)
