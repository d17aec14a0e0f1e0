"""`--resume` refuses cleanly: every refusal names the option with both values, says --overwrite starts again,
and comes before anything is written (run.json unchanged); a finished category is not retrained with other
settings; another width is one line, not a state-dict error."""

from __future__ import annotations

from dataclasses import replace

import pytest
from conftest import invoke, tiny_train_args


@pytest.fixture
def cut_run(tiny_configs, tiny_store, tmp_path, monkeypatch):
    """A run interrupted after its first epoch: a resume state and no checkpoint."""
    from edcli.commands.train import run as run_train
    from edcli.training import loop

    data, bb, model, train = tiny_configs
    real, calls = loop.train_epoch, {"n": 0}

    def interrupted(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(loop, "train_epoch", interrupted)
    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        run_train(data=data, bb_cfg=bb, model_cfg=model, train_cfg=replace(train, epochs=3), store=str(tiny_store),
                  out=str(out))  # fmt: skip
    monkeypatch.setattr(loop, "train_epoch", real)
    assert (out / "checkpoints" / "brick.resume.pt").exists()
    return out


def _train(tiny_data, tiny_store, out, *extra):
    return invoke(*tiny_train_args(tiny_data, tiny_store, out, epochs=3), *extra)


def _one_error(res) -> str:
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert res.returncode == 1 and len(errors) == 1 and "Traceback" not in res.stderr, res.stderr
    return errors[0]


@pytest.mark.parametrize(
    "extra,named",
    [
        (("--lr", "0.002"), "--lr 0.0001 (asked: 0.002)"),
        (("--d-model", "32,32"), "--d-model 64,64 (asked: 32,32)"),
        (("--heads", "2"), "--heads 4 (asked: 2)"),
    ],
)
def test_a_refused_resume_names_both_values_and_writes_nothing(cut_run, tiny_data, tiny_store, extra, named):
    run_json = (cut_run / "run.json").read_bytes()
    state = (cut_run / "checkpoints" / "brick.resume.pt").read_bytes()
    line = _one_error(_train(tiny_data, tiny_store, cut_run, "--resume", *extra))
    assert named in line and "--overwrite" in line and "brick" in line, line
    assert (cut_run / "run.json").read_bytes() == run_json
    assert (cut_run / "checkpoints" / "brick.resume.pt").read_bytes() == state
    assert not (cut_run / "checkpoints" / "brick.pt").exists()


def test_same_options_resume_and_a_finished_category_is_not_retrained_with_others(cut_run, tiny_data, tiny_store):
    res = _train(tiny_data, tiny_store, cut_run, "--resume")
    assert res.returncode == 0, res.stderr
    ckpt = cut_run / "checkpoints" / "brick.pt"
    done, run_json = ckpt.read_bytes(), (cut_run / "run.json").read_bytes()
    line = _one_error(_train(tiny_data, tiny_store, cut_run, "--resume", "--seed", "8"))
    assert "--seed 7 (asked: 8)" in line and str(ckpt) in line and "--overwrite" in line
    assert ckpt.read_bytes() == done and (cut_run / "run.json").read_bytes() == run_json


def test_a_refusal_over_the_automatic_width_names_it():
    from edcli.config import TrainConfig
    from edcli.training.resume import differences

    cfg = TrainConfig()
    diffs = differences(cfg.to_dict(), {"d_model": ()}, cfg, {"d_model": (96, 96)})
    assert diffs == ["--d-model auto (asked: 96,96)"]


def test_more_epochs_bind_an_swa_run_only_through_its_middle_epoch_start():
    from edcli.config import TrainConfig
    from edcli.training.resume import differences

    for start, binding in ((0, True), (2, False)):  # 0: the middle epoch, which moves with --epochs
        was = TrainConfig(epochs=4, average="swa", swa_start=start, lr_schedule="constant")
        now = TrainConfig(epochs=6, average="swa", swa_start=start, lr_schedule="constant")
        assert bool(differences(was.to_dict(), None, now, {})) is binding, start
