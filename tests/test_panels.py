"""Heat-map panels draw the image as it was scored: one decoder (data.images) for scoring and panels alike."""

from __future__ import annotations

import numpy as np
from PIL import Image

from edcli.data.images import FileDataset, load_image
from edcli.report import heatmap_panel


def _grey16_and_copy(tmp_path):
    """A 16-bit greyscale PNG (a ramp and a bright square over the full 0..65535 range) and its 8-bit copy."""
    a = np.tile(np.linspace(0, 40_000, 48), (48, 1))
    a[10:20, 10:20] = 65_535
    p16, p8 = tmp_path / "grey16.png", tmp_path / "grey8.png"
    Image.fromarray(a.astype(np.uint16)).save(p16)
    Image.fromarray((a / 257).round().astype(np.uint8)).save(p8)
    assert Image.open(p16).mode.startswith("I")  # really 16-bit on disk
    return p16, p8


def test_a_16_bit_png_is_drawn_as_it_is_scored_not_as_a_white_square(tmp_path):
    p16, p8 = _grey16_and_copy(tmp_path)
    # ed infer: the panel draws the `original` its dataset decoded for scoring (no second decode)
    ds = FileDataset([str(p16), str(p8)], 32, "squash", keep_original=True)
    got16, got8 = ds[0], ds[1]
    assert got16["error"] == "" and np.abs(got16["original"].astype(int) - got8["original"]).max() <= 1
    assert np.abs(got16["image"] - got8["image"]).max() <= 1 / 255 + 1e-6
    # ed eval: the panel reads the file with load_image, the scoring decoder
    eval16 = load_image(str(p16), 32, "squash").permute(1, 2, 0).numpy()
    assert np.abs(eval16 - load_image(str(p8), 32, "squash").permute(1, 2, 0).numpy()).max() <= 1 / 255 + 1e-6
    panel = heatmap_panel(got16["original"], np.zeros((48, 48), np.float32), 0.0, 1.0, title="grey16.png")
    H = panel.shape[0] - 24 - 18 - 8  # under the title and tile-name lines, above the bottom margin
    tile = panel[24 + 18 : 24 + 18 + H, 8 : 8 + H].astype(float)  # the first tile: the image
    assert tile.std() > 20 and tile.mean() < 200, (tile.mean(), tile.std())  # a white square has std 0, mean 255
