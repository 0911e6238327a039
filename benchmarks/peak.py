"""A child process's own peak RSS, measured through a small launcher.

`os.wait4`'s ru_maxrss of a child counts the memory of the process that spawned it: Linux keeps
the larger of the old and the new image's high-water mark across exec (fs/exec.c,
`setmax_mm_hiwater_rss`), so a child spawned by a benchmark holding a million paths "peaked" at
the benchmark's 473 MB while using 81 MB. Here the child is spawned by a launcher (`python -S`,
a few MB), which reads the child's ru_maxrss with wait4 and writes it to a file, forwards
SIGTERM, SIGINT and SIGHUP to it, and exits with its exit status.

    proc = Measured(argv, stdout=..., env=..., cwd=...)   # Popen's keyword arguments
    code, peak_mb = proc.wait()
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

LAUNCHER = """
import os, signal, sys
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)
for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(number, lambda n, _: os.kill(pid, n))
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(str(usage.ru_maxrss))
code = os.waitstatus_to_exitcode(status)
os._exit(code if code >= 0 else 128 - code)
"""


class Measured:
    """argv run through the launcher; `proc` is the launcher's Popen (its SIGTERM, SIGINT and
    SIGHUP reach argv)."""

    def __init__(self, argv: list[str], **popen) -> None:
        fd, self._peak = tempfile.mkstemp(prefix="autotag-peak-")
        os.close(fd)
        self.proc = subprocess.Popen([sys.executable, "-S", "-c", LAUNCHER, self._peak, *argv],
                                     **popen)

    def wait(self) -> tuple[int, float]:
        """(exit code, the child's peak RSS in MB; 0.0 if the launcher was killed first)."""
        code = self.proc.wait()
        try:
            with open(self._peak) as f:
                text = f.read().strip()
        finally:
            os.unlink(self._peak)
        return code, (int(text) / 1024 if text else 0.0)
