"""argv (convert | text) → TensorFlow loads the model → IR in a folder, or text embeddings on
stdout → exit. The child's side of runtimes/child.py: the only process that imports TensorFlow
when the video model runs on OpenVINO, and it exits when its one job is done.

    python -m autotag.runtimes.tfworker convert HANDLE BATCH FOLDER [--threads N]
    python -m autotag.runtimes.tfworker text HANDLE [--threads N]   (JSON texts on stdin)
"""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import numpy as np

from autotag.runtimes.child import EXIT_CONVERSION, EXIT_MODEL


def main(argv: list[str]) -> int:
    from autotag.model import ModelError, load_tensorflow_model
    from autotag.runtimes.openvino import ConversionError, convert_signature

    threads = int(argv[argv.index("--threads") + 1]) if "--threads" in argv else 0
    command, handle = argv[0], argv[1]
    try:
        model = load_tensorflow_model(handle, threads)
        if command == "convert":
            convert_signature(model.video_fn, int(argv[2]), Path(argv[3]))
        else:
            texts = json.loads(sys.stdin.buffer.read())
            buffer = io.BytesIO()
            np.save(buffer, model.embed_text(texts), allow_pickle=False)
            sys.stdout.buffer.write(buffer.getvalue())
    except (ModelError, ConversionError) as exc:
        # the protocol with the parent: the last line on stderr says why (child.run reads it)
        sys.stderr.write(f"{exc}\n")
        return EXIT_MODEL if isinstance(exc, ModelError) else EXIT_CONVERSION
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # TensorFlow's teardown is slow and has nothing left to do
