"""On an easy generated category a tiny ED model, trained a few epochs on the CPU, finds the defects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SIZE = 64


def _easy_category(root: Path, seed: int = 0) -> Path:
    """A smooth random texture; defects are dark squares of 10-14 px with exact masks."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    cat = root / "easy"

    def texture():
        noise = gaussian_filter(rng.random((SIZE, SIZE, 3)), sigma=(2, 2, 0))
        return (120 + 200 * (noise - noise.mean())).clip(0, 255).astype(np.uint8)

    for i in range(16):
        (cat / "train" / "good").mkdir(parents=True, exist_ok=True)
        Image.fromarray(texture()).save(cat / "train" / "good" / f"{i:03d}.png")
    for i in range(8):
        (cat / "test" / "good").mkdir(parents=True, exist_ok=True)
        Image.fromarray(texture()).save(cat / "test" / "good" / f"{i:03d}.png")
    for i in range(8):
        img, mask = texture(), np.zeros((SIZE, SIZE), np.uint8)
        s = int(rng.integers(10, 15))
        y, x = rng.integers(8, SIZE - 8 - s, size=2)
        img[y : y + s, x : x + s] = 10
        mask[y : y + s, x : x + s] = 255
        for sub in ("test/hole", "ground_truth/hole"):
            (cat / sub).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(cat / "test" / "hole" / f"{i:03d}.png")
        Image.fromarray(mask).save(cat / "ground_truth" / "hole" / f"{i:03d}_mask.png")
    return root


@pytest.mark.slow
def test_tiny_model_finds_easy_defects(tmp_path):
    from edcli.commands.eval import run as run_eval
    from edcli.commands.train import run as run_train
    from edcli.config import (
        BackboneConfig,
        DataConfig,
        EvalConfig,
        ModelConfig,
        TrainConfig,
    )

    root = _easy_category(tmp_path / "data")
    data = DataConfig(dataset="mvtec", data_path=str(root), image_size=SIZE)
    run_train(
        data=data,
        bb_cfg=BackboneConfig(name="tf_efficientnet_lite0"),
        model_cfg=ModelConfig(layers=2, heads=4, d_model=(64, 64)),
        train_cfg=TrainConfig(epochs=5, batch_size=2, lr=1e-3, seed=3407, device="cpu", calib_fraction=0.0),
        store=str(tmp_path / "store"),
        out=str(tmp_path / "run"),
    )
    res = run_eval(run_dir=str(tmp_path / "run"), checkpoint=None, eval_cfg=EvalConfig(device="cpu"))
    row = res["rows"][0]
    print({k: row[k] for k in ("image_auroc", "pixel_auroc", "aupro")})
    assert row["image_auroc"] > 0.9 and row["pixel_auroc"] > 0.9, row
