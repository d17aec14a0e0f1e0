"""The attention dispatch (edcli.method.dispatch): the whole map when the memory allows, chunks when it does not,
and both paths giving the same values and gradients (float64, relative 1e-12: only the order of sums differs).
The device's free memory is injected (dispatch.free_memory), so the GPU's choices run here on the CPU."""

from __future__ import annotations

import pytest
import torch

import edcli.method.dispatch as dispatch
import edcli.method.model as model_mod
from edcli.method.loss import ed_objective
from edcli.method.model import LevelModel

B, HEADS, GRID = 2, 4, (8, 8)
L = GRID[0] * GRID[1]
TOTAL = B * HEADS * L * L  # values of one attention's maps, all heads of the batch
TRAIN_BPV, SCORE_BPV = 8 * 8 + 2 * 8, 4 * 8  # bytes kept per map value in float64 (fused._chunk, SCORE_BUFFERS)


def _free_for(share: float, bpv: int) -> int:
    """Free bytes under which `share` of the whole map fits."""
    return int(TOTAL * bpv * share / dispatch.MEMORY_FRACTION)


def _free(values: int, bpv: int) -> int:
    return int(values * bpv / dispatch.MEMORY_FRACTION)


def test_dispatch_picks_the_whole_map_when_it_fits_and_chunks_when_not():
    total, bpv = 64 * 1024 * 1024, 40
    assert dispatch.chunk_elements(total, bpv, 1 << 16, None) == 1 << 16  # no memory figure (CPU): cache-sized
    assert dispatch.chunk_elements(total, bpv, 1 << 16, _free(total, bpv)) == total
    below = dispatch.chunk_elements(total, bpv, 1 << 16, _free(total, bpv) - 1)
    assert below == total // 2  # the largest power of two that fits
    assert dispatch.chunk_elements(total, bpv, 1 << 16, _free(3 * total // 4, bpv)) == total // 2
    assert dispatch.chunk_elements(total, bpv, 1 << 16, 0) == 1  # nothing free: one value, i.e. one row a chunk


def test_free_memory_has_no_figure_on_the_cpu():
    assert dispatch.free_memory(torch.device("cpu")) is None


def _model():
    torch.manual_seed(0)
    return LevelModel(12, GRID, torch.randn(12, L), 32, heads=HEADS, layers=2).double()


def _run(model, x, branches, free, monkeypatch):
    """One forward (and for "train" a backward) with `free` bytes injected; returns outputs, grads, chunks used."""
    chunks = []
    real = dispatch.attention_chunk

    def spy(like, total, bpv, cache):
        chunks.append((total, real(like, total, bpv, cache)))
        return chunks[-1][1]

    monkeypatch.setattr(dispatch, "free_memory", lambda device: free)
    monkeypatch.setattr(dispatch, "attention_chunk", spy)
    model.zero_grad(set_to_none=True)
    out = model(x, branches=branches)
    if branches == "score":
        return [out.recon.detach(), out.score_kl.detach()], [], chunks
    terms = ed_objective(out, x, model.dx, model.dy)
    terms.total.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    values = [out.recon, terms.total, *out.intra_terms, *out.inter_terms]
    return [t.detach() for t in values], grads, chunks


def _close(a, b):
    for u, v in zip(a, b, strict=True):
        assert float((u - v).abs().max()) <= 1e-12 * float(v.abs().max()) + 1e-15  # key biases: true gradient 0


@pytest.mark.parametrize("branches, bpv", [("train", TRAIN_BPV), ("score", SCORE_BPV)])
def test_whole_map_and_chunked_paths_agree_fp64(branches, bpv, monkeypatch):
    monkeypatch.setattr(model_mod, "FUSED_MIN_ELEMENTS", 0)  # these small maps through the fused path too
    model = _model()
    x = torch.randn(B, L, 12, dtype=torch.float64)
    want, want_g, chunks = _run(model, x, branches, _free_for(1.0, bpv), monkeypatch)
    assert chunks and all(c == t == TOTAL for t, c in chunks)  # every attention of the step: the whole map
    for share in (0.99, 0.01):  # just below the switch (two chunks) and far below it (a few rows a chunk)
        got, got_g, chunks = _run(model, x, branches, _free_for(share, bpv), monkeypatch)
        assert chunks and all(t == TOTAL and c < TOTAL for t, c in chunks)
        _close(got, want)
        _close(got_g, want_g)


@pytest.mark.gpu
def test_whole_map_on_the_gpu_equals_the_cpu_chunks_fp64(monkeypatch):
    monkeypatch.setattr(model_mod, "FUSED_MIN_ELEMENTS", 0)
    model = _model()
    x = torch.randn(B, L, 12, dtype=torch.float64)
    want, want_g, _ = _run(model, x, "train", None, monkeypatch)  # no figure: the CPU's chunks
    monkeypatch.undo()
    monkeypatch.setattr(model_mod, "FUSED_MIN_ELEMENTS", 0)
    gpu = model.cuda()
    chunks = []
    real = dispatch.attention_chunk
    monkeypatch.setattr(dispatch, "attention_chunk", lambda *a: chunks.append(real(*a)) or chunks[-1])
    gpu.zero_grad(set_to_none=True)
    xc = x.cuda()
    out = gpu(xc, branches="train")
    terms = ed_objective(out, xc, gpu.dx, gpu.dy)
    terms.total.backward()
    assert chunks and all(c == TOTAL for c in chunks)  # a GPU with its memory free: the whole map
    got_g = [p.grad.cpu() for p in gpu.parameters()]
    for u, v in zip(got_g, want_g, strict=True):
        assert float((u - v).abs().max()) <= 1e-10 * float(v.abs().max()) + 1e-300
