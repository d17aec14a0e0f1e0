"""The attention of ED's level models (method.md §3.4): the 2-D positional embedding and the difference-aware
attention that also predicts each query's Gaussian prior width (sigma). Pure nn.Modules; the Gaussian target
is built where it is needed (edcli.method.prior), always in fp32."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edcli.errors import ConfigError
from edcli.method import dispatch
from edcli.method.fused import attention_correlation
from edcli.method.prior import EPS, compute_dtype, row_factors, sym_kl_rows_

# Attention values per head group in score mode on the CPU (see DifferenceAwareAttention.scored; on a GPU
# edcli.method.dispatch sizes the group from the free memory): 4 MiB of fp32, one head of a 32x32 grid. Measured on
# CPU (wide_resnet50_2 shapes, 1 thread): 0.76 s/image with all 8 heads at once, 0.67-0.73 s with groups of
# 2^19..2^21 values (smaller working set; freed buffers reused, not mapped afresh).
SCORE_GROUP_ELEMENTS = 1 << 20
# map-sized buffers alive per value in score mode: the logits/softmax, the KL's log ratio, a cast of each (bf16)
SCORE_BUFFERS = 4
# below this d_head, score mode computes attn·v as (vᵀ attnᵀ)ᵀ (see DifferenceAwareAttention.scored)
NARROW_HEAD = 16


def positional_encoding_2d(d_model: int, grid: tuple[int, int]) -> Tensor:
    """Fixed 2-D sin-cos encoding, float32 (H*W, d_model).

    Channels [0, d/2) encode the column: channel 2i is sin(col*f_i), 2i+1 is cos(col*f_i) with
    f_i = 10000^(-2i/(d/2)); channels [d/2, d) encode the row the same way.
    """
    if d_model % 4:
        raise ConfigError(
            f"d_model {d_model} must be divisible by 4 for the 2-D positional encoding; pick another --d-model"
        )
    H, W = grid
    half = d_model // 2
    freq = 10000.0 ** (-2.0 * torch.arange(half // 2, dtype=torch.float64) / half)  # (half/2,)
    col = torch.arange(W, dtype=torch.float64)[:, None] * freq  # (W, half/2)
    row = torch.arange(H, dtype=torch.float64)[:, None] * freq  # (H, half/2)
    pe = torch.zeros(H, W, d_model, dtype=torch.float64)
    pe[:, :, 0:half:2] = col.sin()[None]
    pe[:, :, 1:half:2] = col.cos()[None]
    pe[:, :, half::2] = row.sin()[:, None]
    pe[:, :, half + 1 :: 2] = row.cos()[:, None]
    return pe.reshape(H * W, d_model).float()  # row-major flattening of the grid


class Embedding2D(nn.Module):
    """1x1 Conv1d projection C -> d plus the fixed 2-D positional encoding (FOD's embedding)."""

    def __init__(self, channels: int, d_model: int, grid: tuple[int, int]):
        super().__init__()
        self.proj = nn.Conv1d(channels, d_model, kernel_size=1)
        nn.init.kaiming_normal_(self.proj.weight, mode="fan_in", nonlinearity="leaky_relu")
        self.register_buffer("pos", positional_encoding_2d(d_model, grid), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        # A k=1 convolution over tokens is a linear map of channels; F.linear skips the transposes.
        return F.linear(x, self.proj.weight[:, :, 0], self.proj.bias) + self.pos  # (B, L, d)


def sigma_map(z: Tensor) -> Tensor:
    """sigma = 3^(sigmoid(5z) + 1e-5) - 1, in at least fp32 (values in (~1.1e-5, 2])."""
    z = z.to(torch.promote_types(z.dtype, torch.float32))
    return torch.pow(3.0, torch.sigmoid(5.0 * z) + 1e-5) - 1.0


class DifferenceAwareAttention(nn.Module):
    """Multi-head attention that also predicts a per-token, per-head (sigma_y, sigma_x).

    ED: one learnable temperature initialised to 1/sqrt(d_head); FOD (learn_temperature=False): fixed.
    The reference allocates an output projection and discards its result; out_proj=True allocates and applies it.
    """

    def __init__(
        self, d_model: int, heads: int, learn_temperature: bool = True, out_proj: bool = False, dropout: float = 0.0
    ):
        super().__init__()
        if d_model % heads:
            raise ConfigError(f"d_model {d_model} is not divisible by heads {heads}; change --heads or --d-model")
        self.heads = heads
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model)
        self.value = nn.Linear(d_model, d_model)
        self.sigma = nn.Linear(d_model, 2 * heads)
        self.out_proj = nn.Linear(d_model, d_model) if out_proj else None
        tau = 1.0 / math.sqrt(d_model // heads)
        self.temperature = nn.Parameter(torch.tensor(tau)) if learn_temperature else tau
        self.drop = nn.Dropout(dropout)

    def _project(self, q_in: Tensor, kv_in: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """q (B*h, L, dh) already scaled by the temperature, k and v (B*h, S, dh); a kv batch of 1 broadcasts."""
        B, L, d = q_in.shape
        Bk, S, _ = kv_in.shape
        h = self.heads
        dh = d // h
        q = self.query(q_in).view(B, L, h, dh).transpose(1, 2).reshape(B * h, L, dh)  # (B*h, L, dh)
        k = self.key(kv_in).view(Bk, S, h, dh).transpose(1, 2)  # (Bk, h, S, dh)
        v = self.value(kv_in).view(Bk, S, h, dh).transpose(1, 2)  # (Bk, h, S, dh)
        k = k.expand(B, h, S, dh).reshape(B * h, S, dh)  # (B*h, S, dh); only the small K/V are copied
        v = v.expand(B, h, S, dh).reshape(B * h, S, dh)
        # tau*(Q K^T) == (tau*Q) K^T: scaling the small Q keeps autograd from saving an extra (L, S) map.
        return q * self.temperature, k, v

    def _merge(self, out: Tensor, B: int) -> Tensor:
        """(B*h, L, dh) -> (B, L, h*dh), heads concatenated, through the output projection if there is one."""
        _, L, dh = out.shape
        out = out.view(B, self.heads, L, dh).transpose(1, 2).reshape(B, L, self.heads * dh)
        return self.out_proj(out) if self.out_proj is not None else out

    def _sigma(self, q_in: Tensor) -> Tensor:
        # From the raw layer input, laid out (B, L, heads, 2) as the reference; index 0 is sigma_y.
        B, L, _ = q_in.shape
        return sigma_map(self.sigma(q_in).view(B, L, self.heads, 2).transpose(1, 2))  # (B, h, L, 2)

    def forward(self, q_in: Tensor, kv_in: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """q_in (B, L, d); kv_in (B or 1, S, d), a batch of 1 broadcasts over B (the expanded reference).

        Returns out (B, L, d), attention (B, heads, L, S), sigma (B, heads, L, 2). With dropout > 0 the
        returned attention is the one before dropout (the map the losses and scores are about).
        """
        B, L, _ = q_in.shape
        q, k, v = self._project(q_in, kv_in)
        attn = torch.softmax(torch.bmm(q, k.transpose(1, 2)), dim=-1)  # (B*h, L, S)
        out = self._merge(torch.bmm(self.drop(attn), v), B)
        return out, attn.view(B, self.heads, L, -1), self._sigma(q_in)

    def trained(self, q_in: Tensor, kv_in: Tensor, axes: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple]:
        """Training without maps: the output (B, L, d) and the loss terms (D_t, D_a, H), each (B, heads, L), of
        each attention row against its Gaussian target (edcli.method.fused; matrix products under the caller's
        autocast dtype, the rest in fp32)."""
        B, L, _ = q_in.shape
        q, k, v = self._project(q_in, kv_in)
        sigma = self._sigma(q_in)
        dev = q_in.device.type
        with torch.autocast(dev, enabled=False):
            ry, rx = row_factors(sigma, *axes)  # (B, h, L, H), (B, h, L, W)
        # Under autocast the chunked products run in its dtype on a GPU; on the CPU they stay fp32: with K = d_head
        # they are too small for bf16 to pay for its casts (measured 2x slower than fp32 per chunk)
        mm = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) and dev != "cpu" else None
        out, d_t, d_a, ent = attention_correlation(q, k, v, ry.flatten(0, 1), rx.flatten(0, 1), EPS, mm)
        return self._merge(out, B), tuple(t.view(B, self.heads, L) for t in (d_t, d_a, ent))

    def attend(self, q_in: Tensor, kv_in: Tensor) -> Tensor:
        """Only the output (B, L, d), through the fused attention kernel: no (L, S) map is kept (inference)."""
        q, k, v = self._project(q_in, kv_in)
        p = self.drop.p if self.training else 0.0
        return self._merge(F.scaled_dot_product_attention(q, k, v, dropout_p=p, scale=1.0), q_in.shape[0])

    def scored(self, q_in: Tensor, kv_in: Tensor, axes: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """Inference: the output (B, L, d) and each token's symmetric KL between its attention row and its
        Gaussian target, averaged over heads (B, L), in fp32.

        Heads go through in groups (edcli.method.dispatch: on the CPU maps of at most SCORE_GROUP_ELEMENTS values,
        on a GPU all heads at once when the memory allows), each map consumed in place in two buffers that every
        group reuses (the logits, the KL's log ratio): on the CPU the working set stays small and no map-sized
        buffer is mapped (and page-faulted) afresh per group. Without autograd (LevelModel's score mode)."""
        B, L, _ = q_in.shape
        q, k, v = self._project(q_in, kv_in)  # (B*h, L, dh), (B*h, S, dh) x2
        sigma = self._sigma(q_in)  # under the caller's autocast, as in training; sigma_map returns >= fp32
        with torch.autocast(q_in.device.type, enabled=False):
            ry, rx = row_factors(sigma, *axes)  # (B, h, L, H), (B, h, L, W)
        ry, rx = ry.flatten(0, 1), rx.flatten(0, 1)  # (B*h, L, .), rows in the order of q
        S, wide = k.shape[1], compute_dtype(q)  # wide: fp32 (fp64 if q is) for the softmax and the KL
        per_value = SCORE_BUFFERS * wide.itemsize
        chunk = dispatch.attention_chunk(q, q.shape[0] * L * S, per_value, SCORE_GROUP_ELEMENTS)
        group = max(1, chunk // (L * S))
        vt, narrow = v.transpose(1, 2), v.shape[-1] < NARROW_HEAD  # (B*h, dh, S)
        # the two map-sized buffers every group reuses: the logits (q's dtype) and the KL's log ratio (wide)
        first = min(group, q.shape[0])
        buf, work = q.new_empty(first, L, S), torch.empty(first, L, S, dtype=wide, device=q.device)
        outs, kls = [], []
        for g in range(0, q.shape[0], group):
            sl = slice(g, g + group)
            n = min(group, q.shape[0] - g)
            logits = torch.bmm(q[sl], k[sl].transpose(1, 2), out=buf[:n])  # (g, L, S)
            # Softmax in place when the logits are fp32 (or fp64); under autocast they are cast to fp32 first.
            attn = torch.softmax(logits, -1, out=logits) if logits.dtype == wide else logits.to(wide).softmax(-1)
            pa = attn.to(v.dtype)
            # (attn v)ᵀ = vᵀ attnᵀ is the faster GEMM on the CPU for narrow heads (measured at 1024 x 1024: 2.3x
            # with d_head 8, 10% slower from 16 on)
            outs.append(torch.bmm(vt[sl], pa.transpose(1, 2)).transpose(1, 2) if narrow else torch.bmm(pa, v[sl]))
            with torch.autocast(q_in.device.type, enabled=False):
                kls.append(sym_kl_rows_(attn, ry[sl], rx[sl], work=work[:n]))  # (g, L); attn is overwritten
        kl = torch.cat(kls).view(B, self.heads, L)
        return self._merge(torch.cat(outs), B), kl.mean(1)
