"""`python -m benchmarks.idle [--seconds 60]`: an idle daemon's CPU share and its stop time.

Starts `autotag DIR` (watch mode, the stand-in model, an empty folder) as a child process,
lets it settle, reads its CPU time (utime + stime in /proc/PID/stat) over `--seconds`, then sends
SIGTERM and times the exit. A NAS runs the daemon all year: the targets are under 0.05 % of one
core and a stop in under a second (issue 12). Measure on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.measure import CACHE, standin

SETTLE_SECONDS = 5.0  # after "watching": the startup scan and first checks are done
CPU_TARGET = 0.0005  # 0.05 % of one core
STOP_TARGET = 1.0  # s from SIGTERM to exit


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.idle")
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    model = standin(CACHE)
    with tempfile.TemporaryDirectory(prefix="autotag-idle-") as tmp:
        root = Path(tmp)
        (root / "clips").mkdir()
        config = root / "config.yaml"
        config.write_text(f"model: {{handle: '{model}'}}\nvocabulary: [skiing, cooking]\n"
                          f"state: {{path: '{root / 'state.sqlite3'}'}}\n"
                          "outputs: {log: null, previews: null}\n")
        env = {**os.environ, "XDG_CACHE_HOME": str(root / "cache")}
        env.pop("NOTIFY_SOCKET", None)
        proc = subprocess.Popen([sys.executable, "-m", "autotag", "--config", str(config),
                                 str(root / "clips")], stderr=subprocess.PIPE, text=True,
                                env=env)
        try:
            for line in proc.stderr:
                if "watching" in line:
                    break
            time.sleep(SETTLE_SECONDS)
            before, started = cpu_seconds(proc.pid), time.monotonic()
            time.sleep(args.seconds)
            used, wall = cpu_seconds(proc.pid) - before, time.monotonic() - started
            stopping = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
            stop = time.monotonic() - stopping
        finally:
            if proc.poll() is None:
                proc.kill()
    share = used / wall
    print(f"idle CPU: {used:.3f} s over {wall:.0f} s = {share * 100:.3f} % of one core "
          f"(target < {CPU_TARGET * 100:.2f} %: {'met' if share < CPU_TARGET else 'NOT MET'})")
    print(f"stop on SIGTERM: {stop:.2f} s, exit code {code} "
          f"(target < {STOP_TARGET:.0f} s: {'met' if stop < STOP_TARGET else 'NOT MET'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
