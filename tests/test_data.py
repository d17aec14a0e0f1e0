"""Dataset layouts, geometry, masks and `ed infer` inputs, on miniature trees named as the real archives."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from edcli.data.images import (
    FileDataset,
    SampleDataset,
    expand_inputs,
    load_image,
    load_mask,
)
from edcli.data.layouts import (
    IMAGE_EXTS,
    SampleRef,
    discover_categories,
    list_split,
    normal_folder,
    resize_mode,
    select_categories,
)
from edcli.errors import ConfigError, DataError

W, H = 40, 28  # non-square, so squash and shorter-side + centre crop differ
RECT = (10, 6, 18, 14)  # x0, y0, x1, y1 of the defect, even edges so a 2x NEAREST downscale is exact


def masks_known(refs: list[SampleRef]) -> bool:
    """True when every anomalous sample has a mask (False for a `folder` dataset without ground_truth/)."""
    return all(r.label == 0 or r.mask_path is not None for r in refs)


def _save(path: Path, arr: np.ndarray, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, **kw)
    return path


def _scene(w: int = W, h: int = H) -> np.ndarray:
    """R: the defect rectangle; G: 6 * x; B: 9 * y. Content encodes position."""
    a = np.zeros((h, w, 3), np.uint8)
    x0, y0, x1, y1 = RECT
    a[y0:y1, x0:x1, 0] = 255
    a[..., 1] = (6 * np.arange(w))[None, :]
    a[..., 2] = (9 * np.arange(h))[:, None]
    return a


def _mask(on: int = 255, w: int = W, h: int = H) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    x0, y0, x1, y1 = RECT
    m[y0:y1, x0:x1] = on
    return m


def _mvtec(root: Path) -> Path:
    c = root / "bottle"
    for n in ("000", "001"):
        _save(c / "train/good" / f"{n}.png", _scene())
    _save(c / "train/good/002.jpg", _scene())  # MVTec lists .png only
    (c / "train/good/._000.png").write_bytes(b"AppleDouble")  # macOS archive junk, not an image
    _save(c / "test/good/000.png", _scene())
    for n in ("000", "001"):
        _save(c / "test/broken_large" / f"{n}.png", _scene())
        _save(c / "ground_truth/broken_large" / f"{n}_mask.png", _mask())
    _save(c / "test/contamination/000.png", _scene())
    _save(c / "ground_truth/contamination/000_mask.png", _mask())
    _save(root / "zipper/train/good/000.png", _scene()[..., 1])  # grey, like zipper/screw/grid
    (root / "license.txt").write_text("x")
    (root / "not_a_category").mkdir()
    return root


def test_modes_and_normal_folders():
    modes = [resize_mode(d) for d in ("mvtec", "folder", "btad", "mvtec3d")]
    assert modes == ["squash", "squash", "shorter_crop", "shorter_crop"]
    assert [normal_folder(d, "fine") for d in ("mvtec", "btad", "mvtec3d", "folder")] == ["good", "ok", "good", "fine"]
    with pytest.raises(ConfigError, match="visa"):
        resize_mode("visa")


def test_mvtec_listing(tmp_path):
    root = _mvtec(tmp_path)
    assert discover_categories("mvtec", root) == ["bottle", "zipper"]
    train = list_split("mvtec", root, "bottle", "train")
    assert [Path(r.path).name for r in train] == ["000.png", "001.png"]
    assert all(r.label == 0 and r.mask_path is None and os.path.isabs(r.path) for r in train)
    test = list_split("mvtec", root, "bottle", "test")
    assert [(r.defect_type, Path(r.path).name, r.label) for r in test] == [
        ("good", "000.png", 0),
        ("broken_large", "000.png", 1),
        ("broken_large", "001.png", 1),
        ("contamination", "000.png", 1),
    ]
    assert test[2].mask_path == str(root / "bottle/ground_truth/broken_large/001_mask.png")
    assert masks_known(test)


def test_select_categories():
    assert select_categories(["a", "b", "c"], ()) == ["a", "b", "c"]
    assert select_categories(["a", "b", "c"], ("c", "a", "c")) == ["c", "a"]
    with pytest.raises(DataError, match=r"unknown category zz.*a, b, c"):
        select_categories(["a", "b", "c"], ("a", "zz"))


def test_btad_listing_and_mask_extensions(tmp_path):
    for cat, ext, mext in (("01", ".bmp", ".png"), ("03", ".bmp", ".bmp")):
        c = tmp_path / cat
        _save(c / "train/ok" / f"0000{ext}", _scene())
        _save(c / "train/ok/0001.png", _scene())
        _save(c / "test/ok" / f"0000{ext}", _scene())
        _save(c / "test/ko" / f"0000{ext}", _scene())
        _save(c / "ground_truth/ko" / f"0000{mext}", _mask())
    assert discover_categories("btad", tmp_path) == ["01", "03"]
    assert len(list_split("btad", tmp_path, "03", "train")) == 2
    for cat, mext in (("01", ".png"), ("03", ".bmp")):
        test = list_split("btad", tmp_path, cat, "test")
        assert [(r.defect_type, r.label) for r in test] == [("ok", 0), ("ko", 1)]
        assert test[1].mask_path.endswith(f"ground_truth/ko/0000{mext}")
        m = load_mask(test[1], 14, "shorter_crop", "btad")
        assert m.sum() == 16  # the 8x8 defect, halved, inside the crop
    os.remove(tmp_path / "03/ground_truth/ko/0000.bmp")
    with pytest.raises(DataError) as e:
        list_split("btad", tmp_path, "03", "test")
    assert str(tmp_path / "03/ground_truth/ko/0000.png") in str(e.value)
    assert str(tmp_path / "03/ground_truth/ko/0000.bmp") in str(e.value)


def _mvtec3d(root: Path) -> Path:
    c = root / "bagel"
    _save(c / "train/good/rgb/000.png", _scene())
    (c / "train/good/xyz").mkdir(parents=True)
    (c / "train/good/xyz/000.tiff").write_bytes(b"not used")
    _save(c / "validation/good/rgb/000.png", _scene())
    _save(c / "test/good/rgb/000.png", _scene())
    _save(c / "test/good/gt/000.png", _mask(0))
    _save(c / "test/crack/rgb/000.png", _scene())
    m = _mask(200)
    m[6:14, 10:12] = 17  # non-binary values as in the archive: every non-zero value is a defect
    _save(c / "test/crack/gt/000.png", m)
    return root


def test_mvtec3d_listing_and_nonbinary_masks(tmp_path):
    root = _mvtec3d(tmp_path)
    assert discover_categories("mvtec3d", root) == ["bagel"]
    assert len(list_split("mvtec3d", root, "bagel", "train")) == 1
    test = list_split("mvtec3d", root, "bagel", "test")
    assert [(r.defect_type, r.label) for r in test] == [("good", 0), ("crack", 1)]
    assert test[1].mask_path == str(root / "bagel/test/crack/gt/000.png")
    full = load_mask(test[1], 28, "shorter_crop", "mvtec3d")  # 40x28 -> 40x28 (no resize), crop 28 from x=6
    x0, y0, x1, y1 = RECT
    want = np.zeros((28, 28), np.uint8)
    want[y0:y1, x0 - 6 : x1 - 6] = 1
    np.testing.assert_array_equal(full, want)  # the 17s count too
    # the same file read with the 8-bit rule (> 127) loses the 17-valued columns
    assert load_mask(test[1], 28, "shorter_crop", "mvtec").sum() == want.sum() - 16


def test_folder_layout(tmp_path):
    c = tmp_path / "widget"
    _save(c / "train/normal/a.jpg", _scene())
    _save(c / "train/normal/b.tif", _scene())
    _save(c / "test/normal/a.png", _scene())
    _save(c / "test/scratch/s1.jpeg", _scene())
    _save(c / "test/scratch/s2.png", _scene())
    _save(c / "ground_truth/scratch/s1_mask.png", _mask())
    _save(c / "ground_truth/scratch/s2.bmp", _mask())
    d = tmp_path / "gadget"  # no ground_truth/ at all: masks unknown, not zero
    _save(d / "train/normal/a.png", _scene())
    _save(d / "test/scratch/s1.png", _scene())
    assert discover_categories("folder", tmp_path, "normal") == ["gadget", "widget"]
    with pytest.raises(DataError, match="train/good"):
        discover_categories("folder", tmp_path)
    assert len(list_split("folder", tmp_path, "widget", "train", "normal")) == 2
    test = list_split("folder", tmp_path, "widget", "test", "normal")
    assert [Path(r.mask_path).name if r.mask_path else None for r in test] == [None, "s1_mask.png", "s2.bmp"]
    assert [r.label for r in test] == [0, 1, 1]
    unknown = list_split("folder", tmp_path, "gadget", "test", "normal")
    assert unknown[0].label == 1 and unknown[0].mask_path is None and not masks_known(unknown)
    with pytest.raises(DataError, match="s1.png"):
        load_mask(unknown[0], 8, "squash", "folder")
    item = SampleDataset(unknown, 8, "squash", "folder", with_masks=True)[0]  # flagged, not silently normal
    assert item["mask_known"] is False and item["label"] == 1 and not item["mask"].any()
    os.remove(c / "ground_truth/scratch/s2.bmp")  # ground_truth/ exists, so every anomalous image needs its mask
    with pytest.raises(DataError, match=str(c / "ground_truth/scratch/s2_mask.png")):
        list_split("folder", tmp_path, "widget", "test", "normal")


def test_layout_errors_name_the_path(tmp_path):
    root = _mvtec(tmp_path / "mv")
    missing = tmp_path / "nope"
    with pytest.raises(DataError) as e:
        discover_categories("mvtec", missing)
    assert str(missing) in str(e.value) and "MVTec AD layout" in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as e:
        discover_categories("btad", tmp_path / "empty")
    assert f"expected {tmp_path / 'empty'}/<category>/train/ok/*.bmp|*.png (BTAD layout)" in str(e.value)
    with pytest.raises(DataError, match="--category bottle"):  # pointed at a category, not the root
        discover_categories("mvtec", root / "bottle")
    with pytest.raises(DataError, match="train/good/rgb"):  # an MVTec AD tree read as MVTec 3D-AD
        discover_categories("mvtec3d", root)
    os.remove(root / "bottle/ground_truth/broken_large/001_mask.png")
    with pytest.raises(DataError) as e:
        list_split("mvtec", root, "bottle", "test")
    assert str(root / "bottle/ground_truth/broken_large/001_mask.png") in str(e.value)
    for n in ("000.png", "001.png", "002.jpg"):
        os.remove(root / "bottle/train/good" / n)
    with pytest.raises(DataError, match=f"no training images in {root / 'bottle/train/good'}"):
        list_split("mvtec", root, "bottle", "train")
    with pytest.raises(DataError, match=str(root / "cable")):
        list_split("mvtec", root, "cable", "train")
    with pytest.raises(DataError, match=str(root / "zipper/test")):
        list_split("mvtec", root, "zipper", "test")
    bad = root / "zipper/train/good/000.png"
    bad.write_text("not a png")
    with pytest.raises(DataError, match=f"could not decode image {bad}"):
        load_image(str(bad), 8, "squash")


# ----------------------------------------------------------------------------------------------------------- geometry


def _tv(img: Image.Image, size: int, interp) -> np.ndarray:
    """torchvision's Resize(int) + CenterCrop: the reference's transform, as an oracle."""
    return np.asarray(T.CenterCrop(size)(T.Resize(size, interpolation=interp)(img)))


@pytest.mark.parametrize("wh", [(40, 28), (28, 40), (23, 14), (14, 23), (13, 13)])
def test_shorter_crop_matches_torchvision(tmp_path, wh):
    w, h = wh  # (23, 14) at S=8: long side 13, crop offset 2.5 -> 2 (round half to even)
    p = _save(tmp_path / "x.png", _scene(max(w, 40), max(h, 40))[:h, :w])
    got = (load_image(str(p), 8, "shorter_crop").permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(got, _tv(Image.open(p), 8, T.InterpolationMode.LANCZOS))
    mp = _save(tmp_path / "m.png", (np.arange(w * h).reshape(h, w) % 2 * 255).astype(np.uint8))
    ref = SampleRef(str(p), 1, "d", str(mp))
    np.testing.assert_array_equal(
        load_mask(ref, 8, "shorter_crop", "btad") * 255, _tv(Image.open(mp), 8, T.InterpolationMode.NEAREST)
    )


def test_squash_matches_pil_and_differs_from_crop(tmp_path):
    p = _save(tmp_path / "x.png", _scene())
    got = load_image(str(p), 14, "squash")
    assert got.shape == (3, 14, 14) and got.dtype == torch.float32
    want = np.asarray(Image.open(p).convert("RGB").resize((14, 14), Image.LANCZOS)).astype(np.float32) / 255
    torch.testing.assert_close(got, torch.from_numpy(want).permute(2, 0, 1), rtol=0, atol=1e-7)
    assert not torch.equal(got, load_image(str(p), 14, "shorter_crop"))
    # squash keeps the whole width: column j samples x = (j + 0.5) * 40/14 - 0.5 of the G = 6x ramp
    g = got[1, 7].numpy() * 255
    x = (np.arange(14) + 0.5) * W / 14 - 0.5
    np.testing.assert_allclose(g[3:11], 6 * x[3:11], atol=1.5)


def test_image_and_mask_stay_aligned_after_shorter_crop(tmp_path):
    p = _save(tmp_path / "img.png", _scene())
    ref = SampleRef(str(p), 1, "d", str(_save(tmp_path / "img_mask.png", _mask())))
    img = load_image(str(p), 14, "shorter_crop")  # 40x28 -> 20x14 (exact halving), crop x from 3
    mask = load_mask(ref, 14, "shorter_crop", "mvtec")
    want = np.zeros((14, 14), np.uint8)
    x0, y0, x1, y1 = RECT
    want[y0 // 2 : y1 // 2, x0 // 2 - 3 : x1 // 2 - 3] = 1
    np.testing.assert_array_equal(mask, want)
    # the image's defect (R) has the mask's centroid
    r = img[0].numpy()
    ys, xs = np.nonzero(mask)
    cy, cx = (r * np.arange(14)[:, None]).sum() / r.sum(), (r * np.arange(14)[None, :]).sum() / r.sum()
    assert abs(cy - ys.mean()) < 0.5 and abs(cx - xs.mean()) < 0.5
    # G = 6x: column c came from resized column c + 3, i.e. source x = 2(c + 3) + 0.5
    g = img[1, 7].numpy() * 255
    np.testing.assert_allclose(g[2:12], 6 * (2 * (np.arange(14) + 3) + 0.5)[2:12], atol=1.0)
    b = img[2, :, 7].numpy() * 255  # rows are not cropped: y = 2r + 0.5
    np.testing.assert_allclose(b[2:12], 9 * (2 * np.arange(14) + 0.5)[2:12], atol=1.0)


def test_grey_becomes_three_equal_channels(tmp_path):
    root = _mvtec(tmp_path)
    (ref,) = list_split("mvtec", root, "zipper", "train")
    img = load_image(ref.path, 10, "squash")
    assert img.shape == (3, 10, 10)
    assert torch.equal(img[0], img[1]) and torch.equal(img[1], img[2])
    want = np.asarray(Image.open(ref.path).resize((10, 10), Image.LANCZOS)) / 255
    np.testing.assert_allclose(img[0].numpy(), want, atol=1e-6)


def test_mask_binarised_above_half_range(tmp_path):
    m = np.zeros((H, W), np.uint8)
    m[:, :10], m[:, 10:20], m[:, 20:30], m[:, 30:] = 0, 127, 128, 255
    ref = SampleRef(str(_save(tmp_path / "i.png", _scene())), 1, "d", str(_save(tmp_path / "m.png", m)))
    got = load_mask(ref, 20, "squash", "mvtec")
    assert got.dtype == np.uint8 and set(np.unique(got)) == {0, 1}
    np.testing.assert_array_equal(got[0], [0] * 10 + [1] * 10)  # 40 -> 20 wide: 2 columns per output
    assert load_mask(ref, 20, "squash", "mvtec3d")[0, 5:].all()  # 127 counts in MVTec 3D-AD
    m16 = m.astype(np.uint16) * 257  # 16-bit masks: half of 65535
    ref16 = SampleRef(ref.path, 1, "d", str(_save(tmp_path / "m16.png", m16)))
    np.testing.assert_array_equal(load_mask(ref16, 20, "squash", "mvtec"), got)
    assert not load_mask(SampleRef(ref.path, 0, "good", None), 20, "squash", "mvtec").any()


def test_sample_dataset_items(tmp_path):
    root = _mvtec(tmp_path)
    refs = list_split("mvtec", root, "bottle", "test")
    ds = SampleDataset(refs, 12, "squash", "mvtec", with_masks=True)
    assert len(ds) == 4
    item = ds[1]
    assert item["label"] == 1 and item["index"] == 1 and item["image"].shape == (3, 12, 12)
    assert item["mask"].dtype == torch.uint8 and item["mask"].shape == (12, 12)
    np.testing.assert_array_equal(item["mask"].numpy(), load_mask(refs[1], 12, "squash", "mvtec"))
    assert item["mask"].sum() > 0 and ds[0]["mask"].sum() == 0
    assert item["mask_known"] is True and ds[0]["mask_known"] is True
    assert "mask" not in SampleDataset(refs, 12, "squash", "mvtec")[1]
    with pytest.raises(ConfigError):
        SampleDataset(refs, 12, "stretch", "mvtec")


# ------------------------------------------------------------------------------------------------------ ed infer


@pytest.fixture
def inputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _save(tmp_path / "in/a.png", _scene())
    _save(tmp_path / "in/b.JPG", _scene())
    _save(tmp_path / "in/sub/c.png", _scene())
    _save(tmp_path / "in/.hidden.png", _scene())
    (tmp_path / "in/notes.txt").write_text("x")
    (tmp_path / "other.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    return tmp_path


def test_expand_inputs_files_folders_globs(inputs):
    assert expand_inputs(["in"]) == ["in/a.png", "in/b.JPG"]
    assert expand_inputs(["in"], recursive=True) == ["in/a.png", "in/b.JPG", "in/sub/c.png"]
    # explicit files are kept whatever their name; order as given; duplicates keep their first place
    assert expand_inputs(["other.txt", "in/b.JPG", "in", "./in/a.png"]) == ["other.txt", "in/b.JPG", "in/a.png"]
    assert expand_inputs(["in/*.png"]) == ["in/a.png"]
    assert expand_inputs(["in/*"]) == ["in/a.png", "in/b.JPG"]  # globs keep image files only
    assert expand_inputs(["in/**/*.png"], recursive=True) == ["in/a.png", "in/sub/c.png"]
    assert expand_inputs([str(inputs / "in/?.png")]) == [str(inputs / "in/a.png")]


def test_expand_inputs_stdin(inputs):
    got = expand_inputs(["in/a.png", "-"], stdin=io.StringIO("in/sub/c.png\n\nin/a.png\r\nin\n"))
    assert got == ["in/a.png", "in/sub/c.png", "in/b.JPG"]
    with pytest.raises(DataError, match="stdin"):
        expand_inputs(["-"], stdin=io.StringIO("\n"))
    with pytest.raises(DataError, match="gone.png"):
        expand_inputs(["-"], stdin=io.StringIO("gone.png\n"))


@pytest.mark.parametrize("bad", ["missing.png", "in/*.bmp", "empty", "nothing/**"])
def test_expand_inputs_errors_name_the_input(inputs, bad):
    with pytest.raises(DataError, match=bad.replace("*", r"\*")):
        expand_inputs(["in/a.png", bad])


def _files(tmp_path: Path) -> list[str]:
    good = _save(tmp_path / "good.png", _scene())
    data = good.read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.png").write_text("hello, not an image")
    grey = _save(tmp_path / "grey.jpg", _scene()[..., 1], quality=95)
    b16 = _save(tmp_path / "b16.png", np.full((H, W), 128 * 257, np.uint16))  # mode I;16
    rgba = _scene()
    rgba = np.concatenate([rgba, np.zeros((H, W, 1), np.uint8)], axis=2)  # fully transparent
    rgba_p = _save(tmp_path / "rgba.png", rgba)
    return [str(p) for p in (good, tmp_path / "trunc.png", tmp_path / "text.png", grey, b16, rgba_p)]


def test_file_dataset_never_raises(tmp_path):
    paths = _files(tmp_path)
    ds = FileDataset(paths, 14, "squash")
    items = [ds[i] for i in range(len(ds))]
    good, trunc, text, grey, b16, rgba = items
    assert good["error"] == "" and (good["orig_h"], good["orig_w"]) == (H, W)
    assert torch.equal(good["image"], load_image(paths[0], 14, "squash"))
    for it, path, why in ((trunc, paths[1], "truncated"), (text, paths[2], "not a recognised image")):
        assert path in it["error"] and why in it["error"]
        assert it["image"].shape == (3, 14, 14) and not it["image"].any() and it["orig_h"] == 0
    assert grey["error"] == "" and torch.equal(grey["image"][0], grey["image"][2])
    assert b16["error"] == "" and torch.allclose(b16["image"], torch.full((3, 14, 14), 128 / 255))
    assert rgba["error"] == "" and torch.equal(rgba["image"], good["image"])  # alpha dropped, colour kept
    assert [it["index"] for it in items] == list(range(6))


def test_file_dataset_through_dataloader_workers(tmp_path):
    paths = _files(tmp_path)
    ds = FileDataset(paths, 14, "shorter_crop")
    batches = list(torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2))
    assert [len(b["error"]) for b in batches] == [4, 2]
    images = torch.cat([b["image"] for b in batches])
    assert images.shape == (6, 3, 14, 14)
    for i in range(6):
        assert torch.equal(images[i], ds[i]["image"])
    assert torch.cat([b["index"] for b in batches]).tolist() == list(range(6))
    errors = [e for b in batches for e in b["error"]]
    assert [bool(e) for e in errors] == [False, True, True, False, False, False]
    assert batches[0]["orig_w"].tolist() == [W, 0, 0, W]


def test_image_exts_cover_the_layouts():
    assert {".png", ".bmp", ".jpg"} <= set(IMAGE_EXTS) and all(e == e.lower() for e in IMAGE_EXTS)


def test_folder_category_without_test_holds_out_normal_images(tmp_path):
    for i in range(10):
        _save(tmp_path / f"widget/train/normal/{i:02d}.jpg", _scene())
    train = list_split("folder", tmp_path, "widget", "train", "normal", test_fraction=0.2, seed=5)
    test = list_split("folder", tmp_path, "widget", "test", "normal", test_fraction=0.2, seed=5)
    assert len(train) == 8 and len(test) == 2 and all(r.label == 0 and r.mask_path is None for r in test)
    assert sorted(r.path for r in train + test) == sorted(str(p) for p in (tmp_path / "widget/train/normal").iterdir())
    again = list_split("folder", tmp_path, "widget", "test", "normal", test_fraction=0.2, seed=5)
    assert [r.path for r in again] == [r.path for r in test]  # the seed picks them
    picks = {
        tuple(r.path for r in list_split("folder", tmp_path, "widget", "test", "normal", 0.2, s)) for s in range(6)
    }
    assert len(picks) > 1
    assert len(list_split("folder", tmp_path, "widget", "test", "normal", test_fraction=0.5)) == 5
    with pytest.raises(DataError, match="test"):  # the MVTec layout still needs its test/ folder
        list_split("mvtec", tmp_path, "widget", "test", "normal")


def test_other_image_types_under_the_mvtec_layout_suggest_folder(tmp_path):
    _save(tmp_path / "jpgs/widget/train/good/a.jpg", _scene())
    with pytest.raises(DataError, match=r"\.jpg files: --dataset folder"):
        list_split("mvtec", tmp_path / "jpgs", "widget", "train")
    _save(tmp_path / "named/gadget/train/normal/a.png", _scene())
    with pytest.raises(DataError, match="--dataset folder --normal-name normal"):
        discover_categories("mvtec", tmp_path / "named")


def test_exif_orientation_is_applied_everywhere_an_image_is_read(tmp_path, tiny_run):
    """A file stored sideways with EXIF orientation 6 (as phones write them) is read upright: decoded pixels, the
    size the mask check uses, the model input, and so the score equal those of its untagged upright copy."""
    from PIL import Image

    from edcli import Detector
    from edcli.data.images import _image_size, decode_rgb, load_image

    rng = np.random.default_rng(3)
    upright_px = (rng.random((40, 64, 3)) * 255).astype(np.uint8)  # H 40, W 64: a landscape picture
    Image.fromarray(upright_px).save(tmp_path / "upright.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": the stored pixels are the upright ones turned 90 CCW
    Image.fromarray(np.ascontiguousarray(np.rot90(upright_px, 1))).save(tmp_path / "tagged.png", exif=exif)
    tagged, plain = str(tmp_path / "tagged.png"), str(tmp_path / "upright.png")
    with Image.open(tagged) as im:
        assert im.size == (40, 64) and im.getexif()[0x0112] == 6  # stored portrait
    assert np.array_equal(np.asarray(decode_rgb(tagged)), upright_px)
    assert _image_size(tagged) == _image_size(plain) == (64, 40)
    assert torch.equal(load_image(tagged, 32, "squash"), load_image(plain, 32, "squash"))
    det = Detector.load(tiny_run / "checkpoints" / "brick.pt", device="cpu")
    a, b = det.predict([tagged, plain])
    assert a.score == b.score and a.size == b.size == (40, 64)
    # a PIL image handed to the API, too (one image a batch on both sides: the batch size may move the last bits)
    assert det.predict(Image.open(tagged)).score == det.predict(plain).score
