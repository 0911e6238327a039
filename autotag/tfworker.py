"""argv (convert | text | text-server) → TensorFlow loads the model → IR in a folder, or text
embeddings on stdout → exit. The child's side of runtimes/child.py: the only process that
imports TensorFlow when the video model runs on OpenVINO, and it exits when its job is done
(text-server: when its parent, or with --socket every client, stops asking for `--idle` s).

    python -m autotag.tfworker convert HANDLE BATCH FOLDER [--threads N]
    python -m autotag.tfworker text HANDLE [--threads N]   (JSON texts on stdin)
    python -m autotag.tfworker text-server HANDLE [--idle S] [--threads N] [--socket PATH]
"""

from __future__ import annotations

import io
import json
import os
import select
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
    # the server every `autotag search` shares forks off before TensorFlow starts a thread
    ready = shared_text.detach(shared) if command == "text-server" and shared else None
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
            if ready is not None:  # shared by every `autotag search` (shared_text.py)
                return shared_text.serve(model, shared, idle, ready)
            return text_server(model, idle)
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


def text_server(model, idle: float) -> int:
    """Answer framed text requests on stdin (child.ResidentText's protocol) until stdin ends or
    `idle` seconds pass without one; exit 0."""
    from autotag.runtimes.child import FRAME, reply

    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        ready, _, _ = select.select([stdin], [], [], idle)
        if not ready:
            return 0  # idle: the parent starts another child when it needs one
        head = stdin.read(FRAME.size)
        if len(head) != FRAME.size:
            return 0  # the parent closed our stdin (or ended)
        stdout.write(reply(model, json.loads(stdin.read(FRAME.unpack(head)[0]))))
        stdout.flush()


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # TensorFlow's teardown is slow and has nothing left to do
