"""`ed train --select validation`: choose the epoch without test labels.

A share of the normal train images (`--val-fraction`, chosen by the seed) is held out of training AND of the
calibration hold-out; each held-out image gets COPIES copies per kind of `data/defects.VALIDATION_KINDS` (perlin:
another held-out image's texture blended into a Perlin-shaped region, smear, crack), each at its own random place
and size (exact masks; perlin and smear regions cover 0.5-8 % of the image, a crack about 0.4-3 %). Several copies
per kind at many sizes, because one blur, noise and erase blob of one size per image was found by every epoch
(validation 0.97-0.99 for epochs whose test AUROC ranged 0.83-1.0): it could not rank epochs.
Their pooled features are computed once and cached in the store (`STORE/validation/...`). Every `--eval-every N`
epochs (every epoch by default) the model scores them; the epoch with the best mean of the validation image and
pixel AUROC is kept (a tie goes to the earlier epoch).

Why a hold-out of its own and not the calibration one: the threshold is mean + 3 sd of the held-out normal
scores; an epoch chosen to make exactly those images score low would
bias that threshold low (more false alarms on new images). Kept apart, the threshold stays an estimate on images
that no decision touched. Why the mean of image and pixel AUROC: one checkpoint serves detection and
localisation, and with few held-out images the image AUROC takes few distinct values (ties are common); the pixel
AUROC, over every pixel, separates them.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from edcli.errors import ConfigError

VALIDATION_FORMAT = 2  # bump when a change here or in data/defects.py's validation kinds changes the validation images
COPIES = 3  # defective copies per held-out image and kind, each with its own place, size and draw
MIN_AREA = 0.0025  # a copy whose defect changed fewer pixels than this share is drawn again (flat image regions)
DRAWS = 8
KEY = "validation"  # the selection's name and its entry in the best-so-far dict of the resume state


def split(n: int, calib_fraction: float, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fit, calibration, validation) indices of the n train images, disjoint. The calibration hold-out is the one
    `--select last` uses; the validation images come from the rest (another random stream of the same seed)."""
    from edcli.method.scoring import calibration_split

    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"--val-fraction {val_fraction}: use a value in (0, 1)")
    fit, cal = calibration_split(n, calib_fraction, seed)
    n_val = min(max(int(round(val_fraction * n)), 1), len(fit) - 1)
    if n_val < 1:
        raise ConfigError(
            f"--select validation needs at least 2 train images besides the {len(cal)} held out for "
            f"the threshold; this category has {n}"
        )
    perm = np.random.default_rng([seed, 1]).permutation(fit)
    return np.sort(perm[n_val:]), cal, np.sort(perm[:n_val])


def settings(cfg, n_train: int) -> dict[str, Any]:
    """What decides the validation images: part of the store key and of the resume check."""
    from edcli.data.defects import VALIDATION_KINDS

    return {
        "format": VALIDATION_FORMAT,
        "seed": int(cfg.seed),
        "val_fraction": float(cfg.val_fraction),
        "calib_fraction": float(cfg.calib_fraction),
        "n_train": int(n_train),
        "kinds": list(VALIDATION_KINDS),
        "copies": COPIES,
    }


def defect_copies(
    image: np.ndarray, seed: int, index: int, others: list[np.ndarray] | None = None
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(kind, defective image, mask): COPIES per validation kind, seeded by (seed, train index, kind, copy).

    `others` are the other held-out images of the category: copy c of a "perlin" blends in others[c % len] (the
    image itself when there is none). Another picture of the same material, turned and recoloured, and not another
    photo: it looks like a piece of the material out of place rather than a foreign picture every epoch finds, and
    a package's photos may be the very categories a benchmark tests. Held-out, not train images: the model never
    saw those pixels."""
    from edcli.data.defects import VALIDATION_KINDS, make_defect

    out = []
    for j, kind in enumerate(VALIDATION_KINDS):
        for c in range(COPIES):
            rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index), j, c, VALIDATION_FORMAT]))
            source = others[c % len(others)] if others else None
            for _ in range(DRAWS):
                defective, mask = make_defect(kind, image, rng, source)
                if mask.mean() >= MIN_AREA:
                    break
            out.append((kind, defective, mask))
    return out


def ensure_validation(ctx, store: str, category: str, ff, cfg, track, batch_size: int = 16):
    """The category's validation set (a store.ValidationFile), running the backbone on it the first time."""
    import torch

    from edcli.data.images import load_image
    from edcli.features import run_backbone
    from edcli.store import ValidationFile, validation_path, write_validation

    _, _, val = split(ff.n_train, cfg.calib_fraction, cfg.val_fraction, cfg.seed)
    sett = settings(cfg, ff.n_train)
    path = validation_path(store, ctx.data.dataset, category, dict(ctx.meta, category=category), sett)
    sources = [ff.train_paths[i] for i in val]
    if path.exists():
        vf = ValidationFile(path)
        # The key hashes the settings (format included); the format is checked again in case a file was copied.
        if sorted(set(vf.sources)) == sorted(sources) and vf.settings.get("format") == VALIDATION_FORMAT:
            return vf
        track.log(
            f"{category}: the held-out images or validation format changed since {path} was written; rebuilding it"
        )
    S = int(ctx.data.image_size)
    n = len(val) * (1 + COPIES * len(sett["kinds"]))
    shapes = [(c, h, w) for c, (h, w) in zip(ctx.extractor.channels, ctx.extractor.grids(S))]
    track.log(
        f"{category}: validation set: {len(val)} held-out normal train images and {n - len(val)} defective "
        f"copies ({COPIES} each of {', '.join(sett['kinds'])}); features -> {path}"
    )
    # Few images (--val-fraction of the train set), held in memory: each one's perlin copies take the others' texture.
    held = [
        (load_image(src, S, ctx.resize_mode).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for src in sources
    ]

    def rows():
        for a, (i, src, image) in enumerate(zip(val, sources, held)):
            yield image, np.zeros((S, S), bool), 0, "good", src, int(i)
            others = held[a + 1 :] + held[:a]
            for kind, defective, mask in defect_copies(image, cfg.seed, int(i), others):
                yield defective, mask, 1, kind, src, int(i)

    def batches():
        buf: list = []
        start = 0
        for row in [*rows(), None]:
            if row is not None:
                buf.append(row)
            if buf and (row is None or len(buf) == batch_size):
                images = torch.from_numpy(np.stack([b[0] for b in buf])).permute(0, 3, 1, 2).float().div_(255.0)
                yield (
                    start,
                    run_backbone(ctx, images),
                    {
                        "masks": np.stack([b[1] for b in buf]).astype(np.uint8),
                        "labels": [b[2] for b in buf],
                        "kinds": [b[3] for b in buf],
                        "sources": [b[4] for b in buf],
                        "train_index": [b[5] for b in buf],
                    },
                )
                start += len(buf)
                buf = []

    write_validation(path, sett, shapes, n, S, batches())
    return ValidationFile(path)


def score(model, vf, image_size: int, device, precision: str, eval_cfg) -> dict[str, Any]:
    """Validation image and pixel AUROC of the model now, their mean (what selects) and the seconds it took."""
    from edcli.evaluate import score_cached
    from edcli.metrics import image_auroc, pixel_auroc

    start = time.perf_counter()
    split_ = score_cached(model, vf.read, vf.n, image_size, device, precision, eval_cfg)
    img = image_auroc(vf.labels, split_.scores)
    pix = pixel_auroc(vf.masks, split_.maps if eval_cfg.pixel_map == "raw" else split_.smoothed)
    defined = [v for v in (img, pix) if v is not None]
    return {
        "val_image_auroc": img,
        "val_pixel_auroc": pix,
        "val_score": float(np.mean(defined)) if defined else None,
        "val_seconds": round(time.perf_counter() - start, 4),
    }


def keep_best(best: dict, row: dict[str, Any], epoch: int, state) -> None:
    """Record the epoch in best[KEY] if its validation score beats the best so far (strictly: ties keep the
    earlier epoch). `state` is called only then (it copies the weights)."""
    value = row.get("val_score")
    if value is not None and (KEY not in best or value > best[KEY]["value"]):
        best[KEY] = {
            "value": value,
            "epoch": epoch,
            "state": state(),
            "image_auroc": row["val_image_auroc"],
            "pixel_auroc": row["val_pixel_auroc"],
        }


def selection(vf, best: dict) -> dict[str, Any]:
    """The checkpoint's selection entry for the epoch validation chose."""
    pick = best[KEY]
    n_good = int((vf.labels == 0).sum())
    kinds = sorted(set(k for k in vf.kinds if k != "good"))
    return {
        "select": KEY,
        "epoch": pick["epoch"],
        "test_selected": False,
        "value": pick["value"],
        "val_image_auroc": pick["image_auroc"],
        "val_pixel_auroc": pick["pixel_auroc"],
        "val_images": vf.n,
        "val_train_index": sorted(set(int(i) for i in vf.train_index)),
        "how": f"validation: best mean of image and pixel AUROC on {n_good} held-out normal train images and "
        f"their {vf.n - n_good} synthetic-defect copies ({', '.join(kinds)}); no test labels",
    }
