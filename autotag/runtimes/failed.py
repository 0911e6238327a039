"""A runtime that failed → a record beside its cache (model, OpenVINO, TensorFlow, autotag and
Python versions, precision) → later runs skip it without trying again, until a version changes
or `autotag fetch-model` retries.

Converting the video model for OpenVINO runs TensorFlow in a child process for a minute or
more; when it fails (an operation OpenVINO cannot translate, a broken install), trying it again
at every start cost that minute each time and said the same warning each time (issue 29). The
record is keyed by everything whose change could make it work: the model's fingerprint and the
OpenVINO version and batch size (the converted model's own cache key), the precision, and the
TensorFlow, autotag and Python versions in the record; any of them changing is a new attempt.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import platform
import time
from pathlib import Path

from autotag.atomic import write_atomic

SUFFIX = ".failed.json"


def versions() -> dict[str, str]:
    """The versions a retry could succeed with, read without importing TensorFlow."""
    found = {"python": platform.python_version()}
    for name in ("tensorflow", "autotag"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "none"
    return found


class Failure:
    """The failure record of one converted model (`key`: openvino.cache_key) at one precision,
    in the conversion cache `folder`."""

    def __init__(self, folder: Path, key: str, precision: str) -> None:
        self.path = folder / f"{key}-{precision}{SUFFIX}"

    def read(self) -> dict | None:
        """{"reason", "when", "versions"} of a failure recorded with today's versions, else None."""
        with contextlib.suppress(OSError, ValueError):
            record = json.loads(self.path.read_text())
            if isinstance(record, dict) and record.get("versions") == versions():
                return record
        return None

    def write(self, reason: str) -> None:
        """Record a failure (atomically: a reader sees the old record or the new one)."""
        record = {"reason": reason, "when": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "versions": versions()}
        with contextlib.suppress(OSError):  # a read-only cache: the next run tries again
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, (json.dumps(record, indent=1) + "\n").encode())

    def clear(self) -> None:
        """The model converted and compiled: this key's records go, at every precision (the
        conversion they failed at works now; auto and an explicit precision share it)."""
        key = self.path.name.rsplit("-", 1)[0]
        for path in self.path.parent.glob(f"{key}-*{SUFFIX}"):
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
