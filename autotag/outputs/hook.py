"""Tagged clip → a user's command (hooks.on_tagged), with the clip's tags in its environment.

    AUTOTAG_PATH     the clip          AUTOTAG_SIDECAR  its sidecar JSON (empty if none)
    AUTOTAG_TOP      the top tag       AUTOTAG_TAGS     all given tags, comma-separated
    AUTOTAG_SCORES   label=score pairs, comma-separated

Run through the shell, after every other output, with a timeout. Its failure is logged by the
OutputSet (the hook is advisory) and never fails the clip.
"""

from __future__ import annotations

import os
import subprocess

from autotag.clip import Tagged
from autotag.outputs.base import OutputError


class Hook:
    name = "hook"

    def __init__(self, command: str, timeout: float) -> None:
        self.command = command
        self.timeout = timeout

    def write(self, tagged: Tagged) -> None:
        env = {**os.environ,
               "AUTOTAG_PATH": str(tagged.clip.source.path),
               "AUTOTAG_SIDECAR": tagged.outputs.get("sidecar", ""),
               "AUTOTAG_TOP": tagged.top.label if tagged.top else "",
               "AUTOTAG_TAGS": ",".join(t.label for t in tagged.tags),
               "AUTOTAG_SCORES": ",".join(f"{t.label}={t.score:.3f}" for t in tagged.tags)}
        try:
            done = subprocess.run(self.command, shell=True, env=env, timeout=self.timeout,
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  errors="replace")
        except subprocess.TimeoutExpired:
            raise OutputError(f"the hook ran longer than hooks.timeout ({self.timeout:g} s) "
                              "and was stopped") from None
        except OSError as exc:
            raise OutputError(f"the hook could not start: {exc.strerror or exc}") from None
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or [""])[-1][:200]
            raise OutputError(f"the hook exited with {done.returncode}"
                              + (f": {last}" if last else " (nothing on stderr)"))
        return None
