"""edcli.method.model: sizes, shapes, buffers, the positional encoding and each architectural variant."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from oracle import count_trainable, gaussian_target, oracle_from_level, oracle_level_forward, sym_kl

from edcli.config import ModelConfig
from edcli.errors import ConfigError, DataError
from edcli.method.attention import positional_encoding_2d, sigma_map
from edcli.method.model import (
    D2Fusion,
    EDFeedForward,
    EDModel,
    FODFeedForward,
    LevelModel,
    build_ed_model,
    grid_distances,
)

C, GRID, D, HEADS, LAYERS = 24, (6, 6), 32, 4, 2
L = GRID[0] * GRID[1]


@pytest.fixture(autouse=True)
def _tiny(one_thread):
    """These tensors are tiny: run them on one intra-op thread (see conftest.one_thread)."""


def small(seed=0, **kw):
    torch.manual_seed(seed)
    args = dict(heads=HEADS, layers=LAYERS)
    args.update(kw)
    return LevelModel(C, GRID, torch.randn(C, L), D, **args)


@pytest.mark.parametrize(
    "channels, grid, d, out_proj, expected",
    [
        (512, (32, 32), 256, False, 5_580_390),
        (1024, (16, 16), 512, False, 22_170_726),
        (512, (32, 32), 256, True, 5_975_142),
        (1024, (16, 16), 512, True, 23_746_662),
    ],
)
def test_parameter_counts_wide_resnet50_2(channels, grid, d, out_proj, expected):
    ref = torch.randn(channels, grid[0] * grid[1])
    assert count_trainable(LevelModel(channels, grid, ref, d, attn_out_proj=out_proj)) == expected


def test_fod_parameter_counts_match_the_reference():
    # method.md §4 (these include the unused out_projection, as the reference allocates it)
    m0 = LevelModel(512, (32, 32), torch.randn(512, 1024), 256, arch="fod", attn_out_proj=True)
    m1 = LevelModel(1024, (16, 16), torch.randn(1024, 256), 512, arch="fod", attn_out_proj=True)
    assert (count_trainable(m0), count_trainable(m1)) == (3_578_208, 14_234_208)


def test_output_shapes_and_rows_sum_to_one():
    torch.manual_seed(1)
    m = LevelModel(C, (4, 4), torch.randn(C, 16), 64)  # default 8 heads, 3 layers
    out = m(torch.randn(2, 16, C))
    assert out.recon.shape == (2, 16, C)
    for attn, sig in ((out.intra_attn, out.intra_sigma), (out.inter_attn, out.inter_sigma)):
        assert attn.shape == (3, 2, 8, 16, 16)
        assert sig.shape == (3, 2, 8, 16, 2) and sig.dtype == torch.float32
        torch.testing.assert_close(attn.sum(-1), torch.ones(3, 2, 8, 16))


def test_positional_encoding_channel_layout():
    d, H, W = 16, 3, 5
    pe = positional_encoding_2d(d, (H, W))
    assert pe.shape == (H * W, d)
    half = d // 2
    for tok in range(H * W):
        r, c = divmod(tok, W)
        for i in range(half // 2):
            f = 10000 ** (-2 * i / half)
            expect = [math.sin(c * f), math.cos(c * f), math.sin(r * f), math.cos(r * f)]
            got = [pe[tok, 2 * i], pe[tok, 2 * i + 1], pe[tok, half + 2 * i], pe[tok, half + 2 * i + 1]]
            assert [float(g) for g in got] == pytest.approx(expect, abs=1e-6)


def test_positional_encoding_needs_d_divisible_by_4():
    with pytest.raises(ConfigError, match="divisible by 4"):
        positional_encoding_2d(30, (2, 2))


def test_grid_distances():
    dx, dy = grid_distances((2, 3))
    assert dx.dtype == dy.dtype == torch.float32
    assert torch.equal(dx, dx.t()) and torch.equal(dy, dy.t())
    assert torch.all(dx.diagonal() == 0) and torch.all(dy.diagonal() == 0)
    # token 5 is (row 1, col 2); token 0 is (0, 0)
    assert (dx[0, 5].item(), dy[0, 5].item(), dx[1, 3].item(), dy[1, 3].item()) == (4.0, 1.0, 1.0, 1.0)


def test_state_dict_holds_ref_and_distances_but_not_the_encoding():
    m = small()
    keys = set(m.state_dict())
    assert {"ref", "dx", "dy"} <= keys
    assert not any(k.endswith("pos") for k in keys)
    m2 = small(seed=5)
    m2.load_state_dict(m.state_dict())
    assert torch.equal(m2.ref, m.ref)


def test_buffers_move_with_to():
    m = small().to(torch.float64)
    for name in ("ref", "dx", "dy", "embed.pos", "ref_embed.pos"):
        assert m.get_buffer(name).dtype == torch.float64, name
    out = m(torch.randn(1, L, C, dtype=torch.float64))
    assert out.recon.dtype == torch.float64


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_buffers_move_to_cuda():
    m = small().to("cuda")
    assert all(b.is_cuda for b in m.buffers())
    assert m(torch.randn(2, L, C, device="cuda")).recon.is_cuda


def test_batch_items_match_single_item_runs():
    m = small().double()
    x = torch.randn(3, L, C, dtype=torch.float64)
    full = m(x)
    for b in range(3):
        one = m(x[b : b + 1])
        torch.testing.assert_close(one.recon[0], full.recon[b])
        for a, c in zip(one[1:5], full[1:5]):  # (layers, B, ...) maps and sigmas
            torch.testing.assert_close(a[:, 0], c[:, b])


@pytest.mark.parametrize("kw", [{}, {"arch": "fod"}, {"intra": False}, {"inter": False}, {"attn_out_proj": True}])
def test_forward_matches_the_oracle(kw):
    m = small(**kw).double()
    x = torch.randn(2, L, C, dtype=torch.float64)
    out = m(x)
    ref = oracle_level_forward(oracle_from_level(m), x)
    torch.testing.assert_close(out.recon, ref.recon)
    for mine, theirs in ((out.intra_attn, ref.P_intra), (out.inter_attn, ref.P_inter)):
        assert (mine is None) == (theirs is None)
        if mine is not None:
            torch.testing.assert_close(mine, torch.stack(theirs))


def test_learnable_temperature_and_fod_fixed_temperature():
    ed, fod = small(), small(arch="fod")
    for layer in ed.layers:
        for attn in (layer.intra_attn, layer.inter_attn):
            assert isinstance(attn.temperature, torch.nn.Parameter)
            assert attn.temperature.item() == pytest.approx(1 / math.sqrt(D // HEADS))
    assert not any("temperature" in n for n, _ in fod.named_parameters())
    assert fod.layers[0].intra_attn.temperature == pytest.approx(1 / math.sqrt(D // HEADS))
    assert count_trainable(ed) - count_trainable(fod) > 0


def _branches(layer, x, ref):
    a1 = layer.intra_attn(x, x)[0] if layer.intra_attn is not None else None
    a2 = layer.inter_attn(x, ref)[0] if layer.inter_attn is not None else None
    return a1, a2


def _post(layer, z):
    z = layer.norm1(z)
    return layer.norm2(z + layer.ffn(z))


def test_ed_layer_fuses_with_d2fusion():
    m = small().double()
    layer = m.layers[0]
    assert isinstance(layer.fusion, D2Fusion) and isinstance(layer.ffn, EDFeedForward)
    x = torch.randn(2, L, D, dtype=torch.float64)
    ref = torch.randn(1, L, D, dtype=torch.float64)
    a1, a2 = _branches(layer, x, ref)
    f = layer.fusion
    z = f.fc2(F.relu(f.fc1(torch.cat([x + a1, x + a2], -1))))
    torch.testing.assert_close(layer(x, ref)[0], _post(layer, z))


def test_fod_layer_subtracts_and_uses_a_plain_mlp():
    m = small(arch="fod").double()
    layer = m.layers[0]
    assert layer.fusion is None and isinstance(layer.ffn, FODFeedForward)
    x = torch.randn(2, L, D, dtype=torch.float64)
    ref = torch.randn(1, L, D, dtype=torch.float64)
    a1, a2 = _branches(layer, x, ref)
    torch.testing.assert_close(layer(x, ref)[0], _post(layer, a1 - a2))
    z = torch.randn(2, L, D, dtype=torch.float64)
    torch.testing.assert_close(layer.ffn(z), layer.ffn.fc2(F.gelu(layer.ffn.fc1(z))))


@pytest.mark.parametrize("intra, inter", [(True, False), (False, True)])
def test_single_branch_is_residual_plus_branch(intra, inter):
    m = small(intra=intra, inter=inter).double()
    layer = m.layers[0]
    assert layer.fusion is None
    assert (layer.intra_attn is None) != intra and (layer.inter_attn is None) != inter
    assert (m.ref_embed is None) == (not inter)
    x = torch.randn(2, L, D, dtype=torch.float64)
    ref = torch.randn(1, L, D, dtype=torch.float64)
    a1, a2 = _branches(layer, x, ref if inter else None)
    torch.testing.assert_close(layer(x, ref if inter else None)[0], _post(layer, x + (a1 if intra else a2)))
    out = m(torch.randn(2, L, C, dtype=torch.float64))
    assert (out.intra_attn is None) != intra and (out.inter_attn is None) != inter
    assert (out.intra_sigma is None) != intra and (out.inter_sigma is None) != inter


def test_no_branch_at_all_is_a_config_error():
    with pytest.raises(ConfigError, match="no-intra"):
        small(intra=False, inter=False)


def test_sigma_range():
    z = torch.tensor([-1e4, -3.0, 0.0, 3.0, 1e4])
    s = sigma_map(z)
    lo, hi = 3**1e-5 - 1, 3 ** (1 + 1e-5) - 1  # ~1.1e-5 (= 1e-5 ln 3) and ~2.00003
    # fp32: 3^(1e-5) - 1 loses digits to cancellation, hence the looser bound at the floor
    assert s[0].item() == pytest.approx(lo, rel=1e-2) and s[-1].item() == pytest.approx(hi, rel=1e-6)
    assert torch.all(s[1:] > s[:-1])
    out = small()(torch.randn(2, L, C))
    for sig in (out.intra_sigma, out.inter_sigma):
        assert sig.min() >= lo * 0.99 and sig.max() <= hi


def test_median_is_the_lower_median():
    torch.manual_seed(0)
    ffn = EDFeedForward(8, 16, (2, 3), 0.0).double()  # L = 6 tokens: even
    with torch.no_grad():
        ffn.g.uniform_(0.5, 1.5)
    z = torch.randn(2, 6, 8, dtype=torch.float64)
    h = F.gelu(ffn.dwconv(ffn.fc1(z).transpose(1, 2).reshape(2, 16, 2, 3)).flatten(2).transpose(1, 2))
    lower = h.sort(dim=1).values[:, 2:3]  # index (L-1)//2 of the sorted tokens
    torch.testing.assert_close(ffn(z), ffn.fc2(h + ffn.g * lower))
    upper = h.sort(dim=1).values[:, 3:4]
    assert not torch.allclose(ffn(z), ffn.fc2(h + ffn.g * upper))


def test_depthwise_conv_runs_over_the_row_major_grid():
    # a 3x3 kernel that only looks at the right-hand neighbour: each token receives its (row, col+1) value
    ffn = EDFeedForward(1, 1, (2, 3), 0.0).double()
    with torch.no_grad():
        ffn.fc1.weight.fill_(1.0)
        ffn.fc1.bias.zero_()
        ffn.dwconv.weight.zero_()
        ffn.dwconv.weight[0, 0, 1, 2] = 1.0
        ffn.dwconv.bias.zero_()
    z = torch.arange(1.0, 7.0, dtype=torch.float64).view(1, 6, 1)  # grid [[1,2,3],[4,5,6]]
    h = ffn.dwconv(ffn.fc1(z).transpose(1, 2).reshape(1, 1, 2, 3)).flatten(2)
    assert h.flatten().tolist() == [2.0, 3.0, 0.0, 5.0, 6.0, 0.0]


def test_score_mode_keeps_no_map_and_gives_the_kl_rows_of_the_full_maps():
    m = small().double()
    x = torch.randn(2, L, C, dtype=torch.float64)
    full, score = m(x), m(x, branches="score")
    torch.testing.assert_close(score.recon, full.recon)
    assert score[1:5] == (None, None, None, None) and full.score_kl is None
    # the inter branch scores: mean over layers of head-mean sym-KL(P, T̄), built from the full maps
    naive = torch.stack([sym_kl(p, gaussian_target(s, m.dx, m.dy)) for p, s in zip(full.inter_attn, full.inter_sigma)])
    torch.testing.assert_close(score.score_kl, naive.mean(0), rtol=1e-10, atol=1e-10)
    m2 = small(inter=False).double()  # without the inter branch the intra branch scores
    s2, f2 = m2(x, branches="score"), m2(x)
    naive = torch.stack([sym_kl(p, gaussian_target(s, m2.dx, m2.dy)) for p, s in zip(f2.intra_attn, f2.intra_sigma)])
    torch.testing.assert_close(s2.score_kl, naive.mean(0), rtol=1e-10, atol=1e-10)
    with pytest.raises(ConfigError):
        m(x, branches="some")


def test_score_mode_in_fp32_matches_fp64():
    m = small()
    x = torch.randn(2, L, C)
    exact = m.double()(x.double(), branches="score").score_kl
    fast = m.float()(x, branches="score").score_kl
    torch.testing.assert_close(fast.double(), exact, rtol=1e-5, atol=1e-6)


def test_wrong_feature_shape_is_a_data_error():
    with pytest.raises(DataError, match=r"\(B, 36, 24\)"):
        small()(torch.randn(1, 35, C))


def test_wrong_reference_shape_is_a_config_error():
    with pytest.raises(ConfigError, match="reference features"):
        LevelModel(C, GRID, torch.randn(C, L + 1), D)


def test_build_ed_model_widths_reference_by_default_auto_on_request():
    refs = [torch.randn(100, 16), torch.randn(200, 4)]
    ref_widths = build_ed_model(
        [100, 200, 300], [(4, 4), (2, 2), (1, 1)], refs + [torch.randn(300, 1)], ModelConfig(layers=1, heads=4)
    )
    assert [lvl.d_model for lvl in ref_widths.levels] == [256, 512, 512]  # whatever C, as the reference
    total = sum(count_trainable(m) for m in ref_widths.levels[:2])
    assert total == sum(
        count_trainable(LevelModel(c, g, r, d, heads=4, layers=1))
        for c, g, r, d in zip([100, 200], [(4, 4), (2, 2)], refs, [256, 512])
    )
    model = build_ed_model([100, 200], [(4, 4), (2, 2)], refs, ModelConfig(layers=1, heads=4, width="auto"))
    assert isinstance(model, EDModel)
    assert [lvl.d_model for lvl in model.levels] == [64, 128]
    outs = model([torch.randn(1, 16, 100), torch.randn(1, 4, 200)])
    assert [o.recon.shape for o in outs] == [(1, 16, 100), (1, 4, 200)]
    with pytest.raises(DataError, match="the model has 2"):
        model([torch.randn(1, 16, 100)])
    custom = build_ed_model([100, 200], [(4, 4), (2, 2)], refs, ModelConfig(layers=1, heads=4, d_model=(32, 96)))
    assert [lvl.d_model for lvl in custom.levels] == [32, 96]
    with pytest.raises(ConfigError):
        build_ed_model([100, 200], [(4, 4)], refs, ModelConfig())
    with pytest.raises(ConfigError, match="d-model"):
        build_ed_model([100, 200], [(4, 4), (2, 2)], refs, ModelConfig(d_model=(64,)))


def test_score_mode_runs_under_bf16_autocast():
    # sigma's linear must run under the caller's autocast (its input is bf16 there); the KL stays in fp32
    m = small()
    x = torch.randn(2, L, C)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        fast = m(x, branches="score").score_kl
        full = m(x)
    assert fast.dtype == torch.float32
    naive = torch.stack(
        [sym_kl(p.float(), gaussian_target(s, m.dx, m.dy)) for p, s in zip(full.inter_attn, full.inter_sigma)]
    ).mean(0)
    torch.testing.assert_close(fast, naive, rtol=0.05, atol=0.05)
