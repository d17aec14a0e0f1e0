"""A naive oracle of one ED level, written straight from method.md §3.1, §3.4 and §3.5.

It shares no maths with edcli.method.model / edcli.method.loss: its own positional encoding, distances, attention
with the full Gaussian T = 1/(2π σy σx) exp(−dy/(2σy²) − dx/(2σx²)) normalised as T/ΣT, its own KL/entropy, the
reference repeated (not expanded) to the batch, and the reference's two-backward-pass step. Its module tree uses the
same parameter names as edcli.method.model.LevelModel, so both compute on identical weights.

The helpers at the end were in src but only tests used them; the first two compose edcli.method.prior's pieces.

API
    oracle_from_level(level: LevelModel) -> OracleLevel
        a copy with the level's configuration, parameters and reference features (dx/dy/positional encoding are
        recomputed here, not copied); same dtype and device as the level's parameters.
    OracleLevel.forward(x (B, L, C)) -> (recon (B, L, C), intra, inter)
        intra / inter: list over layers of (P (B, heads, L, L), T (B, heads, L, L) un-normalised), or None.
    oracle_level_forward(model: OracleLevel, x) -> OracleOutput(recon, P_intra, T_intra, P_inter, T_inter)
        every map a list over layers of full (B, heads, L, L) tensors; T_* are row-normalised (T̄ = T/ΣT);
        None for a branch that is off. For scoring tests.
    oracle_losses(model, x, lambda1=0.5, lambda2=0.5) -> (loss1, loss2, terms: dict of 0-d tensors)
    oracle_backward(model, x, lambda1=0.5, lambda2=0.5) -> terms
        zero_grad; loss1.backward(retain_graph=True); loss2.backward()  (the reference's training step, no
        optimizer step).
    kl(p, q), entropy(p): (B, heads, L, L) -> (B, L), the reference's formulas with eps 1e-4.
    oracle_target(sigma (B, heads, L, 2), dx, dy) -> T (B, heads, L, L), with the 1/(2π σy σx) prefactor.
    oracle_distances(H, W) -> (dx, dy); oracle_pos_embedding(d, H, W) -> (H*W, d).

Test-only helpers (formerly in src)
    gaussian_target(sigma (..., L, 2), dx, dy) -> T̄ (..., L, L) fp32, the full map from edcli.method.prior's
        separable row factors (grid_axes, row_factors, outer).
    sym_kl(p, q) -> (B, L): KL(p, q) + KL(q, p) per row averaged over heads, via edcli.method.prior.rowdot.
    kl_rows(p, q), entropy_rows(p): (B, heads, L, L) -> (B, L), as kl / entropy with an eps argument.
    count_trainable(module) -> int: the number of trainable parameters.
    best_f1_threshold(labels, scores) -> float | None: the lowest threshold reaching F1-max (edcli.metrics).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from edcli.method.prior import grid_axes, outer, row_factors, rowdot

EPS = 1e-4


def oracle_distances(H: int, W: int) -> tuple[torch.Tensor, torch.Tensor]:
    rows = np.array([i // W for i in range(H * W)], dtype=np.float64)
    cols = np.array([i % W for i in range(H * W)], dtype=np.float64)
    dx = np.subtract.outer(cols, cols) ** 2
    dy = np.subtract.outer(rows, rows) ** 2
    return torch.from_numpy(dx).float(), torch.from_numpy(dy).float()


def oracle_pos_embedding(d: int, H: int, W: int) -> torch.Tensor:
    """(H*W, d): channels [0, d/2) from the column index, [d/2, d) from the row index; even sin, odd cos."""
    half = d // 2
    pe = torch.zeros(d, H, W, dtype=torch.float64)
    for i in range(half // 2):
        f = 10000.0 ** (-2.0 * i / half)
        for c in range(W):
            pe[2 * i, :, c] = math.sin(c * f)
            pe[2 * i + 1, :, c] = math.cos(c * f)
        for r in range(H):
            pe[half + 2 * i, r, :] = math.sin(r * f)
            pe[half + 2 * i + 1, r, :] = math.cos(r * f)
    return pe.reshape(d, H * W).t().float()


class _Emb(nn.Module):
    def __init__(self, C, d):
        super().__init__()
        self.proj = nn.Conv1d(C, d, kernel_size=1)

    def forward(self, x, pos):  # x (B, L, C)
        return self.proj(x.permute(0, 2, 1)).transpose(1, 2) + pos


class _Attention(nn.Module):
    def __init__(self, d, heads, learn_tau, out_proj):
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(d, d)
        self.key = nn.Linear(d, d)
        self.value = nn.Linear(d, d)
        self.sigma = nn.Linear(d, 2 * heads)
        self.out_proj = nn.Linear(d, d) if out_proj else None
        tau = 1.0 / math.sqrt(d // heads)
        self.temperature = nn.Parameter(torch.tensor(tau)) if learn_tau else tau

    def forward(self, query, key, value, dx, dy):
        B, L, _ = query.shape
        _, S, _ = key.shape
        h = self.heads
        sig = self.sigma(query).view(B, L, h, -1)
        q = self.query(query).view(B, L, h, -1)
        k = self.key(key).view(B, S, h, -1)
        v = self.value(value).view(B, S, h, -1)
        scores = self.temperature * torch.einsum("blhe,bshe->bhls", q, k)
        P = torch.softmax(scores, dim=-1)
        out = torch.einsum("bhls,bshd->blhd", P, v).reshape(B, L, -1)
        if self.out_proj is not None:
            out = self.out_proj(out)
        sig = sig.transpose(1, 2)  # (B, h, L, 2)
        sig = torch.sigmoid(sig * 5) + 1e-5
        sig = torch.pow(3, sig) - 1
        return out, P, oracle_target(sig, dx, dy)


def oracle_target(sig, dx, dy):
    """Un-normalised T (B, h, L, S) from sigma (B, h, L, 2) (index 0 = sigma_y) and dx, dy (L, S)."""
    B, h, L, _ = sig.shape
    S = dx.shape[-1]
    s1 = sig[..., 0].unsqueeze(-1).repeat(1, 1, 1, S)
    s2 = sig[..., 1].unsqueeze(-1).repeat(1, 1, 1, S)
    DX = dx.unsqueeze(0).unsqueeze(0).repeat(B, h, 1, 1)
    DY = dy.unsqueeze(0).unsqueeze(0).repeat(B, h, 1, 1)
    return 1.0 / (2 * math.pi * s1 * s2) * torch.exp(-DY / (2 * s1**2) - DX / (2 * s2**2))


class _Fusion(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.fc1 = nn.Linear(2 * d, 4 * d)
        self.fc2 = nn.Linear(4 * d, d)

    def forward(self, u, v):
        return self.fc2(torch.relu(self.fc1(torch.cat((u, v), dim=2))))


class _EDMlp(nn.Module):
    def __init__(self, d, hidden, H, W):
        super().__init__()
        self.H, self.W = H, W
        self.fc1 = nn.Linear(d, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)
        self.g = nn.Parameter(torch.ones(hidden))
        self.fc2 = nn.Linear(hidden, d)

    def forward(self, x):
        B, L, _ = x.shape
        x = self.fc1(x)
        C = x.shape[2]
        x = self.dwconv(x.transpose(1, 2).view(B, C, self.H, self.W)).flatten(2).transpose(1, 2)
        x = nn.functional.gelu(x)
        med = torch.median(x, dim=1, keepdim=True)[0]
        x = x + self.g * med
        return self.fc2(x)


class _FODMlp(nn.Module):
    def __init__(self, d, hidden):
        super().__init__()
        self.fc1 = nn.Linear(d, hidden)
        self.fc2 = nn.Linear(hidden, d)

    def forward(self, x):
        return self.fc2(nn.functional.gelu(self.fc1(x)))


class _Layer(nn.Module):
    def __init__(self, d, heads, H, W, ffn_ratio, arch, intra, inter, out_proj):
        super().__init__()
        ed = arch == "ed"
        self.intra_attn = _Attention(d, heads, ed, out_proj) if intra else None
        self.inter_attn = _Attention(d, heads, ed, out_proj) if inter else None
        self.fusion = _Fusion(d) if (ed and intra and inter) else None
        self.norm1 = nn.LayerNorm(d)
        self.norm2 = nn.LayerNorm(d)
        self.ffn = _EDMlp(d, ffn_ratio * d, H, W) if ed else _FODMlp(d, ffn_ratio * d)

    def forward(self, x, ref, dx, dy):
        intra = inter = None
        if self.intra_attn is not None and self.inter_attn is not None:
            a1, P1, T1 = self.intra_attn(x, x, x, dx, dy)
            a2, P2, T2 = self.inter_attn(x, ref, ref, dx, dy)
            u, v = x + a1, x + a2
            z = self.fusion(u, v) if self.fusion is not None else u - v
            intra, inter = (P1, T1), (P2, T2)
        elif self.intra_attn is not None:
            a1, P1, T1 = self.intra_attn(x, x, x, dx, dy)
            z = x + a1
            intra = (P1, T1)
        else:
            a2, P2, T2 = self.inter_attn(x, ref, ref, dx, dy)
            z = x + a2
            inter = (P2, T2)
        z = self.norm1(z)
        return self.norm2(z + self.ffn(z)), intra, inter


class OracleLevel(nn.Module):
    def __init__(self, channels, grid, d_model, heads, layers, ffn_ratio, arch, intra, inter, attn_out_proj):
        super().__init__()
        H, W = grid
        self.embed = _Emb(channels, d_model)
        self.ref_embed = _Emb(channels, d_model) if inter else None
        self.layers = nn.ModuleList(
            _Layer(d_model, heads, H, W, ffn_ratio, arch, intra, inter, attn_out_proj) for _ in range(layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.proj = nn.Linear(d_model, channels)
        dx, dy = oracle_distances(H, W)
        self.register_buffer("ref", torch.zeros(channels, H * W))
        self.register_buffer("o_dx", dx, persistent=False)
        self.register_buffer("o_dy", dy, persistent=False)
        self.register_buffer("o_pos", oracle_pos_embedding(d_model, H, W), persistent=False)

    def forward(self, x):
        B = x.shape[0]
        emb = self.embed(x, self.o_pos)
        ref = None
        if self.ref_embed is not None:
            ref = self.ref_embed(self.ref.t().unsqueeze(0), self.o_pos).repeat(B, 1, 1)
        intra, inter = [], []
        for layer in self.layers:
            emb, a, b = layer(emb, ref, self.o_dx, self.o_dy)
            intra.append(a)
            inter.append(b)
        recon = self.proj(self.norm(emb))
        return recon, (intra if intra[0] is not None else None), (inter if inter[0] is not None else None)


def oracle_from_level(level) -> OracleLevel:
    o = OracleLevel(
        level.channels,
        level.grid,
        level.d_model,
        level.heads,
        level.num_layers,
        level.ffn_ratio,
        level.arch,
        level.intra,
        level.inter,
        level.attn_out_proj,
    )
    p = next(level.parameters())
    o = o.to(device=p.device, dtype=p.dtype)
    state = {k: v for k, v in level.state_dict().items() if k not in ("dx", "dy")}
    o.load_state_dict(state, strict=True)
    return o


class OracleOutput(NamedTuple):
    recon: torch.Tensor
    P_intra: list | None
    T_intra: list | None
    P_inter: list | None
    T_inter: list | None


def oracle_level_forward(model: OracleLevel, x) -> OracleOutput:
    recon, intra, inter = model(x)

    def split(branch):
        if branch is None:
            return None, None
        return [P for P, _ in branch], [T / torch.sum(T, dim=-1, keepdim=True) for _, T in branch]

    return OracleOutput(recon, *split(intra), *split(inter))


def kl(p, q):
    res = p * (torch.log(p + EPS) - torch.log(q + EPS))
    return torch.mean(torch.sum(res, dim=-1), dim=1)


def entropy(p):
    return torch.mean(-torch.sum(p * torch.log(p + EPS), dim=-1), dim=1)


def oracle_losses(model: OracleLevel, x, lambda1=0.5, lambda2=0.5):
    recon, intra, inter = model(x)
    rec = torch.mean((recon - x) ** 2) + torch.mean(1 - torch.cosine_similarity(recon, x, dim=-1))
    terms = {"rec": rec}
    for name, branch in (("intra", intra), ("inter", inter)):
        l1 = l2 = lh = 0.0
        if branch is not None:
            for P, T in branch:
                Tn = T / torch.unsqueeze(torch.sum(T, dim=-1), dim=-1)
                l1 = l1 + torch.mean(kl(Tn.detach(), P)) + torch.mean(kl(P, Tn.detach()))
                l2 = l2 + torch.mean(kl(Tn, P.detach())) + torch.mean(kl(P.detach(), Tn))
                lh = lh + torch.mean(entropy(P))
            n = len(branch)
            l1, l2, lh = l1 / n, l2 / n, lh / n
        terms[name + "1"], terms[name + "2"], terms[name + "_ent"] = l1, l2, lh
    loss1 = rec + lambda1 * terms["intra2"] - lambda1 * terms["inter2"]
    loss2 = (
        rec
        - lambda1 * terms["intra1"]
        - lambda2 * terms["intra_ent"]
        + lambda1 * terms["inter1"]
        + lambda2 * terms["inter_ent"]
    )
    return loss1, loss2, terms


def oracle_backward(model: OracleLevel, x, lambda1=0.5, lambda2=0.5) -> dict:
    model.zero_grad(set_to_none=True)
    loss1, loss2, terms = oracle_losses(model, x, lambda1, lambda2)
    loss1.backward(retain_graph=True)
    loss2.backward()
    return {k: (v.detach() if torch.is_tensor(v) else torch.tensor(v)) for k, v in terms.items()}


def oracle_two_backward(model: OracleLevel, x, lambda1=0.5, lambda2=0.5) -> None:
    """The reference's backward passes of one level (gradients accumulate; no zero_grad here)."""
    loss1, loss2, _ = oracle_losses(model, x, lambda1, lambda2)
    loss1.backward(retain_graph=True)
    loss2.backward()


def oracle_train(
    models: list, batches: list, lr: float = 1e-4, mode: str = "reference", backward=None, fused: bool = False
) -> None:
    """The reference's training loop over `batches` (a list of per-level inputs [x_0, x_1, ...]).

    mode "reference" (torch 1.13.1 as pinned by the seed): ONE torch.optim.Adam over every level's parameters;
    per batch, for each level in turn: zero_grad(set_to_none=False) -> backward -> step. The zero-filled (not
    removed) gradients make each step also update the other levels with a zero gradient from the second batch on.
    mode "per-level" (torch 2 semantics, one Adam per level): zero_grad(set_to_none=True) -> backward -> step.
    backward(model, x) does the backward pass(es); default oracle_two_backward. fused: torch's one-kernel Adam
    (the same update; edcli's choice in reference mode) instead of the loop over tensors.
    """
    import itertools

    backward = backward or oracle_two_backward
    if mode == "reference":
        shared = torch.optim.Adam(itertools.chain(*(m.parameters() for m in models)), lr=lr, fused=fused or None)
        opts = [shared] * len(models)
    else:
        opts = [torch.optim.Adam(m.parameters(), lr=lr) for m in models]
    for xs in batches:
        for model, opt, x in zip(models, opts, xs):
            opt.zero_grad(set_to_none=mode != "reference")
            backward(model, x)
            opt.step()


# ---------------------------------------------------------------------------------------------- test-only helpers


def gaussian_target(sigma: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """Row-normalised target T̄ = T/ΣT (..., L, L) in fp32 from sigma (..., L, 2) (index 0 is sigma_y)."""
    with torch.autocast(sigma.device.type, enabled=False):
        return outer(*row_factors(sigma, *grid_axes(dx, dy)))


def sym_kl(p: torch.Tensor, q: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """KL(p, q) + KL(q, p) per row, averaged over heads: (B, heads, L, L) -> (B, L), as
    Σ_j (p − q)(log(p+ε) − log(q+ε))."""
    return rowdot(p - q, torch.log(p + eps) - torch.log(q + eps)).mean(-2)


def kl_rows(p: torch.Tensor, q: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Σ_j p (log(p+ε) − log(q+ε)) averaged over heads: (B, heads, L, L) -> (B, L)."""
    return (p * (torch.log(p + eps) - torch.log(q + eps))).sum(-1).mean(-2)


def entropy_rows(p: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """−Σ_j p log(p+ε) averaged over heads: (B, heads, L, L) -> (B, L)."""
    return -(p * torch.log(p + eps)).sum(-1).mean(-2)


def count_trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def best_f1_threshold(labels, scores) -> float | None:
    """The lowest threshold reaching F1-max (score >= threshold is anomalous), from edcli.metrics' F1 curve."""
    from edcli.metrics import _both_classes, _f1_curve, _labels_scores

    y, s = _labels_scores(labels, scores)
    if not _both_classes(y):
        return None
    f1, thresholds = _f1_curve(y, s)
    return float(thresholds[int(np.argmax(f1))])  # thresholds ascend, so argmax's first hit is the lowest
