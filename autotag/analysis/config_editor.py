"""Config file text + thresholds and temperature → the same text with its `tagging:` section edited
→ checked → replaced atomically.

A textual edit of the `tagging:` block (the `thresholds:` and `temperature:` entries, or only
`thresholds:`, are replaced or inserted; every other line stays byte for byte, comments
included), then checked: the edited YAML must load to exactly the old config with those keys
changed, and pass parse_config, before it replaces the file atomically (atomic.py). Anything
unexpected (anchors, a multi-line flow mapping, ...) raises CannotEdit, and the command prints
the lines to paste instead (`snippet`).
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path

import yaml

from autotag.atomic import write_atomic
from autotag.config import ConfigError, parse_config
from autotag.errors import AutotagError


class CannotEdit(AutotagError):
    """The config cannot be edited safely; the message says why."""


_HEADER = re.compile(r"tagging[ \t]*:(?=[ \t]|\r?$|\n)")


def snippet(thresholds: dict[str, float], temperature: float | None, indent: str = "  ") -> str:
    """The lines of `tagging:` that calibrate sets, for pasting (temperature None: left out,
    as calibrate --from-reviews leaves it)."""
    return "".join(_entry_lines(indent, _values(thresholds, temperature)))


def _values(thresholds: dict[str, float], temperature: float | None) -> dict[str, object]:
    """The tagging: keys to set: thresholds, and the temperature unless it is None."""
    values: dict[str, object] = {} if temperature is None else {"temperature": temperature}
    return {**values, "thresholds": thresholds}


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


def edited_config(path: Path, thresholds: dict[str, float], temperature: float | None) -> str:
    """The config file's text with the calibration in (temperature None: only the thresholds);
    checked that nothing else changed and that it is valid. Raises CannotEdit."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CannotEdit(f"it cannot be read ({exc.strerror or exc})") from None
    try:
        before = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        raise CannotEdit("it is not valid YAML") from None
    values = _values(thresholds, temperature)
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


def write_tagging(path: Path, thresholds: dict[str, float], temperature: float | None = None
                  ) -> None:
    """edited_config, then write_config: what `calibrate --write` and the web app call.
    Raises CannotEdit or OSError (the file is then as it was; `snippet` gives the lines)."""
    write_config(path, edited_config(path, thresholds, temperature))


_VOCABULARY = re.compile(r"vocabulary[ \t]*:(?=[ \t]|\r?$|\n)")


def added_tag(path: Path, label: str, examples: list[Path]) -> str:
    """The config file's text with one more vocabulary entry, `- LABEL: {examples: [...]}`
    (a tag from example clips; the web app's "teach a tag"), appended to a block-style
    `vocabulary:` list; checked that nothing else changed and that it is valid. Raises
    CannotEdit (a flow-style list, `vocabulary: [a, b]`, is not edited: `snippet_tag`)."""
    try:
        text = path.read_text(encoding="utf-8")
        before = yaml.safe_load(text) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise CannotEdit(f"it cannot be read as YAML ({exc})") from None
    entries = before.get("vocabulary")
    if not isinstance(entries, list):
        raise CannotEdit("its vocabulary: is not a list")
    if any(label == (e if isinstance(e, str) else next(iter(e), None)) for e in entries
           if isinstance(e, (str, dict))):
        raise CannotEdit(f"it has a tag {label!r} already")
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    header = next((i for i, line in enumerate(lines) if _VOCABULARY.match(line)), None)
    if header is None or lines[header].split(":", 1)[1].split("#")[0].strip():
        raise CannotEdit("its vocabulary: is not a block list (one '- tag' per line)")
    last = header
    for i in range(header + 1, len(lines)):
        if _is_content(lines[i]) and _indent(lines[i]) == 0 and not lines[i].lstrip().startswith("-"):
            break
        if _is_content(lines[i]):
            last = i
    item = next((line for line in lines[header + 1:last + 1] if line.lstrip().startswith("-")),
                "  - x\n")
    indent = " " * _indent(item)
    lines.insert(last + 1, indent + snippet_tag(label, examples))
    new = "".join(lines)
    expected = copy.deepcopy(before)
    expected["vocabulary"] = [*entries, {label: {"examples": [str(p) for p in examples]}}]
    if yaml.safe_load(new) != expected:
        raise CannotEdit("the edit would change more than the vocabulary's new entry")
    try:
        parse_config(new, base=path.resolve().parent, source=path)
    except ConfigError as exc:
        raise CannotEdit(f"the result would not be a valid config: {exc}") from None
    return new


def snippet_tag(label: str, examples: list[Path]) -> str:
    """`- LABEL: {examples: [...]}` as one YAML line, for the config or for pasting."""
    return f"- {_scalar(label)}: {_scalar({'examples': [str(p) for p in examples]})}\n"
