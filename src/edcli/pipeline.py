"""One function per command, wiring the pieces together. Takes a `track` object, never imports rich."""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

from edcli.config import BackboneConfig, DataConfig
from edcli.errors import ConfigError, DataError


class NullTracker:
    """The `track` protocol without any output (library use and tests)."""

    quiet = True

    def __call__(self, iterable: Iterable, total: Optional[int] = None, description: str = "") -> Iterator:
        yield from iterable

    def log(self, message: str) -> None:  # noqa: D102
        pass

    def warn(self, message: str) -> None:  # noqa: D102
        pass

    def postfix(self, text: str) -> None:  # noqa: D102
        pass


# ---------------------------------------------------------------------------------------------- helpers


def data_loader(dataset, batch_size: int, num_workers: int, shuffle: bool = False):
    import torch

    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                                       persistent_workers=False, pin_memory=False)


def feature_meta(data: DataConfig, bb_cfg: BackboneConfig, winfo, resize_mode: str) -> dict[str, Any]:
    """Everything recorded with cached features; the store derives its file key from the number-changing part."""
    return {
        "backbone": bb_cfg.name,
        "weights_sha256": winfo.sha256,
        "weights_source": winfo.source,
        "random_init": bool(winfo.random_init),
        "levels": list(bb_cfg.levels),
        "image_size": int(data.image_size),
        "resize_mode": resize_mode,
        "mean": list(winfo.mean),
        "std": list(winfo.std),
        "dataset": data.dataset,
        "dataset_root": str(Path(data.data_path).resolve()),
    }


def categories_of(data: DataConfig) -> list[str]:
    from edcli.data import discover_categories, select_categories

    if not data.data_path:
        raise ConfigError("--data-path is required: the dataset root that holds one folder per category")
    found = discover_categories(data.dataset, data.data_path, data.normal_name)
    return select_categories(found, tuple(data.categories))


def check_dataset(name: str) -> None:
    from edcli.config import DATASETS

    if name not in DATASETS:
        raise ConfigError(f"--dataset {name!r}: use one of {', '.join(DATASETS)}")


# ---------------------------------------------------------------------------------------------- distmaps


def run_distmaps(store: str, backbone: Optional[str], image_size: int, levels: tuple[int, ...],
                 grids: tuple[int, ...] = ()) -> dict[str, Any]:
    """Squared row/column index-distance matrices for each level's token grid (or the given grid sizes)."""
    from edcli.store import write_distmaps

    if grids:
        shapes = [(int(g), int(g)) for g in grids]
    else:
        from edcli.backbone import feature_shapes

        shapes = [(h, w) for _, h, w in feature_shapes(backbone or BackboneConfig().name, tuple(levels), image_size)]
    path = write_distmaps(store, shapes)
    return {"path": str(path), "grids": [f"{h}x{w}" for h, w in shapes],
            "tokens": [h * w for h, w in shapes], "bytes": path.stat().st_size}


# ---------------------------------------------------------------------------------------------- features


@dataclass
class FeatureContext:
    """A built backbone and what describes its numbers, shared by features/train/eval."""

    extractor: Any
    winfo: Any
    bb_cfg: BackboneConfig
    data: DataConfig
    resize_mode: str
    device: Any

    @property
    def meta(self) -> dict[str, Any]:
        return feature_meta(self.data, self.bb_cfg, self.winfo, self.resize_mode)


def build_context(data: DataConfig, bb_cfg: BackboneConfig, device_name: str) -> FeatureContext:
    from edcli.backbone import build_backbone
    from edcli.data import resize_mode
    from edcli.engine import resolve_device

    device = resolve_device(device_name)
    extractor, winfo = build_backbone(bb_cfg)
    extractor = extractor.to(device).eval()
    return FeatureContext(extractor, winfo, bb_cfg, data, resize_mode(data.dataset), device)


def extract_category(ctx: FeatureContext, store: str, category: str, batch_size: int, num_workers: int,
                     track, overwrite: bool = False) -> dict[str, Any]:
    """Cache one category's pooled features and its prototypes; skip a complete file with the same settings."""
    import numpy as np

    from edcli.data import SampleDataset, list_split
    from edcli.store import FeatureFile, FeatureWriter, features_path, file_size

    data = ctx.data
    meta = dict(ctx.meta, category=category)
    path = features_path(store, data.dataset, category, meta)
    if path.exists() and not overwrite:
        with FeatureFile.open(path, meta) as ff:
            row = {"category": category, "train": ff.n_train, "test": ff.n_test, "shapes": list(ff.shapes),
                   "seconds": 0.0, "bytes": file_size(path), "path": str(path), "status": "cached"}
        track.log(f"{category}: features already in {path} (same settings); skipped. --overwrite redoes them")
        return row
    train_refs = list_split(data.dataset, data.data_path, category, "train", data.normal_name)  # never empty
    test_refs = list_split(data.dataset, data.data_path, category, "test", data.normal_name)
    S = data.image_size
    shapes = [(c, h, w) for c, (h, w) in zip(ctx.extractor.channels, ctx.extractor.grids(S))]
    start = time.perf_counter()
    sums = [np.zeros((c, h * w), dtype=np.float64) for c, h, w in shapes]
    with FeatureWriter(path, meta, shapes, len(train_refs), len(test_refs), S) as writer:
        loader = data_loader(SampleDataset(train_refs, S, ctx.resize_mode, data.dataset), batch_size, num_workers)
        for batch in track(loader, total=len(loader), description=f"{category} train"):
            feats = _run_backbone(ctx, batch["image"])
            idx = batch["index"]
            writer.write_train(int(idx[0]), feats, [train_refs[i].path for i in idx.tolist()])
            for k, f in enumerate(feats):
                # the prototype is the mean of the features as cached (float16), so it matches the training inputs
                sums[k] += f.astype(np.float16).astype(np.float64).sum(0).reshape(f.shape[1], -1)
        for k, s in enumerate(sums):
            writer.write_ref(k, (s / len(train_refs)).astype(np.float32))
        if test_refs:
            loader = data_loader(SampleDataset(test_refs, S, ctx.resize_mode, data.dataset, with_masks=True),
                                 batch_size, num_workers)
            for batch in track(loader, total=len(loader), description=f"{category} test"):
                feats = _run_backbone(ctx, batch["image"])
                ids = batch["index"].tolist()
                writer.write_test(ids[0], feats, [test_refs[i].path for i in ids], batch["label"].numpy(),
                                  batch["mask"].numpy().astype(np.uint8), [test_refs[i].defect_type for i in ids],
                                  batch["mask_known"].numpy().astype(bool))
    seconds = time.perf_counter() - start
    return {"category": category, "train": len(train_refs), "test": len(test_refs),
            "shapes": [tuple(s) for s in shapes], "seconds": round(seconds, 2), "bytes": file_size(path),
            "path": str(path), "status": "written"}


def _run_backbone(ctx: FeatureContext, images) -> list:
    import torch

    with torch.inference_mode():
        feats = ctx.extractor(images.to(ctx.device))
    return [f.float().cpu().numpy() for f in feats]


def run_features(data: DataConfig, bb_cfg: BackboneConfig, store: str, device: str = "auto", batch_size: int = 16,
                 overwrite: bool = False, num_workers: int = 0, track=None) -> list[dict[str, Any]]:
    """`ed features`: per category, prototypes and cached pooled features of the train and test images."""
    from edcli.engine import init_distributed

    track = track or NullTracker()
    check_dataset(data.dataset)
    cats = categories_of(data)
    dist = init_distributed(device)
    mine = cats[dist.rank::dist.world] if dist.enabled else cats
    ctx = build_context(data, bb_cfg, device)
    if ctx.winfo.random_init:
        track.warn("--random-init: features come from an untrained backbone (for tests and timing only)")
    from edcli.distributed import gather_rows, run_sharded

    rows, err = run_sharded(mine, dist, lambda cat: extract_category(ctx, store, cat, batch_size, num_workers, track,
                                                                     overwrite))
    return gather_rows(rows, dist, order=cats, error=err) if dist.enabled else rows


def ensure_features(ctx: FeatureContext, store: str, category: str, batch_size: int, num_workers: int, track) -> Path:
    """The store file for a category, computing it first when missing (and saying so)."""
    from edcli.store import features_path

    meta = dict(ctx.meta, category=category)
    path = features_path(store, ctx.data.dataset, category, meta)
    if not path.exists():
        track.log(f"{category}: no cached features for these settings in {store}; computing them first")
        extract_category(ctx, store, category, batch_size, num_workers, track)
    return path


# ---------------------------------------------------------------------------------------------- train


def checkpoint_path(out: str | Path, category: str) -> Path:
    return Path(out) / "checkpoints" / f"{category}.pt"


def ensure_distmaps(store: str, grids: list[tuple[int, int]], track) -> None:
    from edcli.store import read_distmaps, write_distmaps

    missing = []
    for h, w in grids:
        try:
            read_distmaps(store, h, w)
        except Exception:  # absent file or grid
            missing.append((h, w))
    if missing:
        track.log(f"distance maps for {', '.join(f'{h}x{w}' for h, w in missing)} not in {store}; writing them")
        write_distmaps(store, missing)


def run_train(data: DataConfig, bb_cfg: BackboneConfig, model_cfg, train_cfg, store: str, out: str,
              resume: bool = False, feature_batch_size: int = 16, num_workers: int = 0, eval_cfg=None,
              track=None) -> list[dict[str, Any]]:
    """`ed train`: one ED model per category from the cached features, computing missing store entries first."""
    import json

    from edcli.config import EvalConfig
    from edcli.engine import check_precision, init_distributed, rank_device
    from edcli.store import FeatureFile
    from edcli.training import train_category

    track = track or NullTracker()
    eval_cfg = eval_cfg or EvalConfig()
    check_dataset(data.dataset)
    _check_train_cfg(model_cfg, train_cfg)
    cats = categories_of(data)
    dist = init_distributed(train_cfg.device)
    device = rank_device(train_cfg.device, dist)
    check_precision(train_cfg.precision, device)
    strategy = train_cfg.strategy
    if strategy == "auto":
        strategy = "categories"
    train_cfg = replace(train_cfg, strategy=strategy)
    if strategy == "ddp" and not dist.enabled:
        raise ConfigError("--strategy ddp needs torchrun (e.g. torchrun --nproc-per-node 2 -m edcli train ...)")
    if strategy == "ddp" and len(cats) != 1:
        raise ConfigError(f"--strategy ddp trains ONE category data-parallel; pick one with --category (found {len(cats)})")
    if train_cfg.jobs > 1 and not dist.enabled and len(cats) > 1:
        from edcli.distributed import run_jobs

        return run_jobs(data, bb_cfg, model_cfg, train_cfg, store, out, resume, feature_batch_size, eval_cfg, cats, track)
    mine = cats[dist.rank::dist.world] if dist.enabled and strategy == "categories" else cats
    ctx = build_context(data, bb_cfg, train_cfg.device)
    ctx.device = device
    ctx.extractor.to(device)
    if ctx.winfo.random_init:
        track.warn("--random-init: the backbone is untrained (for tests and timing only); recorded in the checkpoint")
    if dist.is_main:
        ensure_distmaps(store, ctx.extractor.grids(data.image_size), track)
    if dist.enabled:  # the other ranks wait for the shared distmaps file
        import torch.distributed as tdist

        tdist.barrier()
    configs = {"data": data.to_dict(), "backbone": bb_cfg.to_dict(), "model": model_cfg.to_dict(),
               "train": train_cfg.to_dict(), "eval": eval_cfg.to_dict(), "store": str(Path(store).resolve())}
    Path(out).mkdir(parents=True, exist_ok=True)
    if dist.is_main:
        (Path(out) / "run.json").write_text(json.dumps(configs, indent=2))
    from edcli.distributed import gather_rows, run_sharded

    def one(cat: str) -> dict[str, Any]:
        if strategy == "ddp":  # one writer for the shared store file, the others wait for it
            import torch.distributed as tdist

            if dist.is_main:
                ensure_features(ctx, store, cat, feature_batch_size, num_workers, track)
            tdist.barrier()
        path = ensure_features(ctx, store, cat, feature_batch_size, num_workers, track)
        meta = dict(ctx.meta, category=cat)
        with FeatureFile.open(path, meta) as ff:
            ff.path = path
            return train_category(ff, cat, meta, configs, model_cfg, train_cfg, checkpoint_path(out, cat), device,
                                  track, resume=resume, eval_cfg=eval_cfg, dist=dist)

    rows, err = run_sharded(mine, dist, one)
    if dist.enabled and strategy == "categories":
        return gather_rows(rows, dist, order=cats, error=err)
    if err:
        from edcli.errors import DistributedError

        raise DistributedError(f"rank {dist.rank}: {err}")
    return rows


def _check_train_cfg(model_cfg, cfg) -> None:
    from edcli.config import ARCHS, SELECTIONS

    if model_cfg.arch not in ARCHS:
        raise ConfigError(f"--arch {model_cfg.arch!r}: use ed or fod")
    if cfg.select not in SELECTIONS:
        raise ConfigError(f"--select {cfg.select!r}: use one of {', '.join(SELECTIONS)}")
    if cfg.epochs < 1 or cfg.batch_size < 1 or cfg.lr <= 0:
        raise ConfigError("--epochs and --batch-size must be at least 1 and --lr positive")
    if cfg.select != "last" and cfg.eval_every < 1:
        raise ConfigError(f"--select {cfg.select} picks an epoch by its test metrics: add --eval-every N")
    if cfg.strategy not in ("auto", "categories", "ddp"):
        raise ConfigError(f"--strategy {cfg.strategy!r}: use categories or ddp")


# ---------------------------------------------------------------------------------------------- eval


def find_checkpoints(run: Optional[str], checkpoint: Optional[str], categories: tuple[str, ...] = ()) -> list[Path]:
    from edcli.errors import CheckpointError

    if bool(run) == bool(checkpoint):
        raise ConfigError("give exactly one of --run RUN (a folder written by `ed train --out`) or --checkpoint FILE")
    if checkpoint:
        return [Path(checkpoint)]
    folder = Path(run) / "checkpoints"
    paths = sorted(p for p in folder.glob("*.pt") if not p.name.endswith(".resume.pt"))
    if not paths:
        raise CheckpointError(f"no checkpoints in {folder}; train first with `ed train --out {run}`")
    if categories:
        by_name = {p.stem: p for p in paths}
        unknown = [c for c in categories if c not in by_name]
        if unknown:
            raise ConfigError(f"--category {', '.join(unknown)}: no checkpoint in {folder} (have: {', '.join(by_name)})")
        paths = [by_name[c] for c in categories]
    return paths


def backbone_cfg_of(ck) -> BackboneConfig:
    bb = ck.config.get("backbone", {})
    return BackboneConfig(name=ck.backbone["backbone"], levels=tuple(ck.backbone["levels"]), weights=bb.get("weights"),
                          random_init=bool(ck.backbone.get("random_init", False)))


def context_for_checkpoint(ck, data_path: Optional[str], device, cache: dict, dataset: Optional[str] = None) -> FeatureContext:
    """The backbone a checkpoint was trained with; refuses other weights (scores would silently differ)."""
    from edcli.errors import WeightsError

    bb_cfg = backbone_cfg_of(ck)
    data = DataConfig(dataset=dataset or ck.dataset, data_path=data_path or ck.data_path,
                      image_size=int(ck.backbone["image_size"]),
                      normal_name=ck.config.get("data", {}).get("normal_name", "good"))
    key = (bb_cfg, data)
    if key not in cache:
        ctx = build_context(data, bb_cfg, "cpu")
        if ctx.winfo.sha256 != ck.backbone["weights_sha256"]:
            raise WeightsError(f"the backbone weights found ({ctx.winfo.source}, sha256 {ctx.winfo.sha256[:12]}) are not the "
                               f"ones {ck.category} was trained with (sha256 {ck.backbone['weights_sha256'][:12]}); "
                               "pass the same --weights FILE")
        ctx.extractor.to(device)
        ctx.device = device
        cache[key] = ctx
    return cache[key]


def run_eval(run: Optional[str], checkpoint: Optional[str], eval_cfg, data_path: Optional[str] = None,
             dataset: Optional[str] = None, categories: tuple[str, ...] = (), store: Optional[str] = None,
             save_maps: bool = False, num_workers: int = 0, track=None) -> dict[str, Any]:
    """`ed eval`: score the labelled test split of each checkpoint's category; metrics per category and their mean."""
    import tempfile

    from edcli import __version__
    from edcli.checkpoint import build_model, load_checkpoint
    from edcli.engine import check_precision, resolve_device
    from edcli.evaluate import category_metrics, masks_if_known, read_from, score_cached
    from edcli.metrics import macro_mean
    from edcli.report import write_metrics
    from edcli.scoring import parse_reducer
    from edcli.store import FeatureFile, features_path

    track = track or NullTracker()
    parse_reducer(eval_cfg.reducer)
    if eval_cfg.pixel_map not in ("raw", "smoothed"):
        raise ConfigError(f"--pixel-map {eval_cfg.pixel_map!r}: use raw or smoothed")
    device = resolve_device(eval_cfg.device)
    check_precision(eval_cfg.precision, device)
    paths = find_checkpoints(run, checkpoint, categories)
    run_dir = Path(run) if run else Path(checkpoint).resolve().parent.parent
    cache: dict = {}
    rows, protocol = [], None
    tmp_store = None
    for cpath in paths:
        ck = load_checkpoint(cpath)
        model = build_model(ck).to(device)
        meta = dict(ck.backbone)
        st = store or ck.config.get("store")
        fpath = features_path(st, dataset or ck.dataset, ck.category, meta) if st else None
        if fpath is None or not fpath.exists():
            ctx = context_for_checkpoint(ck, data_path, device, cache, dataset)
            if st is None:
                tmp_store = tmp_store or tempfile.mkdtemp(prefix="ed-eval-store-")
                st = tmp_store
            track.log(f"{ck.category}: no cached test features match the checkpoint; running the backbone")
            fpath = ensure_features(ctx, st, ck.category, eval_cfg.batch_size, num_workers, track)
        with FeatureFile.open(fpath, meta) as ff:
            if ff.n_test == 0:
                raise DataError(f"{ck.category}: the test split is empty; nothing to evaluate")
            split = score_cached(model, read_from(ff, "test"), ff.n_test, int(meta["image_size"]), device,
                                 eval_cfg.precision, eval_cfg, batch_size=eval_cfg.batch_size)
            masks = masks_if_known(ff)
            m = category_metrics(ff.test_labels, split, masks, eval_cfg)
            if save_maps:
                _save_eval_maps(run_dir / "maps" / ck.category, ff, split, ck, masks)
        sel = ck.selection or {}
        rows.append({"category": ck.category, **m, "test_images": int(ff.n_test),
                     "seconds": round(split.seconds, 3), "seconds_per_image": split.seconds / max(1, ff.n_test),
                     "epoch": sel.get("epoch", ck.epochs_done), "selection": sel.get("select", "last"),
                     "test_selected": bool(sel.get("test_selected", False))})
        protocol = protocol or {
            "selection_how": sel.get("how", "last epoch"),
            "pixel_map": eval_cfg.pixel_map + (" (unsmoothed, as the reference)" if eval_cfg.pixel_map == "raw" else ""),
            "reducer": eval_cfg.reducer, "smoothing_sigma": eval_cfg.sigma,
            "resolution": f"{meta['image_size']}x{meta['image_size']}",
            "seed": ck.config.get("train", {}).get("seed"), "backbone": meta["backbone"],
            "weights_sha256": meta["weights_sha256"], "random_init": bool(meta.get("random_init", False)),
            "edcli_version": __version__, "aupro_fpr_limit": 0.3, "averaging": "macro (per category, then mean)",
        }
    if tmp_store:
        import shutil

        shutil.rmtree(tmp_store, ignore_errors=True)
    mean = {"category": "mean", **macro_mean(rows), "test_images": int(sum(r["test_images"] for r in rows)),
            "seconds": round(sum(r["seconds"] for r in rows), 3)}
    test_selected = any(r["test_selected"] for r in rows)
    mean["test_selected"] = test_selected
    protocol["test_selected"] = test_selected
    if test_selected:
        protocol["warning"] = "test-selected: some epochs were chosen by their test metrics; not an honest estimate"
    jpath, cpath = write_metrics(run_dir, rows, mean, protocol)
    return {"rows": rows, "mean": mean, "protocol": protocol, "metrics_json": str(jpath), "metrics_csv": str(cpath),
            "maps": str(run_dir / "maps") if save_maps else None}


def _save_eval_maps(folder: Path, ff, split, ck, masks) -> None:
    """Raw maps (.npy) and heat-map overlays (PNG) per test image, in folders per defect type."""
    import numpy as np

    from edcli.data import load_image
    from edcli.report import heatmap_panel, save_png

    S = int(ck.backbone["image_size"])
    vmin, vmax = float(split.maps.min()), float(split.maps.max())  # one scale for the whole category
    thr = (ck.calibration or {}).get("threshold")
    for i, path in enumerate(ff.test_paths):
        stem = Path(path).stem
        sub = folder / ff.test_defect_types[i]
        sub.mkdir(parents=True, exist_ok=True)
        np.save(sub / f"{stem}.npy", split.maps[i])
        try:
            img = (load_image(path, S, ck.backbone["resize_mode"]).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        except Exception:  # the image may have moved since the features were cached: draw on grey
            img = np.full((S, S, 3), 128, np.uint8)
        pred = split.smoothed[i] > thr if thr is not None else None
        save_png(sub / f"{stem}.png", heatmap_panel(img, split.maps[i], vmin, vmax, pred))


# The last two commands live in their own modules (this file passed 500 lines); re-exported here so every command
# is still `pipeline.run_<command>`.
from edcli.demo import DEMO, DEMO_QUICK, run_demo  # noqa: E402,F401
from edcli.inference import run_infer  # noqa: E402,F401
