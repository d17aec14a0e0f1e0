"""--average ema|swa: the averaged weights are the ones evaluated, calibrated and saved, and a resumed run ends
bit for bit where an uninterrupted one does."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch


def _train(tiny_configs, tiny_store, out, **train_kw):
    from edcli.commands.train import run as run_train

    data, bb, model, train = tiny_configs
    cfg = replace(train, epochs=3, eval_every=1, **train_kw)
    return run_train(data=data, bb_cfg=bb, model_cfg=model, train_cfg=cfg, store=str(tiny_store), out=str(out))


def _states(path):
    return torch.load(path, weights_only=True)["state_dicts"]


@pytest.mark.slow
@pytest.mark.parametrize("average", ["ema", "swa"])
def test_a_resumed_average_equals_an_uninterrupted_one(tiny_configs, tiny_store, tmp_path, monkeypatch, average):
    from edcli.training import loop

    _train(tiny_configs, tiny_store, tmp_path / "whole", average=average, swa_start=2)
    real, calls = loop.train_epoch, {"n": 0}

    def interrupted(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:  # during the third epoch: the average holds two epochs' worth
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(loop, "train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _train(tiny_configs, tiny_store, tmp_path / "cut", average=average, swa_start=2)
    monkeypatch.setattr(loop, "train_epoch", real)
    from edcli.commands.train import run as run_train

    data, bb, model, train = tiny_configs
    cfg = replace(train, epochs=3, eval_every=1, average=average, swa_start=2)
    run_train(data=data, bb_cfg=bb, model_cfg=model, train_cfg=cfg, store=str(tiny_store), out=str(tmp_path / "cut"),
              resume=True)  # fmt: skip
    whole, cut = (torch.load(tmp_path / p / "checkpoints" / "brick.pt", weights_only=True) for p in ("whole", "cut"))
    for a, b in zip(whole["state_dicts"], cut["state_dicts"]):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [h["image_auroc"] for h in whole["history"]] == [h["image_auroc"] for h in cut["history"]]
    assert whole["calibration"]["threshold"] == cut["calibration"]["threshold"]


@pytest.mark.parametrize("average", ["ema", "swa"])
def test_the_average_is_what_is_evaluated_and_saved(tiny_configs, tiny_store, tmp_path, monkeypatch, average):
    """The checkpoint holds the average (not the last step's weights), and the last epoch's test AUROC in the
    history is the average's."""
    from edcli.training import average as average_mod

    seen = {}
    real_after = average_mod.Averager.after_epoch

    def spy(self, model, epoch):
        real_after(self, model, epoch)
        seen["raw"] = [{k: v.clone() for k, v in m.state_dict().items()} for m in model.levels]
        seen["avg"] = [{k: v.clone() for k, v in m.state_dict().items()} for m in self.scored(model).levels]

    monkeypatch.setattr(average_mod.Averager, "after_epoch", spy)
    _train(tiny_configs, tiny_store, tmp_path / "run", average=average)
    saved = _states(tmp_path / "run" / "checkpoints" / "brick.pt")
    for s, a in zip(saved, seen["avg"]):
        assert all(torch.equal(s[k], a[k]) for k in s)
    assert any(not torch.equal(s[k], r[k]) for s, r in zip(saved, seen["raw"]) for k in s if k in r)
    from edcli.commands.eval import run as run_eval
    from edcli.config import EvalConfig

    ev = run_eval(run_dir=str(tmp_path / "run"), checkpoint=None, eval_cfg=EvalConfig(device="cpu"))
    ck = torch.load(tmp_path / "run" / "checkpoints" / "brick.pt", weights_only=True)
    assert ev["rows"][0]["image_auroc"] == pytest.approx(ck["history"][-1]["image_auroc"], abs=1e-12)
    assert ck["selection"]["average"].startswith(average) and ev["rows"][0]["average"] == average
