"""ED's training objective (method.md §3.5): reconstruction plus the KL/entropy "correlation game".

The reference runs two backward passes per step (loss1 with the attention P detached, loss2 with the target
T̄ detached). Their gradients add up, so `ed_objective(...).total.backward()` gives exactly the same gradients in
one pass:  total = 2*rec + Σ_branch s*λ1*(D_t − D_a) − s*λ2*H  (s = +1 intra, −1 inter), where D_t and D_a
have the value of the symmetric KL but pass gradient only into T̄ and only into P respectively.

The per-(P, T̄) maths is one autograd Function that shares the logarithms and writes the analytic gradients
directly, and T̄ is never built through autograd: it is separable over the grid (edcli.method.prior), so only the
small row factors get gradients. All of it runs in fp32 (or fp64 if given) with autocast off.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from edcli.errors import ConfigError
from edcli.method.model import LevelOutput
from edcli.method.prior import EPS, compute_dtype, grid_axes, row_factors, rowdot


class LossTerms(NamedTuple):
    total: Tensor  # what to call .backward() on; equals loss1 + loss2 of the reference in value and gradient
    rec: Tensor
    intra1: Tensor  # mean sym-KL with gradient into the attention (value equals intra2)
    intra2: Tensor  # mean sym-KL with gradient into the target
    intra_ent: Tensor
    inter1: Tensor
    inter2: Tensor
    inter_ent: Tensor


class _Correlation(torch.autograd.Function):
    """Rows of one (P, T̄) pair: D = Σ_j (t − p)(log(t+ε) − log(p+ε)) = KL(T̄,P) + KL(P,T̄) and H = −Σ_j p log(p+ε).

    T̄ comes as its row factors ry (..., L, H), rx (..., L, W) (t = ry ⊗ rx). Outputs D_t, D_a, H (each (..., L)):
    D_t and D_a have the same value; D_t sends gradient only into the target, D_a only into P.
    With d = log(t+ε) − log(p+ε) the gradients are
      ∂D/∂t = d + 1 − e^(−d),   ∂D/∂p = −(d + e^d) + 1,   ∂H/∂p = −(log(p+ε) − ε/(p+ε)) − 1.
    Every full (L, L) intermediate is written in place where possible: on CPU each fresh large buffer costs
    page faults comparable to the arithmetic.
    """

    @staticmethod
    def forward(ctx, p: Tensor, ry: Tensor, rx: Tensor, eps: float):
        ctx.set_materialize_grads(False)
        with torch.autocast(p.device.type, enabled=False):
            N = p.shape[:-2].numel() * p.shape[-2]  # rows
            H, W = ry.shape[-1], rx.shape[-1]
            ry3, rx3 = ry.reshape(N, H, 1), rx.reshape(N, 1, W)
            # (N, H, W): log(t + ε). A broadcast product then add_ is ~10x faster on CPU than addcmul's broadcast.
            d = torch.mul(ry3, rx3).add_(eps).log_()
            lp = torch.add(p, eps).log_()  # (..., L, L): log(p + ε)
            d = d.view(p.shape).sub_(lp)  # log(t+ε) − log(p+ε)
            # Σ_j t_j d_j = ry^T d rx per row (t is separable), then the rest as row dot products.
            td = (ry3.transpose(1, 2) @ d.view(N, H, W) @ rx3.transpose(1, 2)).view(p.shape[:-1])
            D = td - rowdot(p, d)
            Hrow = -rowdot(p, lp)
        ctx.eps = eps
        ctx.save_for_backward(p, ry, rx, lp, d)
        return D, D.clone(), Hrow

    @staticmethod
    def backward(ctx, g_dt, g_da, g_h):
        p, ry, rx, lp, d = ctx.saved_tensors
        eps = ctx.eps
        want_p = ctx.needs_input_grad[0] and (g_da is not None or g_h is not None)
        want_t = g_dt is not None and (ctx.needs_input_grad[1] or ctx.needs_input_grad[2])
        grad_p = grad_ry = grad_rx = buf = None
        with torch.autocast(p.device.type, enabled=False):
            r = torch.exp(d)  # e^d = (t+ε)/(p+ε)
            if want_t:
                H, W = ry.shape[-1], rx.shape[-1]
                n = ry.shape[:-1].numel()
                buf = torch.reciprocal(r)
                m = torch.sub(d, buf, out=buf).view(n, H, W)  # d − e^(−d)
                # ∂D/∂t = m + 1; chain through t = ry ⊗ rx, with Σ rx = Σ ry = 1 taking the "+1" analytically.
                grad_ry = (m @ rx.reshape(n, W, 1)).view(ry.shape) + rx.sum(-1, keepdim=True)
                grad_rx = (ry.reshape(n, 1, H) @ m).view(rx.shape) + ry.sum(-1, keepdim=True)
                grad_ry = grad_ry * g_dt.unsqueeze(-1)
                grad_rx = grad_rx * g_dt.unsqueeze(-1)
            if want_p:
                const = torch.zeros_like(d[..., :1])  # the per-row constant part of ∂/∂p
                grad_p = torch.zeros_like(p) if g_da is None else None
                if g_da is not None:
                    ga = g_da.unsqueeze(-1)
                    const = const + ga
                    grad_p = r.add_(d).mul_(-ga)  # −g_da (d + e^d)
                if g_h is not None:
                    gh = g_h.unsqueeze(-1)
                    const = const - gh
                    # Reuse the (L, L) buffer of the target branch when there is one.
                    x2 = (torch.add(p, eps) if buf is None else torch.add(p, eps, out=buf)).reciprocal_()
                    x2 = torch.add(lp, x2, alpha=-eps, out=x2)  # log(p+ε) − ε/(p+ε)
                    grad_p.addcmul_(x2, -gh)
                grad_p.add_(const)
        return grad_p, grad_ry, grad_rx, None


def _pair_means(p: Tensor, sigma: Tensor, dy_rows: Tensor, dx_cols: Tensor, eps: float):
    """Means over (layers, B, heads, L) of D_t, D_a and H for one branch."""
    dtype = compute_dtype(p)
    with torch.autocast(p.device.type, enabled=False):
        ry, rx = row_factors(sigma.to(dtype), dy_rows, dx_cols)
        D_t, D_a, H = _Correlation.apply(p.to(dtype), ry, rx, eps)
        return D_t.mean(), D_a.mean(), H.mean()


def reconstruction_loss(recon: Tensor, x: Tensor) -> Tensor:
    """MSE + mean(1 − cosine similarity along channels), in fp32."""
    dtype = compute_dtype(recon)
    recon, x = recon.to(dtype), x.to(dtype)
    return F.mse_loss(recon, x) + (1 - F.cosine_similarity(recon, x, dim=-1)).mean()


def ed_objective(
    out: LevelOutput, x: Tensor, dx: Tensor, dy: Tensor, lambda1: float = 0.5, lambda2: float = 0.5, eps: float = EPS
) -> LossTerms:
    """One level's loss terms; `total.backward()` gives the gradients of the reference's two backward passes."""
    rec = reconstruction_loss(out.recon, x)
    total = 2 * rec  # rec appears in both loss1 and loss2
    zero = rec.detach().new_zeros(())
    vals = {}
    axes = None
    for name, attn, sigma, fused, sign in (
        ("intra", out.intra_attn, out.intra_sigma, out.intra_terms, 1.0),
        ("inter", out.inter_attn, out.inter_sigma, out.inter_terms, -1.0),
    ):
        if fused is not None:  # branches="train": the model computed the row terms with its maps (eps = EPS)
            d_t, d_a, ent = (t.mean() for t in fused)
            total = total + sign * lambda1 * (d_t - d_a) - sign * lambda2 * ent
            vals[name] = (d_a.detach(), d_t.detach(), ent.detach())
            continue
        if attn is None:
            vals[name] = (zero, zero, zero)
            continue
        if sigma is None:
            raise ConfigError(f"the {name} branch has attention maps but no sigma; run the model with branches='all'")
        if axes is None:
            axes = grid_axes(dx, dy)
        d_t, d_a, ent = _pair_means(attn, sigma, *axes, eps)
        # intra (s=+1): λ1*intra2 − λ1*intra1 − λ2*H ; inter (s=−1): −λ1*inter2 + λ1*inter1 + λ2*H
        total = total + sign * lambda1 * (d_t - d_a) - sign * lambda2 * ent
        vals[name] = (d_a.detach(), d_t.detach(), ent.detach())
    return LossTerms(total, rec.detach(), *vals["intra"], *vals["inter"])
