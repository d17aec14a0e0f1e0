"""--score ed|rec|rec-kl: the per-token maths, the one scoring path honouring the checkpoint's score, and eval's
override."""

from __future__ import annotations

import pytest
import torch
from conftest import invoke


def test_token_scores_are_the_documented_products():
    from edcli.errors import ConfigError
    from edcli.method.scoring import token_score

    g = torch.Generator().manual_seed(0)
    rec, kl = torch.rand(2, 9, generator=g, dtype=torch.float64), torch.rand(2, 9, generator=g, dtype=torch.float64)
    s = torch.softmax(-kl, dim=-1)
    torch.testing.assert_close(token_score(rec, kl, "ed"), rec * (s.max(-1, keepdim=True).values - s))
    torch.testing.assert_close(token_score(rec, kl, "rec"), rec)
    torch.testing.assert_close(token_score(rec, kl, "rec-kl"), rec * kl)
    with pytest.raises(ConfigError, match="--score 'kl'"):
        token_score(rec, kl, "kl")


def test_one_pass_gives_every_score_as_the_scorer_does(one_thread):
    """MapScorer(score=X) equals assemble(token_score(level_parts, X)): what bench/stability.py relies on."""
    from edcli.config import ModelConfig
    from edcli.method.model import build_ed_model
    from edcli.method.scorer import MapScorer
    from edcli.method.scoring import token_score

    torch.manual_seed(0)
    model = build_ed_model([16, 24], [(4, 4), (2, 2)], [torch.randn(16, 16), torch.randn(24, 4)],
                           ModelConfig(layers=1, heads=2, d_model=(16, 16))).eval()  # fmt: skip
    feats = [torch.randn(2, 16, 4, 4), torch.randn(2, 24, 2, 2)]
    base = MapScorer(model.levels, 32, 4.0, "max")
    with torch.inference_mode():
        parts = base.level_parts(feats)
        for score in ("ed", "rec", "rec-kl"):
            want = MapScorer(model.levels, 32, 4.0, "max", score=score)(feats)
            got = base.assemble([token_score(r, k, score) for r, k in parts])
            torch.testing.assert_close(got.scores, want.scores)
            torch.testing.assert_close(got.raw, want.raw)


def test_eval_uses_the_checkpoint_score_and_an_override_has_no_threshold(tiny_run):
    from edcli.commands.eval import run as run_eval
    from edcli.config import EvalConfig

    cfg = EvalConfig(device="cpu")
    own = run_eval(run_dir=str(tiny_run), checkpoint=None, eval_cfg=cfg)["rows"][0]
    other = run_eval(run_dir=str(tiny_run), checkpoint=None, eval_cfg=cfg, score="rec")["rows"][0]
    assert own["score"] == "rec-kl" and own["threshold"] is not None  # the default score
    assert other["score"] == "rec" and other["threshold"] is None  # calibrated for rec-kl only
    res = invoke("eval", "--run", tiny_run, "--score", "bogus", "--device", "cpu")
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert res.returncode == 2 and len(errors) == 1 and "--score" in errors[0], res.stderr
