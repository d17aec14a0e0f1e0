"""Backbone -> store: the feature context of a run or a checkpoint, extraction of a category, ensure-features."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edcli.config import BackboneConfig, DataConfig
from edcli.errors import UsageError
from edcli.identity import FeatureIdentity


def feature_identity(data: DataConfig, bb_cfg: BackboneConfig, winfo, resize_mode: str) -> FeatureIdentity:
    return FeatureIdentity(
        backbone=bb_cfg.name,
        weights_sha256=winfo.sha256,
        levels=tuple(bb_cfg.levels),
        image_size=int(data.image_size),
        resize_mode=resize_mode,
        mean=tuple(winfo.mean),
        std=tuple(winfo.std),
        weights_source=winfo.source,
        random_init=bool(winfo.random_init),
    )


def feature_meta(data: DataConfig, bb_cfg: BackboneConfig, winfo, resize_mode: str) -> dict[str, Any]:
    """Everything recorded with cached features: the feature identity (whose key names the store file) and where
    the images came from."""
    identity = feature_identity(data, bb_cfg, winfo, resize_mode)
    return {**identity.to_dict(), "dataset": data.dataset, "dataset_root": str(Path(data.data_path).resolve())}


def categories_of(data: DataConfig) -> list[str]:
    """The categories to work on: those found under --data-path, narrowed by --category."""
    from edcli.data.layouts import discover_categories, layout, select_categories

    layout(data.dataset)
    if not data.data_path:
        raise UsageError("--data-path is required: the dataset root that holds one folder per category")
    found = discover_categories(data.dataset, data.data_path, data.normal_name)
    return select_categories(found, tuple(data.categories))


def machine_memory(device=None) -> int:
    """Bytes of memory the work can use: the GPU's for a CUDA device, else the machine's RAM (0 when unknown)."""
    if device is not None and getattr(device, "type", "") == "cuda":
        import torch

        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        try:
            with open("/proc/meminfo") as fh:
                for line in fh:
                    if line.startswith("MemTotal:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
    return 0


def _gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB" if n < 2**50 else f"{n / 2**50:,.0f} PiB"


def check_image_size(
    shapes: list[tuple[int, int, int]],
    image_size: int,
    batch_size: int,
    device=None,
    model_cfg=None,
    backbone: str = "",
) -> None:
    """Refuse an --image-size that gives a level a grid under 2x2, or whose work cannot fit in memory, before any
    allocation. Features: the batch of decoded images and their feature maps. Training (model_cfg given): the
    (L, L) attention and prior maps of every layer, head and branch at the batch, forward and backward."""
    small = [(h, w) for _, h, w in shapes if h < 2 or w < 2]
    if small:
        grids = ", ".join(f"{h}x{w}" for _, h, w in shapes)
        raise UsageError(
            f"--image-size {image_size}: {backbone or 'the backbone'} gives token grids {grids}; every "
            "level needs at least 2x2 (the prior and the attention need neighbours): use a larger size"
        )
    need = batch_size * (3 * image_size * image_size * 5 + sum(4 * c * h * w for c, h, w in shapes))
    what = f"{batch_size} image(s) of {image_size}x{image_size} px and their features"
    if model_cfg is not None:
        branches = int(model_cfg.intra) + int(model_cfg.inter)
        maps = sum(4 * (h * w) ** 2 for _, h, w in shapes)  # one float32 (L, L) map per level
        # per layer, head and branch: the attention and its prior target, each kept for the backward pass
        need = max(need, batch_size * model_cfg.layers * model_cfg.heads * branches * 2 * 2 * maps)
        what = (
            f"the (L, L) attention maps of training ({model_cfg.layers} layers x {model_cfg.heads} heads x "
            f"{branches} branch(es), batch {batch_size}, forward and backward; "
            f"tokens {', '.join(str(h * w) for _, h, w in shapes)})"
        )
    have = machine_memory(device)
    if have and need > have:
        raise UsageError(
            f"--image-size {image_size}: {what} need about {_gib(need)}, more than the "
            f"{_gib(have)} of memory here; use a smaller --image-size or --batch-size"
        )


@dataclass
class FeatureContext:
    """A built backbone and what describes its numbers, shared by features/train/eval/infer."""

    extractor: Any
    winfo: Any
    bb_cfg: BackboneConfig
    data: DataConfig
    resize_mode: str
    device: Any

    @property
    def meta(self) -> dict[str, Any]:
        return feature_meta(self.data, self.bb_cfg, self.winfo, self.resize_mode)

    @property
    def identity(self) -> FeatureIdentity:
        return feature_identity(self.data, self.bb_cfg, self.winfo, self.resize_mode)


def build_context(data: DataConfig, bb_cfg: BackboneConfig, device_name: str) -> FeatureContext:
    from edcli.backbone import build_backbone
    from edcli.data.layouts import resize_mode
    from edcli.engine import setup_device

    device = setup_device(device_name)
    extractor, winfo = build_backbone(bb_cfg)
    extractor = extractor.to(device).eval()
    return FeatureContext(extractor, winfo, bb_cfg, data, resize_mode(data.dataset), device)


def backbone_cfg_of(ck) -> BackboneConfig:
    bb = ck.config.get("backbone", {})
    return BackboneConfig(
        name=ck.identity.backbone,
        levels=ck.identity.levels,
        weights=bb.get("weights"),
        random_init=ck.identity.random_init,
    )


def context_for_checkpoint(
    ck, data_path: str | None, device, cache: dict, dataset: str | None = None
) -> FeatureContext:
    """The backbone a checkpoint was trained with; refuses other weights (scores would silently differ)."""
    from edcli.errors import WeightsError

    bb_cfg = backbone_cfg_of(ck)
    recorded = ck.config.get("data", {})
    data = DataConfig(
        dataset=dataset or ck.dataset,
        data_path=data_path or ck.data_path,
        image_size=ck.identity.image_size,
        normal_name=recorded.get("normal_name", "good"),
        test_fraction=recorded.get("test_fraction", DataConfig.test_fraction),
        split_seed=recorded.get("split_seed", DataConfig.split_seed),
    )
    key = (bb_cfg, data)
    if key not in cache:
        ctx = build_context(data, bb_cfg, "cpu")
        if ctx.winfo.sha256 != ck.identity.weights_sha256:
            raise WeightsError(
                f"the backbone weights found ({ctx.winfo.source}, sha256 {ctx.winfo.sha256[:12]}) are not the "
                f"ones {ck.category} was trained with (sha256 {ck.identity.weights_sha256[:12]}); "
                "pass the same --weights FILE"
            )
        ctx.extractor.to(device)
        ctx.device = device
        cache[key] = ctx
    return cache[key]


def run_backbone(ctx: FeatureContext, images) -> list:
    """Pooled features per level as float32 numpy (B, C, H, W)."""
    import torch

    from edcli.engine import to_device

    with torch.inference_mode():
        feats = ctx.extractor(to_device(images, ctx.device))
    return [f.float().cpu().numpy() for f in feats]


def stale_reason(ff, root: str, listings: dict[str, list[str]]) -> str | None:
    """Why a store entry no longer describes the images at `root` (another root, files added, removed or changed
    since it was made), or None when it still does. `listings`: split -> data.fingerprint.source_listing."""
    from edcli.data.fingerprint import describe_changes

    made = ff.meta.get("created", "?")
    have_root = ff.meta.get("dataset_root")
    if have_root is not None and str(have_root) != str(Path(root).resolve()):
        return f"it was made from the images in {have_root}, not {Path(root).resolve()}"
    changes = []
    for split, rows in listings.items():
        old = ff.source(split)
        if old is None:
            return "it records no fingerprint of its images (made by an older edcli)"
        change = describe_changes(old, rows, split)
        if change:
            changes.append(change)
    return f"{', '.join(changes)} since it was made ({made})" if changes else None


def split_listings(data: DataConfig, category: str, splits=("train", "test")):
    """(refs per split, source listing per split) of a category as it is on disk now."""
    from edcli.data.fingerprint import source_listing
    from edcli.data.layouts import list_split

    refs = {
        sp: list_split(
            data.dataset, data.data_path, category, sp, data.normal_name, data.test_fraction, data.split_seed
        )
        for sp in splits
    }
    return refs, {sp: source_listing(r, data.data_path) for sp, r in refs.items()}


def extract_category(
    ctx: FeatureContext,
    store: str,
    category: str,
    batch_size: int,
    num_workers: int,
    track,
    overwrite: bool = False,
    say_cached: bool = True,
) -> dict[str, Any]:
    """Cache one category's pooled features and its prototypes; skip a complete file with the same settings made
    from the same files (a file made from other images, or before some were added, removed or changed, is redone)."""
    import numpy as np

    from edcli.data.images import SampleDataset
    from edcli.data.layouts import test_is_held_out
    from edcli.engine import data_loader
    from edcli.store import FeatureFile, FeatureWriter, features_path, file_size

    data = ctx.data
    meta = dict(ctx.meta, category=category)
    path = features_path(store, data.dataset, category, meta)
    refs, listings = split_listings(data, category)
    train_refs, test_refs = refs["train"], refs["test"]  # train is never empty
    if path.exists() and not overwrite:
        with FeatureFile.open(path, meta) as ff:
            reason = stale_reason(ff, data.data_path, listings) or ff.damaged()
            row = {
                "category": category,
                "train": ff.n_train,
                "test": ff.n_test,
                "shapes": list(ff.shapes),
                "seconds": 0.0,
                "bytes": file_size(path),
                "path": str(path),
                "status": "cached",
            }
        if reason is None:
            if say_cached:
                track.log(
                    f"{category}: features already in {path} (same settings, same images); skipped. "
                    "--overwrite redoes them"
                )
            return row
        track.log(f"{category}: recomputing {path}: {reason}")
    status = "recomputed" if path.exists() and not overwrite else "written"
    if test_is_held_out(data.dataset, data.data_path, category):
        track.log(
            f"{category}: no test/ folder: {len(test_refs)} of the {len(train_refs) + len(test_refs)} normal "
            f"images (--test-fraction {data.test_fraction:g}, seed {data.split_seed}) are the test split; "
            "metrics that need anomalies are not defined"
        )
    S = data.image_size
    shapes = [(c, h, w) for c, (h, w) in zip(ctx.extractor.channels, ctx.extractor.grids(S))]
    start = time.perf_counter()
    sums = [np.zeros((c, h * w), dtype=np.float64) for c, h, w in shapes]
    with FeatureWriter(path, meta, shapes, len(train_refs), len(test_refs), S) as writer:
        for split, rows in listings.items():
            writer.write_source(split, rows)
        loader = data_loader(
            SampleDataset(train_refs, S, ctx.resize_mode, data.dataset), batch_size, num_workers, device=ctx.device
        )
        for batch in track(loader, total=len(loader), description=f"{category} features (train)"):
            feats = run_backbone(ctx, batch["image"])
            idx = batch["index"]
            writer.write_train(int(idx[0]), feats, [train_refs[i].path for i in idx.tolist()])
            for k, f in enumerate(feats):
                # the prototype is the mean of the features as cached (float16), so it matches the training inputs
                sums[k] += f.astype(np.float16).astype(np.float64).sum(0).reshape(f.shape[1], -1)
        for k, s in enumerate(sums):
            writer.write_ref(k, (s / len(train_refs)).astype(np.float32))
        if test_refs:
            loader = data_loader(
                SampleDataset(test_refs, S, ctx.resize_mode, data.dataset, with_masks=True),
                batch_size,
                num_workers,
                device=ctx.device,
            )
            for batch in track(loader, total=len(loader), description=f"{category} features (test)"):
                feats = run_backbone(ctx, batch["image"])
                ids = batch["index"].tolist()
                writer.write_test(
                    ids[0],
                    feats,
                    [test_refs[i].path for i in ids],
                    batch["label"].numpy(),
                    batch["mask"].numpy().astype(np.uint8),
                    [test_refs[i].defect_type for i in ids],
                    batch["mask_known"].numpy().astype(bool),
                )
    seconds = time.perf_counter() - start
    return {
        "category": category,
        "train": len(train_refs),
        "test": len(test_refs),
        "shapes": [tuple(s) for s in shapes],
        "seconds": round(seconds, 2),
        "bytes": file_size(path),
        "path": str(path),
        "status": status,
    }


def ensure_features(ctx: FeatureContext, store: str, category: str, batch_size: int, num_workers: int, track) -> Path:
    """The store file for a category, computing it first when missing or made from other files (and saying so)."""
    from edcli.store import features_path

    meta = dict(ctx.meta, category=category)
    path = features_path(store, ctx.data.dataset, category, meta)
    if not path.exists():
        track.log(f"{category}: no cached features for these settings in {store}; computing them first")
    extract_category(ctx, store, category, batch_size, num_workers, track, say_cached=False)
    return path
