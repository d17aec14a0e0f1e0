"""Optimizer semantics (`--optimizer reference|per-level`) and the learning-rate schedule, against tests/oracle.py."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from oracle import oracle_from_level, oracle_train

from edcli.method.loss import ed_objective
from edcli.method.model import LevelModel
from edcli.training import epoch_generator, lr_factor, make_optimizers, train_epoch

SEED = 5


def _levels():
    torch.manual_seed(0)
    shapes = [(12, (4, 4), 32), (20, (2, 2), 32)]  # two levels of different sizes, as the reference's
    return [LevelModel(c, g, torch.randn(c, g[0] * g[1]), d, heads=4, layers=2).double() for c, g, d in shapes]


def _edcli_run(levels, feats, mode, epochs):
    opts = make_optimizers(levels, mode, 1e-3)
    for e in range(epochs):
        train_epoch(
            levels, opts, feats, 1, epoch_generator(SEED, e), torch.device("cpu"), "fp32", 0.5, 0.5, optimizer_mode=mode
        )


def _batches(feats, epochs, batch_size=1, seed=SEED):
    out = []
    for e in range(epochs):
        order = torch.randperm(feats[0].shape[0], generator=epoch_generator(seed, e))
        out += [[f[idx] for f in feats] for idx in order.split(batch_size)]
    return out


@pytest.mark.parametrize("mode", ["reference", "per-level"])
def test_training_loop_equals_the_oracles_fp64(mode, one_thread):
    """6 batches over 2 levels: edcli's loop (one backward of ed_objective) and the oracle's (the reference's two
    backward passes on its own maths, one torch Adam with zero_grad(set_to_none=False) in reference mode)."""
    levels = _levels()
    oracles = [oracle_from_level(m) for m in levels]
    start = [{k: v.clone() for k, v in m.state_dict().items()} for m in levels]
    g = torch.Generator().manual_seed(1)
    feats = [torch.randn(3, m.grid[0] * m.grid[1], m.channels, generator=g, dtype=torch.float64) for m in levels]
    _edcli_run(levels, feats, mode, epochs=2)
    oracle_train(oracles, _batches(feats, 2), lr=1e-3, mode=mode)
    for m, o, s0 in zip(levels, oracles, start):
        want = o.state_dict()
        for k, v in m.state_dict().items():
            if k in ("dx", "dy"):
                continue
            torch.testing.assert_close(v, want[k], rtol=1e-6, atol=1e-9, msg=k)
            assert not torch.equal(v, s0[k]) or k == "ref", k  # every weight moved


def test_reference_semantics_differ_from_per_level_and_move_further(one_thread):
    """The reference's extra momentum-only step per level and batch: the weights move further than per level."""
    runs = {}
    g = torch.Generator().manual_seed(2)
    for mode in ("reference", "per-level"):
        levels = _levels()
        start = [torch.nn.utils.parameters_to_vector(m.parameters()).detach().clone() for m in levels]
        feats = [
            torch.randn(3, m.grid[0] * m.grid[1], m.channels, generator=g.manual_seed(2), dtype=torch.float64)
            for m in levels
        ]
        _edcli_run(levels, feats, mode, epochs=2)
        runs[mode] = [
            float((torch.nn.utils.parameters_to_vector(m.parameters()).detach() - s).norm())
            for m, s in zip(levels, start)
        ]
    for ref, per in zip(runs["reference"], runs["per-level"]):
        assert ref > 1.05 * per


@pytest.mark.parametrize("mode", ["per-level", "reference"])
def test_train_category_equals_an_independent_loop_bit_for_bit(mode, tiny_configs, tiny_store, tmp_path):
    """`ed train` (fixture data) with --optimizer MODE gives, bit for bit, the weights of the oracle's loop run on the
    same initial model and batches with the same kernels: the maps-path step and the loop Adam per level (edcli's
    loop before --optimizer existed), the fused step and torch's fused Adam in reference mode. Bit-exact holds on
    any CPU because both sides run the same float32 operations in the same order; that the fused Adam and the
    reference's loop Adam are the same maths is shown in float64 (test_training_loop_equals_the_oracles_fp64), not
    here: after several float32 Adam steps a near-zero gradient's rounding noise becomes a step of about +-lr
    whose sign depends on the CPU's kernels (AVX-512 against AVX2), so trained float32 weights of two different
    Adam implementations have no tolerance that holds on every CPU."""
    from edcli.checkpoint import load_checkpoint
    from edcli.commands.train import run as run_train
    from edcli.engine import seed_everything
    from edcli.method.model import build_ed_model
    from edcli.method.scoring import calibration_split
    from edcli.store import FeatureFile

    data, bb, model_cfg, train = tiny_configs
    train = replace(train, optimizer=mode)
    run_train(data=data, bb_cfg=bb, model_cfg=model_cfg, train_cfg=train, store=str(tiny_store), out=str(tmp_path))
    got = load_checkpoint(tmp_path / "checkpoints" / "brick.pt")
    assert got.config["train"]["optimizer"] == mode and got.config["model"]["d_model"] == [64, 64]
    assert json.loads((tmp_path / "run.json").read_text())["train"]["optimizer"] == mode
    (path,) = sorted((tiny_store / "features" / "mvtec" / "brick").glob("*.h5"))
    with FeatureFile.open(path) as ff:
        fit, _ = calibration_split(ff.n_train, train.calib_fraction, train.seed)
        raw = [torch.from_numpy(ff.train(k))[torch.from_numpy(fit)] for k in range(ff.n_levels)]
    feats = [f.flatten(2).transpose(1, 2).contiguous() for f in raw]  # (N, L, C) float16, as cached
    refs = [f.double().mean(0).flatten(1).float() for f in raw]
    seed_everything(train.seed)
    model = build_ed_model([f.shape[2] for f in feats], [tuple(f.shape[-2:]) for f in raw], refs, model_cfg)
    batches = [[f.float() for f in xs] for xs in _batches(feats, train.epochs, train.batch_size, train.seed)]

    def backward(m, x):  # reference: the fused step; per-level: the maps path (edcli's step before the option)
        ed_objective(m(x, branches="train" if mode == "reference" else "all"), x, m.dx, m.dy).total.backward()

    oracle_train(list(model.levels), batches, train.lr, mode, backward, fused=mode == "reference")
    for level, sd in zip(model.levels, got.state_dicts):
        for k, v in level.state_dict().items():
            assert torch.equal(v, sd[k]), k


def test_lr_factor_warmup_then_cosine():
    total, warm = 20, 4
    f = [lr_factor(s, total, warm, "cosine") for s in range(total)]
    assert f[:4] == [0.25, 0.5, 0.75, 1.0]
    assert f[4] == 1.0 and all(a > b for a, b in zip(f[4:], f[5:])) and 0 < f[-1] < 0.02
    assert f[12] == pytest.approx(0.5 * (1 + math.cos(math.pi * 8 / 16)))
    assert [lr_factor(s, total, 0, "constant") for s in range(total)] == [1.0] * total
    assert np.allclose([lr_factor(s, 10, 5, "constant") for s in range(10)], [0.2, 0.4, 0.6, 0.8, 1, 1, 1, 1, 1, 1])


def test_cosine_schedule_reaches_the_optimizer(tiny_configs, tiny_store, tmp_path, monkeypatch):
    """The lr of every batch follows the schedule, recorded in the checkpoint; resume keeps it (same weights)."""
    from edcli.checkpoint import load_checkpoint
    from edcli.commands.train import run as run_train
    from edcli.training import loop  # train_epoch as fit_epoch looks it up

    data, bb, model_cfg, train = tiny_configs
    train = replace(train, epochs=3, lr_schedule="cosine", warmup_epochs=1, optimizer="per-level")
    seen = []
    real = loop.train_epoch

    def spy(*a, **k):
        seen.append([k["lr_at"](k["step0"] + b) for b in range(4)])
        return real(*a, **k)

    monkeypatch.setattr(loop, "train_epoch", spy)
    run_train(
        data=data, bb_cfg=bb, model_cfg=model_cfg, train_cfg=train, store=str(tiny_store), out=str(tmp_path / "full")
    )
    # 7 fit images, batch 2 -> 4 batches per epoch, 12 in all; warm-up over the first 4
    lrs = [x for row in seen for x in row]
    want = [train.lr * lr_factor(s, 12, 4, "cosine") for s in range(12)]
    assert lrs == pytest.approx(want) and lrs[3] == pytest.approx(train.lr)
    ck = load_checkpoint(tmp_path / "full" / "checkpoints" / "brick.pt")
    assert ck.config["train"]["lr_schedule"] == "cosine" and ck.config["train"]["warmup_epochs"] == 1

    def interrupted(*a, **k):
        if k["step0"] == 8:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(loop, "train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_train(
            data=data, bb_cfg=bb, model_cfg=model_cfg, train_cfg=train, store=str(tiny_store), out=str(tmp_path / "cut")
        )
    monkeypatch.setattr(loop, "train_epoch", real)
    run_train(
        data=data,
        bb_cfg=bb,
        model_cfg=model_cfg,
        train_cfg=train,
        store=str(tiny_store),
        out=str(tmp_path / "cut"),
        resume=True,
    )
    cut = load_checkpoint(tmp_path / "cut" / "checkpoints" / "brick.pt")
    for a, b in zip(ck.state_dicts, cut.state_dicts):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoints_from_before_width_load_with_the_c_half_rule(tiny_run):
    """Old checkpoints stored d_model=() meaning the C/2 rule; new ones record the widths they built."""
    from edcli.checkpoint import build_model, load_checkpoint
    from edcli.config import ModelConfig

    ck = load_checkpoint(tiny_run / "checkpoints" / "brick.pt")
    assert ck.config["model"]["d_model"] == [64, 64] and ck.config["model"]["width"] == "reference"
    old = {k: v for k, v in ck.config["model"].items() if k != "width"}
    old["d_model"] = []
    assert ModelConfig.from_dict(old).width == "auto"
    ck.config = dict(ck.config, model=old)
    model = build_model(ck)  # lite0's C/2 rule: 64, 64, the widths the weights have
    assert [lv.d_model for lv in model.levels] == [64, 64]
