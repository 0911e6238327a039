"""Counters and a latency histogram → Prometheus's text exposition format (version 0.0.4).

Hand-written rather than prometheus_client: a dozen lines of text for a handful of series.
"""

from __future__ import annotations

import bisect
import threading

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0)  # seconds


class Histogram:
    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last: above every bucket (+Inf)
        self.sum = 0.0
        self._lock = threading.Lock()

    def observe(self, seconds: float) -> None:
        with self._lock:
            self.counts[bisect.bisect_left(self.buckets, seconds)] += 1
            self.sum += seconds

    def lines(self, name: str, help_text: str) -> list[str]:
        with self._lock:
            counts, total = list(self.counts), self.sum
        out = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        cumulative = 0
        for bound, count in zip((*self.buckets, float("inf")), counts, strict=True):
            cumulative += count
            le = "+Inf" if bound == float("inf") else repr(bound)
            out.append(f'{name}_bucket{{le="{le}"}} {cumulative}')
        out += [f"{name}_sum {total:.6f}", f"{name}_count {cumulative}"]
        return out


def sample(name: str, kind: str, help_text: str, value: float,
           labels: dict[str, str] | None = None) -> list[str]:
    """One metric's HELP, TYPE and sample lines."""
    label = ""
    if labels:
        label = "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name}{label} {value:g}"]


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
