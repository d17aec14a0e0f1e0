"""edcli: the `ed` command-line tool for unsupervised image anomaly detection with ED (Emphasize Differences).

from edcli import Detector
det = Detector.load("run/checkpoints/brick.pt")  # or an .onnx file written by `ed export`
pred = det.predict("image.png")                    # .score, .label, .anomaly_map, .mask, ...
"""

from edcli.version import __version__

__all__ = ["Detector", "Prediction", "__version__"]


def __getattr__(name: str):
    # lazy: `import edcli` and `ed --help` must not import torch
    if name in ("Detector", "Prediction"):
        from edcli import detector

        return getattr(detector, name)
    raise AttributeError(f"module 'edcli' has no attribute {name!r}")
