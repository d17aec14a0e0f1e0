"""The fused training step (branches="train", edcli.method.fused) against the oracle's two backward passes.

Tolerances: fp64, every parameter's gradient within 1e-7 of the oracle's relative to the largest gradient entry of
that parameter (plus 1e-12 absolute: the key biases' true gradient is 0, softmax being shift-invariant);
bf16 autocast on the CPU against fp32: the whole gradient vector within 12 % (relative L2 norm; bf16 matmuls
through 2 layers) and within 1.2x the error of bf16 autocast on the unfused maps path; the loss terms within 1 %."""

from __future__ import annotations

import pytest
import torch
from oracle import oracle_backward, oracle_from_level

import edcli.method.fused as fused
from edcli.engine import check_precision, cpu_has_bf16
from edcli.errors import ConfigError
from edcli.method.loss import ed_objective
from edcli.method.model import LevelModel

SHAPES = [(12, (4, 4), 32, 4), (20, (4, 2), 32, 4)]  # square and non-square grids


@pytest.fixture(autouse=True)
def always_fused(monkeypatch):
    """The model fuses only large maps; these tiny ones are forced through the fused path."""
    import edcli.method.model as model_mod

    monkeypatch.setattr(model_mod, "FUSED_MIN_ELEMENTS", 0)


def _grads(model, x, branches, precision="fp32"):
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        out = model(x, branches=branches)
    terms = ed_objective(out, x, model.dx, model.dy)
    terms.total.backward()
    return {k: p.grad.clone() for k, p in model.named_parameters()}, terms


@pytest.mark.parametrize("chunk", [1 << 18, 8])  # one chunk per map, and many (single rows of single heads)
@pytest.mark.parametrize("channels, grid, d, heads", SHAPES)
def test_fused_gradients_equal_the_oracles_fp64(channels, grid, d, heads, chunk, monkeypatch):
    monkeypatch.setattr(fused, "CHUNK_ELEMENTS", chunk)
    torch.manual_seed(0)
    L = grid[0] * grid[1]
    model = LevelModel(channels, grid, torch.randn(channels, L), d, heads=heads, layers=2).double()
    x = torch.randn(2, L, channels, dtype=torch.float64)
    oracle = oracle_from_level(model)
    want_terms = oracle_backward(oracle, x)
    got, terms = _grads(model, x, "train")
    for name, p in oracle.named_parameters():
        tol = 1e-7 * float(p.grad.abs().max()) + 1e-12
        assert float((got[name] - p.grad).abs().max()) <= tol, name
    for key in ("rec", "intra1", "intra2", "intra_ent", "inter1", "inter2", "inter_ent"):
        assert float(getattr(terms, key)) == pytest.approx(float(want_terms[key]), rel=1e-10), key


def test_fused_step_keeps_no_attention_map(monkeypatch):
    import edcli.method.model as model_mod

    torch.manual_seed(0)
    model = LevelModel(12, (4, 4), torch.randn(12, 16), 32, heads=4, layers=2)
    out = model(torch.randn(1, 16, 12), branches="train")
    assert out.intra_attn is None and out.inter_attn is None
    assert [t.shape for t in out.intra_terms] == [(2, 1, 4, 16)] * 3 and len(out.inter_terms) == 3
    monkeypatch.setattr(model_mod, "FUSED_MIN_ELEMENTS", 16 * 16 + 1)  # maps below the bar: the maps path
    small = model(torch.randn(1, 16, 12), branches="train")
    assert small.intra_terms is None and small.intra_attn.shape == (2, 1, 4, 16, 16)


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no bf16 dot products")
def test_bf16_on_the_cpu_is_close_to_fp32():
    torch.manual_seed(0)
    model = LevelModel(40, (8, 8), torch.randn(40, 64), 64, heads=8, layers=2)
    x = torch.randn(1, 64, 40)
    g32, t32 = _grads(model, x, "train")
    g16, t16 = _grads(model, x, "train", "bf16")
    gmaps, _ = _grads(model, x, "all", "bf16")  # bf16 autocast of the unfused step, as on a GPU
    v32 = torch.cat([g.flatten() for g in g32.values()])
    err = float((torch.cat([g16[k].flatten() for k in g32]) - v32).norm() / v32.norm())
    err_maps = float((torch.cat([gmaps[k].flatten() for k in g32]) - v32).norm() / v32.norm())
    assert err < 0.12 and err < 1.2 * err_maps + 1e-3, (err, err_maps)  # bf16's own error, no more
    for key in ("rec", "intra1", "inter1", "intra_ent", "inter_ent"):
        assert float(getattr(t16, key)) == pytest.approx(float(getattr(t32, key)), rel=1e-2), key
    assert check_precision("bf16", torch.device("cpu")) == "bf16"


def test_fp16_on_the_cpu_is_refused():
    with pytest.raises(ConfigError, match="fp16"):
        check_precision("fp16", torch.device("cpu"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fused_step_on_cuda_matches_the_cpu_fp64_and_bf16_is_close():
    torch.manual_seed(0)
    model = LevelModel(40, (8, 8), torch.randn(40, 64), 64, heads=8, layers=2)
    x = torch.randn(2, 64, 40)
    want, _ = _grads(model.double(), x.double(), "train")
    cuda = model.float().cuda()
    got, _ = _grads(cuda, x.cuda(), "train")
    v = torch.cat([want[k].flatten() for k in want])
    err32 = float((torch.cat([got[k].double().cpu().flatten() for k in want]) - v).norm() / v.norm())
    cuda.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = cuda(x.cuda(), branches="train")
    ed_objective(out, x.cuda(), cuda.dx, cuda.dy).total.backward()
    err16 = float((torch.cat([p.grad.double().cpu().flatten() for p in cuda.parameters()]) - v).norm() / v.norm())
    assert err32 < 1e-3 and err16 < 0.12, (err32, err16)


def test_bf16_is_refused_where_onednn_has_no_bf16_units(monkeypatch, tmp_path, tiny_data, tiny_store):
    """An AVX2-only CPU (oneDNN capped at AVX2 here): --precision bf16 on the CPU is one clear line, exit 1, and
    nothing written; fp32 stays the answer it names."""
    from conftest import invoke, tiny_train_args

    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert not cpu_has_bf16()
    with pytest.raises(ConfigError, match="use fp32"):
        check_precision("bf16", torch.device("cpu"))
    out = tmp_path / "run"
    res = invoke(*tiny_train_args(tiny_data, tiny_store, out), "--precision", "bf16")
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]  # after the start line
    assert res.returncode == 1 and len(errors) == 1 and "bf16" in errors[0] and "fp32" in errors[0], res.stderr
    assert "Traceback" not in res.stderr
    assert not out.exists()
