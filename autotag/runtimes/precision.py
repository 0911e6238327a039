"""CPU flags + the cached model's records → the precision `model.precision: auto` runs, and why;
bf16 against f32 on the user's first windows → agreed or not → recorded beside the cached model.

auto (issue 34) is the fastest precision whose tags agree with f32's on this CPU, for this model:

- INT8 where an INT8 copy validated on the user's clips is cached (analysis/quantizing.py's report
  accepted it), unless bf16 was measured faster here;
- bf16 where the CPU has AVX-512 BF16 or AMX (OpenVINO then runs bf16 kernels: 3.7× f32 on a
  Sapphire Rapids) and bf16 agreed with f32 on this CPU, for this model: measured, not assumed.
  Until it has been, the first TRIAL_WINDOWS windows of the user's own clips run through both
  (f32's embeddings are the ones kept), and the verdict is written in AGREEMENT beside the
  cached model, keyed by CPU, so it is measured once per model and CPU;
- f32 elsewhere, or when bf16 disagreed: the reason says which.

Nothing here imports OpenVINO or TensorFlow; the embeddings compared are float32 [n, 512].
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from autotag.atomic import write_atomic

log = logging.getLogger(__name__)

AUTO = "auto"
CPUINFO = Path("/proc/cpuinfo")
BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # either: OpenVINO's CPU plugin runs bf16 kernels
# INT8 gains: VNNI's int8 dot products (AVX-512 VNNI, AVX-VNNI on Alder Lake and Zen 4+, AMX),
# or AVX2 alone (2.48× f32 on a Zen 3, issue 19), where bf16 gives nothing
INT8_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni", "avx2")
AGREEMENT = "precision.json"  # in the cached IR's folder: {cpu key: {"bf16": verdict}}
AGREEMENT_FORMAT = 1
# Windows of the user's clips bf16 is checked on: 16 model calls at batch 2, about 3 s of bf16
# beside the f32 that runs anyway on this CPU; one window in 32 may differ in its top tag (a
# score on a threshold flips for the smallest error; quantize.py's reasoning for its 97 %).
TRIAL_WINDOWS = 32
MAX_TOP_TAG_FLIPS = 1
# Scores' cosine to f32's, averaged over the windows: bf16 measured 0.99999 on the stand-in; a
# window whose scores turned further than this has lost more than rounding.
MIN_SCORE_COSINE = 0.999


@dataclass(frozen=True)
class Cpu:
    """What the precision depends on: the model name and the flags that matter."""

    name: str
    flags: frozenset[str]

    @property
    def key(self) -> str:
        """The record's key: one per CPU model and flag set (a VM may hide flags)."""
        wanted = sorted(self.flags & {*BF16_FLAGS, *INT8_FLAGS})
        digest = hashlib.sha256(" ".join([self.name, *wanted]).encode()).hexdigest()[:12]
        return digest

    @property
    def bf16(self) -> tuple[str, ...]:
        return tuple(f for f in BF16_FLAGS if f in self.flags)

    @property
    def int8(self) -> tuple[str, ...]:
        return tuple(f for f in INT8_FLAGS if f in self.flags)


def this_cpu(capabilities: tuple[str, ...] = ()) -> Cpu:
    """/proc/cpuinfo's first processor; where it names no flags (not x86, or not Linux),
    OpenVINO's OPTIMIZATION_CAPABILITIES stand in (BF16 → a bf16 flag, INT8 → an int8 one)."""
    name, flags = "unknown CPU", set()
    with contextlib.suppress(OSError, UnicodeDecodeError):
        for line in CPUINFO.read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and name == "unknown CPU":
                name = value.strip()
            elif key == "flags":
                flags = set(value.split())
                break
    if not flags:
        flags = ({BF16_FLAGS[0]} if "BF16" in capabilities else set()) | \
                ({INT8_FLAGS[0]} if "INT8" in capabilities else set())
    return Cpu(name, frozenset(flags))


@dataclass(frozen=True)
class Verdict:
    """bf16 (or another candidate) against f32 on the user's windows, as recorded."""

    precision: str
    accepted: bool
    reason: str  # one line: the figures, and the bar they met or missed
    windows: int
    mean_score_cosine: float
    min_score_cosine: float
    top_tag_agreement: float
    speedup: float  # candidate over f32, timed side by side on the same batches
    measured: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    @staticmethod
    def from_json(data: dict) -> Verdict | None:
        with contextlib.suppress(TypeError, KeyError):
            return Verdict(**{k: data[k] for k in Verdict.__dataclass_fields__})
        return None


def read_verdict(ir: Path, cpu: Cpu, precision: str = "bf16") -> Verdict | None:
    """The recorded verdict on `precision` for this CPU and the model cached in `ir`."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        data = json.loads((ir / AGREEMENT).read_text())
        return Verdict.from_json(data["cpus"][cpu.key][precision])
    return None


def record_verdict(ir: Path, cpu: Cpu, verdict: Verdict) -> None:
    """Add the verdict to AGREEMENT in `ir`, written whole (atomic.py); other CPUs' kept (a
    cache folder shared by machines, or a VM moved to another host)."""
    data: dict = {}
    with contextlib.suppress(OSError, ValueError):
        data = json.loads((ir / AGREEMENT).read_text())
    if not isinstance(data, dict) or data.get("format") != AGREEMENT_FORMAT:
        data = {"format": AGREEMENT_FORMAT, "cpus": {}}
    entry = data["cpus"].setdefault(cpu.key, {"cpu": cpu.name})
    entry[verdict.precision] = asdict(verdict)
    try:
        write_atomic(ir / AGREEMENT, (json.dumps(data, indent=2) + "\n").encode())
    except OSError as exc:  # a read-only cache: measured again at the next start
        log.warning("cannot record the precision's agreement in %s (%s)", ir, exc)


def trial_file(ir: Path, cpu: Cpu, precision: str) -> Path:
    """Where a trial's windows wait for the next process (Trial's `keep`), beside AGREEMENT."""
    return ir / f"trial-{cpu.key}-{precision}.npz"


@dataclass(frozen=True)
class Choice:
    """What auto runs now, why, and the candidate to check on the first windows (or None)."""

    precision: str
    reason: str
    trial: str | None = None
    cpu: Cpu | None = None  # the CPU it was chosen for: a trial's verdict is recorded for it


def choose(ir: Path, cpu: Cpu, int8_report: dict | None) -> Choice:
    """auto's precision for the model cached in `ir` on `cpu`. int8_report: the accepted INT8
    copy's report (quantize.py), None when there is none."""
    return replace(_choose(ir, cpu, int8_report), cpu=cpu)


def _choose(ir: Path, cpu: Cpu, int8_report: dict | None) -> Choice:
    bf16 = read_verdict(ir, cpu) if cpu.bf16 else None
    if int8_report is not None:
        int8_speed = float(int8_report.get("speedup") or 0.0)
        if bf16 is not None and bf16.accepted and bf16.speedup > int8_speed:
            return Choice("bf16", f"bf16 ran {bf16.speedup:.1f}× f32 here, the accepted INT8 "
                                  f"copy {int8_speed:.1f}×; {bf16.reason}")
        return Choice("int8", "an INT8 copy validated on your clips is cached (mean cosine "
                              f"{float(int8_report.get('mean_cosine', 0)):.4f}, tags as f32's "
                              f"on {float(int8_report.get('tag_agreement', 0)):.0%} of held-out "
                              f"windows, {int8_speed:.1f}× f32)")
    if not cpu.bf16:
        return Choice("f32", f"this CPU ({cpu.name}) has neither AVX-512 BF16 nor AMX: bf16 "
                             "would run as f32")
    flags = "/".join(cpu.bf16)
    if bf16 is None:
        return Choice("f32", f"this CPU has {flags}: checking bf16 against f32 on the first "
                             f"{TRIAL_WINDOWS} windows of your clips", trial="bf16")
    if bf16.accepted:
        return Choice("bf16", f"this CPU has {flags}; {bf16.reason}")
    return Choice("f32", f"this CPU has {flags}, but {bf16.reason}")


class Trial:
    """A candidate precision's embeddings beside f32's on the same windows, until there are
    TRIAL_WINDOWS of them; then `verdict(vectors, ...)` judges them.

    With a `keep` file the windows seen so far are saved there after each call and read back
    by the next process, so runs of a few windows each (`autotag --once` on a folder that
    gains a clip or two a day) reach a verdict together, instead of each running both
    precisions side by side forever. float32 [n, 512] twice: 128 KB at most."""

    def __init__(self, precision: str, windows: int = TRIAL_WINDOWS,
                 keep: Path | None = None) -> None:
        self.precision = precision
        self.windows = windows
        self.keep = keep
        self._reference: list[np.ndarray] = []
        self._candidate: list[np.ndarray] = []
        self._seconds = [0.0, 0.0]  # f32, candidate
        if keep is not None:
            self._resume(keep)

    def _resume(self, keep: Path) -> None:
        with contextlib.suppress(OSError, ValueError, KeyError, EOFError):
            with np.load(keep) as saved:
                reference, candidate = saved["reference"], saved["candidate"]
                seconds = saved["seconds"]
            if reference.shape == candidate.shape and reference.ndim == 2 and len(seconds) == 2:
                self._reference, self._candidate = [reference], [candidate]
                self._seconds = [float(seconds[0]), float(seconds[1])]

    def _save(self) -> None:
        if self.keep is None:
            return
        buffer = io.BytesIO()
        np.savez(buffer, reference=np.concatenate(self._reference),
                 candidate=np.concatenate(self._candidate), seconds=np.array(self._seconds))
        try:
            write_atomic(self.keep, buffer.getvalue())
        except OSError as exc:  # a read-only cache: this process's windows still count
            log.debug("cannot keep the precision trial's windows in %s (%s)", self.keep, exc)

    def forget(self) -> None:
        """The verdict is recorded: the windows kept for it go."""
        if self.keep is not None:
            with contextlib.suppress(OSError):
                self.keep.unlink()

    @property
    def seen(self) -> int:
        return sum(len(r) for r in self._reference)

    @property
    def full(self) -> bool:
        return self.seen >= self.windows

    def add(self, reference: np.ndarray, candidate: np.ndarray, reference_seconds: float,
            candidate_seconds: float) -> None:
        self._reference.append(reference)
        self._candidate.append(candidate)
        self._seconds[0] += reference_seconds
        self._seconds[1] += candidate_seconds
        if not self.full:
            self._save()

    def verdict(self, vectors: np.ndarray) -> Verdict:
        """Both precisions' scores against the vocabulary's vectors float32 [n_tags, 512]:
        each window's scores' cosine to f32's, and whether its best-scoring tag is f32's."""
        a, b = np.concatenate(self._reference), np.concatenate(self._candidate)
        sa, sb = a.astype(np.float64) @ vectors.T, b.astype(np.float64) @ vectors.T
        norms = np.linalg.norm(sa, axis=1) * np.linalg.norm(sb, axis=1)
        cos = np.where(norms > 0, (sa * sb).sum(1) / np.maximum(norms, 1e-300), 1.0)
        flips = int((sa.argmax(1) != sb.argmax(1)).sum())
        n = len(a)
        speedup = self._seconds[0] / max(self._seconds[1], 1e-9)
        figures = (f"scores' cosine to f32 {cos.mean():.5f} (lowest {cos.min():.5f}), top tag "
                   f"as f32's on {n - flips} of {n} of your windows")
        if cos.mean() < MIN_SCORE_COSINE:
            accepted, why = False, f"below {MIN_SCORE_COSINE}"
        elif flips > MAX_TOP_TAG_FLIPS:
            accepted, why = False, f"more than {MAX_TOP_TAG_FLIPS} window differs"
        else:
            accepted, why = True, "agreed"
        reason = (f"{self.precision} {'agreed with' if accepted else 'disagreed with'} f32: "
                  f"{figures}" + ("" if accepted else f" ({why})"))
        return Verdict(self.precision, accepted, reason, n, float(cos.mean()),
                       float(cos.min()), (n - flips) / n, speedup)
