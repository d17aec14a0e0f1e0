"""The Gaussian prior and the in-place symmetric KL of the scoring path, against the plain formulas."""

from __future__ import annotations

import torch
from oracle import gaussian_target, sym_kl

from edcli.method.prior import (
    EPS,
    grid_axes,
    grid_distances,
    row_factors,
    sym_kl_rows_,
)


def _case(B=2, heads=3, grid=(4, 5), dtype=torch.float64):
    torch.manual_seed(0)
    L = grid[0] * grid[1]
    dx, dy = grid_distances(grid)
    p = torch.softmax(torch.randn(B, heads, L, L, dtype=dtype) * 3, -1)
    sigma = torch.rand(B, heads, L, 2, dtype=dtype) * 2 + 0.05
    return p, sigma, dx, dy


def test_target_rows_are_the_normalised_gaussian():
    _, sigma, dx, dy = _case()
    t = gaussian_target(sigma, dx, dy)
    sy, sx = sigma[..., 0:1], sigma[..., 1:2]
    g = torch.exp(-dy.double() / (2 * sy**2) - dx.double() / (2 * sx**2))
    torch.testing.assert_close(t, g / g.sum(-1, keepdim=True))


def test_in_place_rows_equal_the_two_kl_terms():
    p, sigma, dx, dy = _case()
    t = gaussian_target(sigma, dx, dy)
    kl = lambda a, b: (a * (torch.log(a + EPS) - torch.log(b + EPS))).sum(-1)  # noqa: E731
    expected = kl(p, t) + kl(t, p)  # (B, heads, L)
    got = sym_kl_rows_(p.clone(), *row_factors(sigma, *grid_axes(dx, dy)))
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got.mean(1), sym_kl(p, t), rtol=1e-12, atol=1e-12)


def test_fp32_in_place_rows_stay_close_to_fp64():
    p, sigma, dx, dy = _case()
    exact = sym_kl_rows_(p.clone(), *row_factors(sigma, *grid_axes(dx, dy)))
    fast = sym_kl_rows_(p.float(), *row_factors(sigma.float(), *grid_axes(dx, dy)))
    torch.testing.assert_close(fast.double(), exact, rtol=1e-5, atol=1e-5)
