"""argv (convert | text | text-server) → TensorFlow loads the model → IR in a folder, text
embeddings on stdout, or a server on a socket → exit. The child's side of runtimes/child.py and
runtimes/shared_text.py: the only process that imports TensorFlow when the video model runs on
OpenVINO, and it exits when its job is done (text-server: when no client has asked for `--idle`
seconds).

    python -m autotag.tfworker convert HANDLE BATCH FOLDER [--threads N]
    python -m autotag.tfworker text HANDLE [--threads N]   (JSON texts on stdin)
    python -m autotag.tfworker text-server HANDLE --socket PATH [--idle S] [--threads N]
"""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import numpy as np

from autotag.runtimes import shared_text
from autotag.runtimes.child import EXIT_CONVERSION, EXIT_MODEL


def main(argv: list[str]) -> int:
    from autotag.model import ModelError, load_tensorflow_model
    from autotag.runtimes.openvino import ConversionError, convert_signature

    threads = int(argv[argv.index("--threads") + 1]) if "--threads" in argv else 0
    command, handle = argv[0], argv[1]
    shared = Path(argv[argv.index("--socket") + 1]) if "--socket" in argv else None
    if command == "text-server" and shared is None:
        return _fail("text-server needs --socket PATH", EXIT_MODEL)
    # the server every `autotag search` shares forks off before TensorFlow starts a thread
    ready = shared_text.detach(shared) if command == "text-server" else None
    try:
        model = load_tensorflow_model(handle, threads)
    except ModelError as exc:
        return _fail(str(exc), EXIT_MODEL, ready)
    except Exception as exc:  # noqa: BLE001 - TensorFlow itself broken (an import): one line
        # not a conversion failure (which would only make the parent load TensorFlow too)
        return _fail(f"{type(exc).__name__}: {exc}", EXIT_MODEL, ready)
    try:
        if command == "convert":
            convert_signature(model.video_fn, int(argv[2]), Path(argv[3]))
        elif command == "text-server":
            idle = float(argv[argv.index("--idle") + 1]) if "--idle" in argv else 300.0
            return shared_text.serve(model, shared, idle, ready)
        else:
            texts = json.loads(sys.stdin.buffer.read())
            buffer = io.BytesIO()
            np.save(buffer, model.embed_text(texts), allow_pickle=False)
            sys.stdout.buffer.write(buffer.getvalue())
    except (ModelError, ConversionError) as exc:
        return _fail(str(exc), EXIT_MODEL if isinstance(exc, ModelError) else EXIT_CONVERSION)
    return 0


def _fail(reason: str, code: int, ready: int | None = None) -> int:
    """The protocol with the parent: the last line on stderr says why (child.run reads it);
    a detached server tells the process waiting for it (shared_text.detach)."""
    lines = [line.strip() for line in reason.splitlines() if line.strip()]
    sys.stderr.write(f"{' '.join(lines)[:500]}\n")
    if ready is not None:
        shared_text.failed(ready, " ".join(lines))
    return code


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # TensorFlow's teardown is slow and has nothing left to do
