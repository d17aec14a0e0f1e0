"""ONNX files: the export of the scoring pass (edcli.scorer.export_module) with its metadata, and ONNX Runtime
scoring. The only importer of onnx and onnxruntime (the optional extra `edcli[onnx]`)."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from edcli.errors import CheckpointError, ConfigError, DependencyError
from edcli.files import atomic_open

INSTALL_HINT = "pip install 'edcli[onnx]'"
DEFAULT_OPSET = 17


def _missing(what: str, exc: ImportError) -> DependencyError:
    return DependencyError(
        f"{what} needs the optional packages onnx, onnxscript and onnxruntime ({exc.name or exc} "
        f"is missing): {INSTALL_HINT}"
    )


def require_onnx(what: str) -> None:
    """DependencyError with the install line when onnx (export) is missing."""
    try:
        import onnx  # noqa: F401
    except ImportError as exc:
        raise _missing(what, exc) from exc


def export_graph(
    graph, path: Path, image_size: int, metadata: dict[str, Any], opset: int = DEFAULT_OPSET, batch: int | None = None
) -> dict[str, Any]:
    """Export through the TorchScript exporter (the graph is traced: its loops are over fixed levels and layers),
    write metadata_props (JSON values), run onnx.checker, write atomically. batch None: a dynamic batch axis."""
    try:
        import onnx
    except ImportError as exc:
        raise _missing("ed export", exc) from exc
    import torch

    from edcli.scorer import INPUT_NAME, OUTPUT_NAMES

    example = torch.rand(batch or 2, 3, image_size, image_size)
    dynamic = None if batch else {name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)}
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about constant shapes: the shapes are fixed by design
        with torch.no_grad():
            torch.onnx.export(
                graph,
                (example,),
                buf,
                dynamo=False,
                opset_version=int(opset),
                input_names=[INPUT_NAME],
                output_names=list(OUTPUT_NAMES),
                dynamic_axes=dynamic,
                do_constant_folding=True,
            )
    model = onnx.load_from_string(buf.getvalue())
    model.producer_name, model.doc_string = "edcli", "ED anomaly scores: images -> raw_map, smoothed_map, score"
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.checker.check_model(model, full_check=True)
    data = model.SerializeToString()
    with atomic_open(Path(path), "wb") as fh:
        fh.write(data)
    return {"bytes": len(data), "opset": int(opset), "nodes": len(model.graph.node)}


def providers(device: str = "auto") -> list:
    """ONNX Runtime execution providers for --device: CUDA first where it is available (auto) or asked for
    (cuda, cuda:N), then the CPU."""
    import onnxruntime as ort

    have = ort.get_available_providers()
    name = (device or "auto").lower()
    if name.startswith("cuda"):
        if "CUDAExecutionProvider" not in have:
            raise ConfigError(
                f"--device {device}: this onnxruntime has no CUDA provider (have: {', '.join(have)}); "
                "install onnxruntime-gpu or use --device cpu"
            )
        index = name.partition(":")[2]
        if index and not index.isdigit():
            raise ConfigError(f"--device {device}: use cuda or cuda:N")
        return [("CUDAExecutionProvider", {"device_id": int(index or 0)}), "CPUExecutionProvider"]
    if name == "auto" and "CUDAExecutionProvider" in have:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if name not in ("auto", "cpu"):
        raise ConfigError(f"--device {device}: an ONNX model runs on auto, cpu or cuda")
    return ["CPUExecutionProvider"]


class OnnxScorer:
    """An exported graph in an ONNX Runtime session: (B, 3, S, S) float32 images -> raw, smoothed maps and scores."""

    def __init__(self, path: str | Path, device: str = "auto", threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise _missing(f"scoring with {path}", exc) from exc
        if not Path(path).is_file():
            raise CheckpointError(
                f"ONNX model {path} does not exist; write one with `ed export CHECKPOINT --out {path}`"
            )
        opts = ort.SessionOptions()
        # idle pool threads sleep instead of spinning, as ed sets OMP_WAIT_POLICY=PASSIVE for torch (shared CPUs)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            opts.intra_op_num_threads, opts.inter_op_num_threads = int(threads), 1
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=providers(device))
        except ConfigError:
            raise
        except Exception as exc:  # onnxruntime raises its own types for missing, corrupt or foreign files
            raise CheckpointError(
                f"{path} cannot be loaded by ONNX Runtime ({type(exc).__name__}: {exc}); "
                "export it with `ed export CHECKPOINT`"
            ) from exc
        raw = self.session.get_modelmeta().custom_metadata_map
        try:
            self.meta = {k: json.loads(v) for k, v in raw.items()}
        except ValueError as exc:
            raise CheckpointError(f"{path}: its metadata is not edcli's JSON; export it with `ed export`") from exc
        if self.meta.get("format") != "edcli-onnx":
            raise CheckpointError(f"{path} is not an ONNX model written by `ed export`")
        shape = self.session.get_inputs()[0].shape
        self.batch = shape[0] if isinstance(shape[0], int) else None  # a fixed batch size, or None (dynamic)
        self.input_name = self.session.get_inputs()[0].name

    def images(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(B, 3, S, S) images -> raw maps, smoothed maps, float64 scores (as edcli.scorer.Scorer.images)."""
        images = np.ascontiguousarray(images, dtype=np.float32)
        n = len(images)
        if not self.batch:
            raw, smoothed, scores = self.session.run(None, {self.input_name: images})
            return raw, smoothed, scores.astype(np.float64)
        outs = []
        for start in range(0, n, self.batch):  # a fixed-batch graph: chunks, the last one padded with zeros
            chunk = images[start : start + self.batch]
            pad = np.zeros((self.batch - len(chunk), *chunk.shape[1:]), np.float32)
            got = self.session.run(None, {self.input_name: np.concatenate([chunk, pad])})
            outs.append([o[: len(chunk)] for o in got])
        raw, smoothed, scores = (np.concatenate([o[i] for o in outs]) for i in range(3))
        return raw, smoothed, scores.astype(np.float64)
