"""`ed infer`: score any images with a checkpoint or an exported ONNX model; rows streamed to predictions.jsonl/.csv
batch by batch (edcli.infer_output), --resume, --shard I/N and torchrun parts, heat maps by need, Ray Data."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from edcli.files import require_folder
from edcli.track import NullTracker

ENGINES = ("torch", "ray")


def _counted(track, loader, n: int, done: int):
    """The loader's batches under a bar that counts images (a batch holds up to --batch-size of them)."""
    with track.task("infer", total=n, unit="images") as bar:
        if done:
            bar.advance(done)
        for batch in loader:
            yield batch
            bar.advance(len(batch["error"]))


class _Tally:
    """The summary of the rows handed on: scored, flagged, failed (memory flat: counts only)."""

    def __init__(self, on_row):
        self.on_row, self.rows, self.failed, self.flagged = on_row, 0, 0, 0

    def __call__(self, row: dict[str, Any]) -> None:
        self.rows += 1
        self.failed += bool(row.get("error"))
        self.flagged += row.get("label") == "anomalous"
        if self.on_row is not None:
            self.on_row(row)


def run(
    *,
    checkpoint: str,
    inputs: list[str],
    out: str,
    batch_size: int = 8,
    device: str = "auto",
    precision: str = "fp32",
    recursive: bool = False,
    save_heatmaps: bool | str = "auto",
    save_raw_maps: bool = False,
    threshold: float | None = None,
    num_workers: int = 2,
    resume: bool = False,
    overwrite: bool = False,
    shard: str | None = None,
    max_pixels: int | None = None,
    engine: str = "torch",
    stdin=None,
    track=None,
    on_row=None,
) -> dict[str, Any]:
    """`ed infer`: score files, folders and globs with a checkpoint (`.pt`, PyTorch) or an exported `.onnx` model
    (ONNX Runtime), through edcli.detector; bad files become rows with their error.

    Rows are appended to OUT/predictions.jsonl and .csv as each batch finishes (a part file per --shard and
    torchrun rank, merged in input order at the end). on_row(row) gets every row of this process's part in input
    order (under torchrun: rank 0, every row, after the merge); without it the rows come back in the result
    ("rows"), which is for small runs: the files hold them all in any case.
    """
    track = track or NullTracker()
    where = inputs[0] if len(inputs) == 1 else f"{len(inputs)} inputs"
    # the first line, before torch and the model load (seconds): what starts
    track.log(
        f"ed infer: {checkpoint} on {where} -> {out}"
        + (f" (shard {shard})" if shard else "")
        + (" (resuming)" if resume else "")
    )
    from edcli.config import check_count, check_real
    from edcli.data.images import DEFAULT_MAX_PIXELS
    from edcli.distributed import block, parse_shard, part_of
    from edcli.errors import ConfigError

    require_folder(out, "--out")
    check_count("--batch-size", batch_size)
    check_count("--num-workers", num_workers, 0)
    max_pixels = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    check_count("--max-pixels", max_pixels)
    if threshold is not None:
        check_real("--threshold", threshold)
    if resume and overwrite:
        raise ConfigError("--overwrite starts the predictions again and --resume continues them: give one of them")
    if engine not in ENGINES:
        raise ConfigError(f"--engine {engine}: choose one of {', '.join(ENGINES)}")
    shard_ij = parse_shard(shard)

    from edcli import infer_output as io
    from edcli.data.images import expand_inputs
    from edcli.detector import Detector, is_onnx
    from edcli.engine import init_distributed, rank_device
    from edcli.files import run_lock
    from edcli.infer_scoring import BatchScorer, heatmap_choice

    dist = init_distributed(device)
    if engine == "ray" and dist.enabled:
        raise ConfigError("--engine ray runs its own workers: start it once, not under torchrun")
    dev = rank_device(device, dist)
    if is_onnx(checkpoint):  # ONNX Runtime picks its provider from the name; under torchrun each rank its own GPU
        dev = str(dev) if dist.enabled else device
    det = Detector.load(checkpoint, dev, precision, threshold)
    if det.warning and threshold is None:
        track.warn(det.warning)
    paths = expand_inputs(list(inputs), recursive=recursive, stdin=stdin)
    n = len(paths)
    which = heatmap_choice(save_heatmaps, n)
    part, parts = part_of(shard_ij, dist)
    mine_idx = block(n, part, parts)
    outdir = Path(out)
    mine = io.part_folder(outdir, part, parts)
    ident = {
        "checkpoint": str(checkpoint),
        "model_sha256": io.file_sha256(checkpoint),
        "threshold": det.threshold,
        "threshold_origin": det.threshold_origin,
        "inputs": n,
        "inputs_sha256": io.inputs_sha256(paths),
        "parts": parts,
    }
    main = not dist.enabled or dist.is_main
    tally = _Tally(on_row)
    collected: list[dict[str, Any]] | None = [] if on_row is None else None
    if collected is not None:
        tally.on_row = collected.append
    started = time.perf_counter()
    with run_lock(mine, "ed infer"):
        if overwrite:
            removed = io.clear(outdir, mine, ident, mine_idx, whole=parts == 1)
            if removed and main:
                track.log(f"--overwrite: removed {', '.join(removed[:6])}{' ...' if len(removed) > 6 else ''}")
        elif resume:
            refusal = io.resume_refusal(outdir, ident)
            if refusal:
                raise ConfigError(refusal)
        else:
            refusal = io.claim_refusal(outdir, mine, ident)
            if refusal:
                raise ConfigError(refusal)
        done = io.scored_rows(outdir, {paths[i]: i for i in mine_idx}, mine) if resume else {}
        todo = [i for i in mine_idx if i not in done]
        if resume:
            track.log(f"--resume: {len(done)} of {len(mine_idx)} images have their rows; {len(todo)} to score")
        # infer.json first: a part's rows on disk always name their run (the other ranks' --overwrite keeps them)
        io.write_info(mine, dict(ident, part=part, complete=False))
        stream = io.RowStream(mine)
        stream.start(done)
        # what this process hands on, in input order: the rows kept from before, merged with the new ones
        pending = iter(sorted(done))
        nxt = next(pending, None)
        emit = tally if parts == 1 or not dist.enabled else None  # torchrun: rank 0 hands on the merged rows

        def hand_on(upto: int) -> None:
            nonlocal nxt
            while nxt is not None and nxt < upto:
                if emit is not None:
                    emit(stream.row(nxt))
                nxt = next(pending, None)

        scorer = BatchScorer(det, outdir, which, save_raw_maps)
        t0 = time.perf_counter()
        try:
            for rows in _batches(engine, checkpoint, det, scorer, paths, todo, batch_size, num_workers, max_pixels,
                                 dev, precision, threshold, track, len(mine_idx), len(done)):  # fmt: skip
                stream.append(rows)
                for i, row in rows:
                    hand_on(i)
                    if emit is not None:
                        emit(row)
            hand_on(n)
            stream.finish()
        except BaseException:
            stream.close()
            raise
        seconds = time.perf_counter() - t0
        io.write_info(mine, dict(ident, part=part, complete=True, scored_now=len(todo), seconds=seconds))
        if parts == 1:  # the whole list is in the final files: parts of an earlier job (taken over by --resume) go
            io.remove_parts(outdir)
    result: dict[str, Any] = {
        "rows": collected,
        "csv": str(mine / io.CSV),
        "jsonl": str(mine / io.JSONL),
        "threshold_origin": det.threshold_origin,
        "heatmaps": str(outdir / "heatmaps") if which != "none" else None,
        "heatmap_choice": which,
        "part": [part, parts],
        "scored_now": len(todo),
        "kept": len(done),
        "merged": parts == 1,
        "waiting": None,
    }
    if parts > 1:
        if dist.enabled:  # every rank's part is finished before rank 0 merges them (no rows through the group)
            import torch.distributed as tdist

            tdist.barrier()
        if main:
            why = io.merge_parts(outdir, parts, ident)
            result["merged"] = why is None
            result["waiting"] = why
            if why is None:
                result["csv"], result["jsonl"] = str(outdir / io.CSV), str(outdir / io.JSONL)
                if dist.enabled:  # rank 0 hands on every row of the job, now in one file
                    info = io.read_info(outdir) or {}
                    result["scored_now"], seconds = info.get("scored_now", len(todo)), time.perf_counter() - t0
                    for row in io.read_rows(outdir):
                        tally(row)
            else:
                track.log(f"{mine / io.JSONL} is complete; the merge into {outdir / io.JSONL} waits: {why}")
    result.update(
        images=tally.rows,
        failed=tally.failed,
        flagged=tally.flagged,
        seconds=time.perf_counter() - started,
        images_per_second=io.images_per_second(result["scored_now"], seconds),
    )
    return result


def _batches(
    engine, checkpoint, det, scorer, paths, todo, batch_size, num_workers, max_pixels, dev, precision, threshold,
    track, total, done,
):  # fmt: skip
    """(input index, row) lists, one per batch, in input order: a DataLoader here, or a Ray Data pipeline."""
    if engine == "ray":
        from edcli.ray_infer import ray_batches

        with track.task("infer (ray)", total=total, unit="images") as bar:
            bar.advance(done)
            for rows in ray_batches(
                checkpoint, [(i, paths[i]) for i in todo], scorer, batch_size, max_pixels, str(dev), precision,
                threshold, num_workers,
            ):  # fmt: skip
                yield rows
                bar.advance(len(rows))
        return
    from edcli.data.images import FileDataset, collate_files
    from edcli.engine import data_loader

    # the panels draw the image the loader decoded: each file is decoded once
    dataset = FileDataset(
        [paths[i] for i in todo], det.image_size, det.resize_mode, scorer.heatmaps != "none", max_pixels
    )
    loader = data_loader(dataset, batch_size, num_workers, collate_fn=collate_files)
    for batch in _counted(track, loader, total, done):
        pos = [int(k) for k in batch["index"]]
        yield scorer.rows(batch, [todo[k] for k in pos], [paths[todo[k]] for k in pos])
