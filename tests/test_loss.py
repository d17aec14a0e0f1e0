"""edcli.method.loss: the target, the divergences, and one-backward gradients equal to the reference's two passes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from oracle import (
    entropy,
    entropy_rows,
    gaussian_target,
    kl,
    kl_rows,
    oracle_backward,
    oracle_distances,
    oracle_from_level,
    oracle_losses,
    oracle_target,
    sym_kl,
)

from edcli.errors import ConfigError
from edcli.method.loss import (
    _Correlation,
    ed_objective,
    reconstruction_loss,
)
from edcli.method.model import LevelModel
from edcli.method.prior import grid_axes, grid_distances

C, GRID, D, HEADS, LAYERS = 24, (6, 6), 32, 4, 2
L = GRID[0] * GRID[1]


@pytest.fixture(autouse=True)
def _tiny(one_thread):
    """These tensors are tiny: run them on one intra-op thread (see conftest.one_thread)."""


MODES = [{}, {"arch": "fod"}, {"intra": False}, {"inter": False}, {"attn_out_proj": True}]


def small(seed=0, dtype=torch.float64, **kw):
    torch.manual_seed(seed)
    m = LevelModel(C, GRID, torch.randn(C, L), D, heads=HEADS, layers=LAYERS, **kw)
    return m.to(dtype)


def rand_sigma(*shape, dtype=torch.float64):
    return torch.rand(*shape, 2, dtype=dtype) * 1.5 + 0.05


@pytest.mark.parametrize("grid", [(6, 6), (3, 5)])
def test_gaussian_target_rows_sum_to_one_and_equal_the_oracle(grid):
    torch.manual_seed(0)
    H, W = grid
    dx, dy = grid_distances(grid)
    sigma = rand_sigma(2, 3, H * W)
    T = gaussian_target(sigma, dx, dy)
    assert T.shape == (2, 3, H * W, H * W) and T.dtype == torch.float64
    torch.testing.assert_close(T.sum(-1), torch.ones(2, 3, H * W, dtype=torch.float64))
    odx, ody = oracle_distances(H, W)
    T_oracle = oracle_target(sigma, odx.double(), ody.double())
    torch.testing.assert_close(T, T_oracle / T_oracle.sum(-1, keepdim=True))


def test_gaussian_target_is_fp32_and_stable_at_the_sigma_floor():
    dx, dy = grid_distances((4, 4))
    sigma = torch.full((1, 1, 16, 2), 3**1e-5 - 1, dtype=torch.bfloat16)
    T = gaussian_target(sigma, dx, dy)
    assert T.dtype == torch.float32
    torch.testing.assert_close(T[0, 0], torch.eye(16))  # all the mass on the token itself


def test_grid_axes_rejects_matrices_that_are_not_a_grid():
    dx, dy = grid_distances((3, 4))
    dy_rows, dx_cols = grid_axes(dx, dy)
    assert dy_rows.shape == (12, 3) and dx_cols.shape == (12, 4)
    with pytest.raises(ConfigError, match="ed distmaps"):
        grid_axes(dx, torch.rand(12, 12))
    with pytest.raises(ConfigError, match="ed distmaps"):
        grid_axes(dy, dx)  # swapped
    bent = dx.clone()
    bent[0, 5] += 1
    with pytest.raises(ConfigError, match="ed distmaps"):
        grid_axes(bent, dy)
    with pytest.raises(ConfigError):
        grid_axes(dx[:6], dy)


def _rand_rows(*shape):
    return torch.softmax(torch.randn(*shape, dtype=torch.float64) * 3, dim=-1)


def test_kl_entropy_and_sym_kl_match_the_formulas():
    torch.manual_seed(0)
    p, q = _rand_rows(2, 3, 5, 5), _rand_rows(2, 3, 5, 5)
    eps = 1e-4
    want_kl = (p * (torch.log(p + eps) - torch.log(q + eps))).sum(-1).mean(1)
    torch.testing.assert_close(kl_rows(p, q), want_kl)
    torch.testing.assert_close(kl_rows(p, q), kl(p, q))
    torch.testing.assert_close(entropy_rows(p), -(p * torch.log(p + eps)).sum(-1).mean(1))
    torch.testing.assert_close(entropy_rows(p), entropy(p))
    torch.testing.assert_close(sym_kl(p, q), kl_rows(p, q) + kl_rows(q, p))
    assert kl_rows(p, q).shape == (2, 5)
    assert torch.all(kl_rows(p, q) > 0)
    torch.testing.assert_close(kl_rows(p, p), torch.zeros(2, 5, dtype=torch.float64))


def test_reconstruction_loss():
    torch.manual_seed(0)
    r, x = torch.randn(2, 7, 5, dtype=torch.float64), torch.randn(2, 7, 5, dtype=torch.float64)
    cos = (r * x).sum(-1) / (r.norm(dim=-1) * x.norm(dim=-1))
    torch.testing.assert_close(reconstruction_loss(r, x), ((r - x) ** 2).mean() + (1 - cos).mean())
    assert reconstruction_loss(x, x).item() == pytest.approx(0.0, abs=1e-12)


def test_correlation_function_gradients_are_the_analytic_ones():
    """Numerical check of the hand-written backward: t-path with P fixed, P-path with the target fixed.

    P is not row-normalised here on purpose, so the per-row constant terms of the gradient are checked too."""
    torch.manual_seed(0)
    N, H, W = 3, 2, 3
    p = (torch.rand(N, H * W, dtype=torch.float64) * 0.9 + 0.05).requires_grad_()
    ry = _rand_rows(N, H).requires_grad_()
    rx = _rand_rows(N, W).requires_grad_()
    eps = 1e-2  # a larger eps keeps finite differences well conditioned

    def target_side(ry_, rx_):
        return _Correlation.apply(p.detach(), ry_, rx_, eps)[0]

    def attention_side(p_):
        _, d_a, h = _Correlation.apply(p_, ry.detach(), rx.detach(), eps)
        return d_a, h

    assert torch.autograd.gradcheck(target_side, (ry, rx))
    assert torch.autograd.gradcheck(attention_side, (p,))
    # and the value is the symmetric KL / the entropy of the formulas
    t = (ry[:, :, None] * rx[:, None, :]).reshape(N, H * W)
    d_t, d_a, h = _Correlation.apply(p, ry, rx, eps)
    lp, lt = torch.log(p + eps), torch.log(t + eps)
    want = (p * (lp - lt)).sum(-1) + (t * (lt - lp)).sum(-1)
    torch.testing.assert_close(d_t, want)
    torch.testing.assert_close(d_a, want)
    torch.testing.assert_close(h, -(p * torch.log(p + eps)).sum(-1))


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def _both(kw, dtype, seed=0, B=2):
    m = small(seed=seed, dtype=dtype, **kw)
    x = torch.randn(B, L, C, dtype=dtype)
    o = oracle_from_level(m)
    ref_terms = oracle_backward(o, x)
    m.zero_grad(set_to_none=True)
    terms = ed_objective(m(x), x, m.dx, m.dy)
    terms.total.backward()
    return _grads(m), _grads(o), terms, ref_terms


@pytest.mark.parametrize("kw", MODES)
def test_one_backward_equals_the_reference_two_backwards_fp64(kw):
    mine, ref, terms, ref_terms = _both(kw, torch.float64)
    assert mine.keys() == ref.keys()
    scale = max(g.abs().max().item() for g in ref.values())
    for name in ref:
        # key biases get exactly zero gradient in theory (softmax is shift-invariant): compare them to the scale
        torch.testing.assert_close(mine[name], ref[name], rtol=1e-4, atol=1e-10 * scale, msg=name)
    for k in ("rec", "intra1", "intra2", "intra_ent", "inter1", "inter2", "inter_ent"):
        assert getattr(terms, k).item() == pytest.approx(float(ref_terms[k]), rel=1e-10, abs=1e-12), k


@pytest.mark.parametrize("kw", MODES)
def test_one_backward_equals_the_reference_two_backwards_fp32(kw):
    mine, ref, _, _ = _both(kw, torch.float32, seed=1)
    # Global relative error: in fp32 a median tie in the ED feed-forward can route one token's gradient
    # differently in the two implementations (both are valid subgradients), so no per-element bound.
    num = sum(((mine[n] - ref[n]) ** 2).sum() for n in ref) ** 0.5
    den = sum((ref[n] ** 2).sum() for n in ref) ** 0.5
    assert (num / den).item() < 1e-3


def test_total_is_loss1_plus_loss2():
    m = small()
    x = torch.randn(2, L, C, dtype=torch.float64)
    loss1, loss2, _ = oracle_losses(oracle_from_level(m), x, 0.3, 0.7)
    terms = ed_objective(m(x), x, m.dx, m.dy, lambda1=0.3, lambda2=0.7)
    assert terms.total.item() == pytest.approx((loss1 + loss2).item(), rel=1e-10)


def test_lambdas_enter_the_gradients():
    m = small()
    x = torch.randn(1, L, C, dtype=torch.float64)
    o = oracle_from_level(m)
    o.zero_grad()
    l1, l2, _ = oracle_losses(o, x, 0.2, 0.9)
    l1.backward(retain_graph=True)
    l2.backward()
    terms = ed_objective(m(x), x, m.dx, m.dy, lambda1=0.2, lambda2=0.9)
    terms.total.backward()
    for (n, p), q in zip(m.named_parameters(), o.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=1e-12, msg=n)


def test_absent_branch_terms_are_zero():
    m = small(inter=False)
    x = torch.randn(1, L, C, dtype=torch.float64)
    terms = ed_objective(m(x), x, m.dx, m.dy)
    assert terms.inter1.item() == terms.inter2.item() == terms.inter_ent.item() == 0.0
    assert terms.intra1.item() > 0 and terms.intra_ent.item() > 0
    assert not terms.rec.requires_grad and terms.total.requires_grad


def test_score_outputs_cannot_be_trained_on():
    m = small()
    x = torch.randn(1, L, C, dtype=torch.float64)
    out = m(x, branches="score")._replace(intra_attn=m(x).intra_attn)
    with pytest.raises(ConfigError, match="sigma"):
        ed_objective(out, x, m.dx, m.dy)


def test_same_seed_same_losses():
    runs = []
    for _ in range(2):
        m = small(seed=3, dtype=torch.float32)
        x = torch.randn(2, L, C)
        terms = ed_objective(m(x), x, m.dx, m.dy)
        terms.total.backward()
        runs.append([t.item() for t in terms] + [m.proj.weight.grad.sum().item()])
    assert runs[0] == runs[1]


def test_reconstruction_has_weight_two_in_the_gradient():
    # with the correlation terms off (λ = 0) the gradient is that of 2*rec, as the reference's two passes give
    m = small(dtype=torch.float64)
    x = torch.randn(1, L, C, dtype=torch.float64)
    ed_objective(m(x), x, m.dx, m.dy, lambda1=0.0, lambda2=0.0).total.backward()
    g = m.proj.weight.grad.clone()
    m.zero_grad()
    (2 * (F.mse_loss(m(x).recon, x) + (1 - F.cosine_similarity(m(x).recon, x, dim=-1)).mean())).backward()
    torch.testing.assert_close(g, m.proj.weight.grad)
