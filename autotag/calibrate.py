"""Labelled clips' scores → per-tag thresholds for a target precision + a softmax temperature →
printed, or written into the config's `tagging:` section with its comments kept.

Threshold: the lowest score at which tagging every clip scoring at least that much is right for
at least `target` of them (the most recall that precision allows), placed halfway to the next
lower score and shortened to a few decimals. It is fitted on raw clip scores; tagging also
applies top_k, which only takes tags away. A tag whose target cannot be reached on these clips
keeps whatever threshold it had.

Temperature: the T minimising the mean negative log-likelihood of the clips' true tags under
softmax(scores / T) over the vocabulary (temperature scaling, Guo et al. 2017), found by a 1-D
search. NLL is convex in 1/T, so a grid plus golden-section refinement finds the minimum.

Writing: a textual edit of the `tagging:` block (the `thresholds:` and `temperature:` entries are
replaced or inserted; every other line stays byte for byte), then checked: the edited YAML must
load to exactly the old config with those two keys changed, and pass parse_config, before it
replaces the file atomically. Anything unexpected (anchors, a multi-line flow mapping, ...)
refuses the edit and prints the lines to paste instead.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from autotag.atomic import write_atomic
from autotag.config import Config, ConfigError, parse_config
from autotag.evaluate import (
    EvalError,
    Labelled,
    check_layout,
    clip_scores,
    load_labelled,
    open_session,
    precision_recall_curve,
)
from autotag.model import Embedder
from autotag.vocabulary import build_vocabulary

log = logging.getLogger(__name__)

DEFAULT_PRECISION = 0.9  # target precision of each tag's threshold
T_MIN, T_MAX = 0.01, 100.0  # the temperature search's range
T_GRID = 81  # log-spaced grid points before refinement
GOLDEN_STEPS = 60


class CannotEdit(Exception):
    """The config cannot be edited safely; the message says why."""


# -- thresholds -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class TagThreshold:
    label: str
    clips: int  # labelled with the tag
    others: int  # labelled otherwise
    threshold: float | None  # None: the target precision is not reachable on these clips
    precision: float  # at `threshold` (or the best reachable, when it is None)
    recall: float
    best_score: float  # where the best reachable precision is, when the target is not
    current: float  # the threshold tagging uses now

    @property
    def reached(self) -> bool:
        return self.threshold is not None

    def to_json(self) -> dict:
        return {"label": self.label, "clips": self.clips, "others": self.others,
                "threshold": self.threshold, "precision": round(self.precision, 4),
                "recall": round(self.recall, 4), "current": self.current}


def precision_threshold(scores: np.ndarray, positive: np.ndarray, target: float
                        ) -> tuple[float | None, float, float, float]:
    """One tag's clip scores [n] and truth [n] → (threshold or None, precision, recall, score
    of that point). The threshold separates the chosen score from the next lower one."""
    thresholds, precision, recall = precision_recall_curve(scores, positive)
    ok = np.flatnonzero(precision >= target - 1e-12)
    if len(ok) == 0:
        best = int(np.flatnonzero(precision == precision.max())[-1])
        return None, float(precision[best]), float(recall[best]), float(thresholds[best])
    k = int(ok[-1])  # the lowest threshold meeting the target: the most recall
    at = float(thresholds[k])
    below = float(thresholds[k + 1]) if k + 1 < len(thresholds) else None
    return _between(below, at), float(precision[k]), float(recall[k]), at


def _between(low: float | None, high: float) -> float:
    """A short decimal in (low, high], near their midpoint (high itself rounded down without a
    `low`): YAML-friendly, and a clip scoring `high` still reaches it after rounding."""
    if low is None:
        return math.floor(high * 1000) / 1000
    middle = (low + high) / 2
    for decimals in range(1, 7):
        value = round(middle, decimals)
        if low < value <= high:
            return value
    return middle


def fit_thresholds(labelled: Labelled, scores: np.ndarray, config: Config,
                   target: float) -> list[TagThreshold]:
    truth = labelled.truth
    tagging = config.tagging
    out = []
    for j, label in enumerate(labelled.labels):
        positive = truth[:, j]
        if not positive.any():
            continue
        threshold, precision, recall, at = precision_threshold(scores[:, j], positive, target)
        out.append(TagThreshold(label, int(positive.sum()), int((~positive).sum()), threshold,
                                precision, recall, at,
                                tagging.thresholds.get(label, tagging.min_score)))
    return out


# -- temperature ----------------------------------------------------------------------------------

def nll(scores: np.ndarray, truth: np.ndarray, temperature: float) -> float:
    """Mean -log P(the clip's tags) under softmax(scores / T) over the vocabulary; a clip with
    several tags counts the probability of any of them."""
    z = scores.astype(np.float64) / temperature
    return float(np.mean(_logsumexp(z) - _logsumexp(np.where(truth, z, -np.inf))))


def _logsumexp(z: np.ndarray) -> np.ndarray:
    """log(sum(exp(z))) per row [n], stable for any temperature (rows hold a finite value)."""
    top = z.max(axis=1, keepdims=True)
    return top[:, 0] + np.log(np.exp(z - top).sum(axis=1))


def fit_temperature(scores: np.ndarray, truth: np.ndarray) -> float:
    """The temperature in [T_MIN, T_MAX] minimising nll(): a log-spaced grid, then a golden-
    section search between the best point's neighbours. Rounded to 3 significant digits."""
    grid = np.geomspace(T_MIN, T_MAX, T_GRID)
    values = [nll(scores, truth, t) for t in grid]
    best = int(np.argmin(values))
    lo, hi = math.log(grid[max(best - 1, 0)]), math.log(grid[min(best + 1, T_GRID - 1)])

    def f(x: float) -> float:
        return nll(scores, truth, math.exp(x))

    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = f(a), f(b)
    for _ in range(GOLDEN_STEPS):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = f(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = f(b)
    return float(f"{math.exp((lo + hi) / 2):.3g}")


# -- the calibration ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Calibration:
    target: float
    tags: tuple[TagThreshold, ...]
    temperature: float
    nll_before: float  # at the configured temperature
    nll_after: float
    clips: int
    failed: int = 0  # clips that could not be used

    @property
    def thresholds(self) -> dict[str, float]:
        """The thresholds that reach the target, to write."""
        return {t.label: t.threshold for t in self.tags if t.threshold is not None}

    def to_json(self) -> dict:
        return {"target_precision": self.target, "clips": self.clips,
                "temperature": self.temperature, "nll_before": round(self.nll_before, 4),
                "nll_after": round(self.nll_after, 4), "thresholds": self.thresholds,
                "per_tag": [t.to_json() for t in self.tags]}


def calibrate(labelled: Labelled, scores: np.ndarray, config: Config,
              target: float = DEFAULT_PRECISION) -> Calibration:
    """Scores [n_clips, n_tags] (configured prompts) → thresholds and temperature."""
    truth = labelled.truth
    temperature = fit_temperature(scores, truth)
    return Calibration(target, tuple(fit_thresholds(labelled, scores, config, target)),
                       temperature, nll(scores, truth, config.tagging.temperature),
                       nll(scores, truth, temperature), len(labelled.clips),
                       len(labelled.failed))


def merged_thresholds(config: Config, calibration: Calibration) -> dict[str, float]:
    """The config's thresholds with the calibrated ones set, in vocabulary order."""
    values = {**config.tagging.thresholds, **calibration.thresholds}
    return {label: values[label] for label in config.labels if label in values}


# -- editing the config ---------------------------------------------------------------------------

_HEADER = re.compile(r"tagging[ \t]*:(?=[ \t]|\r?$|\n)")


def snippet(thresholds: dict[str, float], temperature: float, indent: str = "  ") -> str:
    """The lines of `tagging:` that calibrate sets, for pasting."""
    return "".join(_entry_lines(indent, {"temperature": temperature, "thresholds": thresholds}))


Comment = tuple[int, str] | None  # a line's trailing comment: (its column, '# ...')


def _scalar(value: object) -> str:
    """A value in YAML flow style (strings quoted only where YAML needs it)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6, allow_unicode=True)
    return text.strip().removesuffix("...").strip()


def _entry_lines(indent: str, values: dict[str, object],
                 comments: dict[str, Comment] | None = None) -> list[str]:
    """`key: value` lines at `indent`; a non-empty mapping as a block under its key."""
    comments = comments or {}
    lines = []
    for key, value in values.items():
        comment = comments.get(key)
        if isinstance(value, dict) and value:
            lines.append(_with_comment(f"{indent}{key}:", comment))
            lines += [f"{indent}  {_scalar(k)}: {_scalar(v)}\n" for k, v in value.items()]
        else:
            lines.append(_with_comment(f"{indent}{key}: {_scalar(value)}", comment))
    return lines


def _with_comment(text: str, comment: Comment) -> str:
    """The line with the comment kept at its old column where the new text leaves room."""
    if comment is None:
        return text + "\n"
    column, body = comment
    return text + " " * max(2, column - len(text)) + body + "\n"


def _comment_of(line: str) -> Comment:
    """The trailing comment of a YAML line: a '#' after whitespace, outside quoted scalars."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"" and (i == 0 or line[i - 1] in " \t:[{,"):
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return i, line[i:].rstrip("\r\n")
    return None


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _is_content(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def set_tagging(text: str, values: dict[str, object]) -> str:
    """YAML text with tagging.<key> set to each value; every other line is kept as it is.
    Raises CannotEdit for a layout it does not handle (edited_config also checks the result)."""
    newline = "\r\n" if "\r\n" in text else "\n"
    lines = text.replace("\r\n", "\n").splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    header = next((i for i, line in enumerate(lines) if _HEADER.match(line)), None)
    if header is None:
        lines += ["tagging:\n", *_entry_lines("  ", values)]
    else:
        lines = _edit_block(lines, header, values)
    return "".join(lines).replace("\n", newline)


def _edit_block(lines: list[str], header: int, values: dict[str, object]) -> list[str]:
    end = header + 1  # one past the block's last indented line (comments included)
    for i in range(header + 1, len(lines)):
        if _is_content(lines[i]) and _indent(lines[i]) == 0:
            break
        if lines[i].strip() and _indent(lines[i]) > 0:
            end = i + 1
    head = lines[header]
    comment = _comment_of(head)
    rest = head[head.index(":") + 1:comment[0] if comment else None].strip()
    body = lines[header + 1:end]
    if rest.startswith("{"):  # flow style, `tagging: {top_k: 2}`: rewritten as a block
        if any(_is_content(line) for line in body):
            raise CannotEdit("its tagging: section is a flow mapping over several lines")
        try:
            current = yaml.safe_load(rest)
        except yaml.YAMLError:
            raise CannotEdit("its tagging: line is not a plain flow mapping") from None
        if not isinstance(current, dict):
            raise CannotEdit("its tagging: line is not a mapping")
        kept = {k: v for k, v in current.items() if k not in values}
        head_comment = (0, comment[1]) if comment else None  # its old column was the flow's
        return [*lines[:header], _with_comment("tagging:", head_comment),
                *_entry_lines("  ", {**kept, **values}), *lines[header + 1:]]
    if rest not in ("", "null", "~"):
        raise CannotEdit(f"its tagging: line holds {rest[:30]!r}, not a block mapping")
    child = next((_indent(line) for line in body if _is_content(line)), 2)
    spans = _key_spans(body, child)
    replaced: dict[int, tuple[int, list[str]]] = {}  # first line → (one past the last, new lines)
    inserts: list[str] = []
    for key, value in values.items():
        if key in spans:
            start, stop = spans[key]
            comments = {key: _comment_of(body[start])}
            replaced[start] = (stop, _entry_lines(" " * child, {key: value}, comments))
        else:
            inserts += _entry_lines(" " * child, {key: value})
    out: list[str] = []
    i = 0
    while i < len(body):
        if i in replaced:
            i, new = replaced[i]
            out += new
        else:
            out.append(body[i])
            i += 1
    last = max((n for n, line in enumerate(out) if line.strip()), default=-1)
    out[last + 1:last + 1] = inserts
    return [*lines[:header + 1], *out, *lines[end:]]


def _key_spans(body: list[str], child: int) -> dict[str, tuple[int, int]]:
    """Each key of the block → (its first line, one past its last line) in `body`: its own line
    and the deeper-indented ones under it, trailing comments and blank lines excluded."""
    starts = [i for i, line in enumerate(body) if _is_content(line) and _indent(line) == child]
    spans: dict[str, tuple[int, int]] = {}
    for n, i in enumerate(starts):
        match = re.match(r"\s*(['\"]?)([^'\":#]+)\1\s*:", body[i])
        if not match:
            continue  # a layout not understood: the check in edited_config refuses the result
        stop = starts[n + 1] if n + 1 < len(starts) else len(body)
        while stop > i + 1 and not _is_content(body[stop - 1]):
            stop -= 1
        spans[match.group(2).strip()] = (i, stop)
    return spans


def edited_config(path: Path, thresholds: dict[str, float], temperature: float) -> str:
    """The config file's text with the calibration in; checked that nothing else changed and
    that it is valid. Raises CannotEdit."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CannotEdit(f"it cannot be read ({exc.strerror or exc})") from None
    try:
        before = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        raise CannotEdit("it is not valid YAML") from None
    values = {"temperature": temperature, "thresholds": thresholds}
    new = set_tagging(text, values)
    expected = copy.deepcopy(before)
    if not isinstance(expected.get("tagging") or {}, dict):
        raise CannotEdit("its tagging: is not a mapping")
    expected["tagging"] = {**(expected.get("tagging") or {}), **values}
    try:
        after = yaml.safe_load(new)
    except yaml.YAMLError:
        after = None
    if after != expected:
        raise CannotEdit("the edit would change more than tagging.thresholds and "
                         "tagging.temperature (an unusual layout of the tagging: section)")
    try:
        parse_config(new, base=path.resolve().parent, source=path)
    except ConfigError as exc:
        raise CannotEdit(f"the result would not be a valid config: {exc}") from None
    return new


def write_config(path: Path, text: str) -> None:
    """Replace the config file atomically (through a symlink to its target), keeping its mode."""
    target = path.resolve()
    mode = target.stat().st_mode & 0o7777
    write_atomic(target, text.encode("utf-8"))
    os.chmod(target, mode)


# -- the command ----------------------------------------------------------------------------------

def run_calibrate(config: Config, root: Path, *, target: float = DEFAULT_PRECISION,
                  write: bool = False, as_json: bool = False, embedder: Embedder | None = None,
                  cache_dir: Path | None = None) -> tuple[Calibration, bool]:
    """`autotag calibrate`: fit, then print the result and either write it into the config or
    print the lines to paste. Returns the calibration and whether the config was written."""
    from autotag import report

    if not 0 < target <= 1:
        raise EvalError(f"--precision must be in (0, 1], got {target}; e.g. 0.9")
    if write and config.source is None:
        raise EvalError("--write needs a config file; pass --config PATH")
    check_layout(root, config.labels)  # before the model loads: a typo costs no wait
    session = open_session(config, embedder, cache_dir)
    try:
        with report.progress("embedding", enabled=not as_json) as on_progress:
            labelled = load_labelled(root, config, session.embedder, session.store, on_progress)
        vocabulary = build_vocabulary(config.vocabulary, session.embedder, session.cache_dir)
        scores = clip_scores(labelled.embeddings, vocabulary.vectors)
    finally:
        session.close()
    calibration = calibrate(labelled, scores, config, target)
    thresholds = merged_thresholds(config, calibration)
    if as_json:
        json.dump(calibration.to_json(), sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        print_calibration(calibration)
    if not write:
        if not as_json:
            print(f"\nadd to the tagging: section of {config.source or 'your config'} "
                  "(or run again with --write):\n")
            print(snippet(thresholds, calibration.temperature), end="")
        return calibration, False
    try:
        text = edited_config(config.source, thresholds, calibration.temperature)
        write_config(config.source, text)
    except (CannotEdit, OSError) as exc:
        log.error("not writing %s: %s; add these lines to its tagging: section by hand:\n%s",
                  config.source, exc, snippet(thresholds, calibration.temperature))
        return calibration, False
    log.info("wrote %d threshold(s) and temperature %g into %s", len(calibration.thresholds),
             calibration.temperature, config.source)
    return calibration, True


def print_calibration(calibration: Calibration, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=f"thresholds for {100 * calibration.target:g}% precision "
                        f"({calibration.clips} clips)", title_justify="left")
    for name in ("tag", "clips", "threshold", "now", "precision", "recall"):
        table.add_column(name, justify="left" if name == "tag" else "right")
    for t in calibration.tags:
        if t.reached:
            table.add_row(t.label, str(t.clips), f"{t.threshold:g}", f"{t.current:g}",
                          f"{100 * t.precision:.1f}%", f"{100 * t.recall:.1f}%")
        else:
            table.add_row(t.label, str(t.clips), "not reached", f"{t.current:g}",
                          f"best {100 * t.precision:.1f}%", f"{100 * t.recall:.1f}%",
                          style="yellow")
    console.print(table)
    missed = [t.label for t in calibration.tags if not t.reached]
    if missed:
        console.print(f"[yellow]{', '.join(missed)}: no threshold reaches the target on these "
                      "clips; they keep their threshold (lower --precision, or improve their "
                      "prompts)[/]", highlight=False)
    console.print(f"temperature {calibration.temperature:g} (mean NLL of the true tags "
                  f"{calibration.nll_before:.3f} → {calibration.nll_after:.3f})",
                  highlight=False)


