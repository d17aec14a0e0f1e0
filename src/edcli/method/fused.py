"""Training-time attention fused with its correlation terms, computed in cache-sized chunks (method.md §3.4-3.5).

For one attention branch of one layer, `attention_correlation(q, k, v, ry, rx)` returns the attention output
softmax(q kᵀ) v and, per query row, the terms of the loss: D_t, D_a (the symmetric KL between the attention row P
and its Gaussian target T̄ = ry ⊗ rx, with gradient only into the target or only into P) and H (P's entropy).
No (L, S) map is kept between forward and backward: the backward recomputes P chunk by chunk. Each chunk (some
heads x some query rows; how many values, edcli.method.dispatch decides: CHUNK_ELEMENTS on the CPU, the whole map
on a GPU that has the memory) goes through the whole chain (logits, softmax, logs, the
analytic KL/entropy gradients, the softmax backward) while it is still in cache, and the allocator reuses the
same few buffers instead of mapping and page-faulting fresh (L, S) maps: on CPU that, more than the arithmetic,
was the cost of the unfused step. Matrix products run in `mm_dtype` (bf16 under autocast), everything else in
fp32 (fp64 if given).

Gradients, with d = log(t+ε) − log(p+ε):  ∂D/∂t = d + 1 − e^(−d),  ∂D/∂p = 1 − d − e^d,
∂H/∂p = −log(p+ε) + ε/(p+ε) − 1, then the softmax backward gₗ = p ⊙ (g_p − Σ p g_p).
"""

from __future__ import annotations

import torch
from torch import Tensor

from edcli.method import dispatch

# values per (rows, S) chunk on the CPU: 256 KiB of fp32; measured there (8x1024x1024 maps): 2^16 0.62 s,
# 2^18 0.79 s, 2^20 1.44 s per fwd+bwd
CHUNK_ELEMENTS = 1 << 16


def _chunk(q: Tensor, S: int, wide: torch.dtype, mm: torch.dtype) -> int:
    """Values per chunk for the (N, L, S) maps of q (dispatch.attention_chunk). The backward keeps up to 8 map-sized
    buffers alive in the wide dtype (p, gp, log p, d, e^-d, the target's gradient and a product) and 2 in mm's."""
    N, L, _ = q.shape
    return dispatch.attention_chunk(q, N * L * S, 8 * wide.itemsize + 2 * mm.itemsize, CHUNK_ELEMENTS)


def _chunks(N: int, L: int, S: int, chunk: int):
    rows = max(1, min(L, chunk // S))
    heads = max(1, chunk // (rows * S)) if rows == L else 1
    for n0 in range(0, N, heads):
        for r0 in range(0, L, rows):
            yield slice(n0, min(N, n0 + heads)), slice(r0, min(L, r0 + rows))


def _rowdot(a: Tensor, b: Tensor) -> Tensor:
    # Σ_j a_j b_j. On a cache-sized chunk a product and a sum beat a batched matrix-vector product (a GEMV per row).
    return torch.linalg.vecdot(a, b)


def _log_target(ry: Tensor, rx: Tensor, eps: float) -> Tensor:
    """log(ry ⊗ rx + ε), (n, R, H*W)."""
    n, R, H = ry.shape
    return torch.mul(ry.reshape(n * R, H, 1), rx.reshape(n * R, 1, -1)).add_(eps).log_().view(n, R, -1)


def _target_dot(ry: Tensor, rx: Tensor, m: Tensor) -> Tensor:
    """Σ_j t_j m_j per row for t = ry ⊗ rx (separable), m (n, R, H*W) -> (n, R)."""
    n, R, H = ry.shape
    return torch.linalg.vecdot(_rows_times_rx(m, rx), ry)


def _rows_times_rx(m: Tensor, rx: Tensor) -> Tensor:
    """Σ_c m[.., r, c] rx[.., c] for m (n, R, H*W) seen as (n, R, H, W) -> (n, R, H)."""
    n, R, W = rx.shape
    return torch.linalg.vecdot(m.view(n, R, -1, W), rx.unsqueeze(-2))


class _AttentionCorrelation(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, ry, rx, eps: float, mm_dtype: torch.dtype | None):
        ctx.set_materialize_grads(False)
        wide = ry.dtype
        mm = mm_dtype or wide
        N, L, _ = q.shape
        S = k.shape[1]
        with torch.autocast(q.device.type, enabled=False):
            qm, km, vm = q.to(mm), k.to(mm), v.to(mm)
            out = torch.empty(N, L, v.shape[-1], dtype=mm, device=q.device)
            D = torch.empty(N, L, dtype=wide, device=q.device)
            Hrow = torch.empty_like(D)
            for hs, rs in _chunks(N, L, S, _chunk(q, S, wide, mm)):
                p = torch.bmm(qm[hs, rs], km[hs].transpose(1, 2)).to(wide)
                p = torch.softmax(p, -1, out=p)
                out[hs, rs] = torch.bmm(p.to(mm), vm[hs])
                lp = torch.add(p, eps).log_()
                d = _log_target(ry[hs, rs], rx[hs, rs], eps).sub_(lp)
                D[hs, rs] = _target_dot(ry[hs, rs], rx[hs, rs], d) - _rowdot(p, d)
                Hrow[hs, rs] = -_rowdot(p, lp)
        ctx.eps, ctx.mm = eps, mm
        ctx.save_for_backward(q, k, v, ry, rx)
        return out.to(q.dtype), D, D.clone(), Hrow

    @staticmethod
    def backward(ctx, g_out, g_dt, g_da, g_h):
        q, k, v, ry, rx = ctx.saved_tensors
        eps, mm = ctx.eps, ctx.mm
        wide = ry.dtype
        N, L, _ = q.shape
        S = k.shape[1]
        want_t = g_dt is not None and (ctx.needs_input_grad[3] or ctx.needs_input_grad[4])
        with torch.autocast(q.device.type, enabled=False):
            qm, km, vm = q.to(mm), k.to(mm), v.to(mm)
            gom = g_out.to(mm) if g_out is not None else None
            gq = torch.empty(N, L, q.shape[-1], dtype=wide, device=q.device)
            gk = torch.zeros(N, S, k.shape[-1], dtype=wide, device=q.device)
            gv = torch.zeros(N, S, v.shape[-1], dtype=wide, device=q.device)
            gry = torch.zeros_like(ry) if want_t else None
            grx = torch.zeros_like(rx) if want_t else None
            for hs, rs in _chunks(N, L, S, _chunk(q, S, wide, mm)):
                ryc, rxc = ry[hs, rs], rx[hs, rs]
                p = torch.bmm(qm[hs, rs], km[hs].transpose(1, 2)).to(wide)
                p = torch.softmax(p, -1, out=p)  # (n, R, S), recomputed
                if gom is not None:
                    gv[hs] += torch.bmm(p.to(mm).transpose(1, 2), gom[hs, rs]).to(wide)
                    gp = torch.bmm(gom[hs, rs], vm[hs].transpose(1, 2)).to(wide)
                else:
                    gp = torch.zeros_like(p)
                lp = torch.add(p, eps).log_()
                d = _log_target(ryc, rxc, eps).sub_(lp)
                e = torch.neg(d).exp_()  # e^(−d)
                const = torch.zeros_like(p[..., :1])
                if want_t:
                    m = torch.sub(d, e)  # ∂D/∂t − 1; the "+1" goes analytically (Σ rx = Σ ry = 1)
                    n_, R, H = ryc.shape
                    gt = g_dt[hs, rs].unsqueeze(-1)
                    col = (m.view(n_, R, H, -1) * ryc.unsqueeze(-1)).sum(-2)  # Σ_r ry[r] m[r, c]
                    gry[hs, rs] = (_rows_times_rx(m, rxc) + rxc.sum(-1, keepdim=True)) * gt
                    grx[hs, rs] = (col + ryc.sum(-1, keepdim=True)) * gt
                if g_da is not None:
                    ga = g_da[hs, rs].unsqueeze(-1)
                    const = const + ga
                    gp.addcmul_(e.reciprocal_().add_(d), ga, value=-1.0)  # −g_da (d + e^d)
                if g_h is not None:
                    gh = g_h[hs, rs].unsqueeze(-1)
                    const = const - gh
                    x2 = torch.add(p, eps, out=d).reciprocal_().mul_(-eps).add_(lp)  # log(p+ε) − ε/(p+ε)
                    gp.addcmul_(x2, gh, value=-1.0)
                gp.add_(const)
                gl = gp.sub_(_rowdot(p, gp).unsqueeze(-1)).mul_(p)  # softmax backward
                glm = gl.to(mm)
                gq[hs, rs] = torch.bmm(glm, km[hs])
                gk[hs] += torch.bmm(glm.transpose(1, 2), qm[hs, rs]).to(wide)
        return gq.to(q.dtype), gk.to(k.dtype), gv.to(v.dtype), gry, grx, None, None


def attention_correlation(
    q: Tensor, k: Tensor, v: Tensor, ry: Tensor, rx: Tensor, eps: float, mm_dtype: torch.dtype | None = None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """q (N, L, dh) already scaled, k and v (N, S, dh), row factors ry (N, L, H), rx (N, L, W) with H*W = S.

    Returns out (N, L, dh) and per row D_t, D_a, H (N, L) in ry's dtype (fp32 or fp64)."""
    return _AttentionCorrelation.apply(q, k, v, ry, rx, eps, mm_dtype)
