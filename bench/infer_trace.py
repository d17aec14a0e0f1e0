"""Which edcli files one `ed infer` image passes through, and how often its path climbs back up the layers.

    python bench/infer_trace.py CHECKPOINT IMAGE [--src DIR]

Runs `ed infer`'s command (one image, no loader process, heat maps on) under a call tracer. Counted from the
first decode of the image to the end of the command: the per-batch path, not start-up. A climb is a call made from
a module of a lower layer into a module of a higher one (a callback, or a function that reaches up for what it
should have been handed; the layers of tests/test_architecture.py). --src: the
`src` folder to import edcli from (an older checkout, to compare). Also counts PIL.Image.open calls (decodes of
the file). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("image")
    ap.add_argument("--src", default=str(ROOT / "src"))
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, args.src)
    sys.path.insert(0, str(Path(args.src).resolve().parent / "tests"))
    import edcli
    from edcli.commands.infer import run
    from test_architecture import layer_of  # the layers the architecture test enforces

    pkg = str(Path(edcli.__file__).parent)
    calls: list[str] = []
    edges: list[tuple[str, str]] = []
    started = False

    def module_of(frame) -> str | None:
        f = frame.f_code.co_filename
        if not f.startswith(pkg):
            return None
        rel = Path(f).relative_to(Path(pkg).parent).with_suffix("")
        parts = list(rel.parts)
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    opens = 0

    def tracer(frame, event, arg):
        nonlocal started, opens
        if event != "call":
            return
        code = frame.f_code
        if started and code.co_name == "open" and code.co_filename.endswith(os.path.join("PIL", "Image.py")):
            opens += 1  # PIL.Image.open: one per decode of the file
        mod = module_of(frame)
        if mod is None:
            return
        if not started and frame.f_code.co_name == "__getitem__" and mod == "edcli.data.images":
            started = True
        if started:
            calls.append(mod)
            caller = module_of(frame.f_back) if frame.f_back is not None else None
            if caller is not None and caller != mod:
                edges.append((caller, mod))

    out = tempfile.mkdtemp(prefix="ed-trace-")
    kwargs = dict(checkpoint=args.checkpoint, inputs=[args.image], out=out, device="cpu", num_workers=0)
    sys.setprofile(tracer)
    try:
        try:
            run(**kwargs)
        except TypeError:  # an edcli from before keyword-only run(*, ...)
            run(args.checkpoint, [args.image], out, device="cpu", num_workers=0)
    finally:
        sys.setprofile(None)
    climbs = [(a, b) for a, b in edges if layer_of(b) < layer_of(a)]
    print(
        json.dumps(
            {
                "files": sorted(set(calls)),
                "n_files": len(set(calls)),
                "image_file_opens": opens,
                "climbs": len(climbs),
                "climb_pairs": sorted({f"{a} -> {b}" for a, b in climbs}),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
