"""`ed export`: a checkpoint as one ONNX graph (images -> raw map, smoothed map, score) with its calibration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edcli.errors import ConfigError


def parse_batch(batch: str) -> int | None:
    """--batch: "dynamic" (None) or a positive integer."""
    if str(batch).lower() == "dynamic":
        return None
    try:
        n = int(batch)
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigError(f"--batch {batch!r}: use a positive integer or 'dynamic'")
    return n


def run(
    *, checkpoint: str, out: str | None = None, opset: int = 17, batch: str = "dynamic", track=None
) -> dict[str, Any]:
    """Export CHECKPOINT to --out (default: beside it, .onnx); the optional packages are checked before any work."""
    from edcli.onnxio import DEFAULT_OPSET, export_graph, require_onnx

    require_onnx("ed export")
    from edcli.checkpoint import load_checkpoint
    from edcli.scorer import export_module, scoring_metadata

    n = parse_batch(batch)
    if not 13 <= int(opset) <= 20:
        raise ConfigError(f"--opset {opset}: use 13..20 (default {DEFAULT_OPSET})")
    ck = load_checkpoint(checkpoint)
    path = Path(out) if out else Path(checkpoint).with_suffix(".onnx")
    if path.suffix.lower() != ".onnx":
        raise ConfigError(f"--out {path}: the file name must end in .onnx (ed infer recognises models by it)")
    if track is not None:
        track.log(f"exporting {checkpoint} ({ck.backbone['backbone']}, {ck.backbone['image_size']} px) to {path}")
    meta = scoring_metadata(ck)
    info = export_graph(export_module(ck), path, ck.identity.image_size, meta, int(opset), n)
    return {
        "path": str(path),
        "checkpoint": str(checkpoint),
        "batch": n or "dynamic",
        **info,
        "threshold": (meta["calibration"] or {}).get("threshold"),
        "image_size": meta["image_size"],
    }
