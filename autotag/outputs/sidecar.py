"""Tagged clip → `<clip>.autotag.json` (schema: autotag/schemas/sidecar.schema.json).

Beside the clip, or under `outputs.sidecar_dir` mirroring the clip's absolute path when the
clip's folder is not writable (a read-only share) or should stay clean.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

from autotag import __version__
from autotag.clip import Tagged
from autotag.config import OutputsConfig
from autotag.outputs.base import OutputError, write_file

SCHEMA_VERSION = 2  # 2: reviews, and a tag's review
SUFFIX = ".autotag.json"


NAME_MAX = 255  # bytes in one file name on Linux filesystems


def sidecar_name(clip_name: str, suffix: str = SUFFIX) -> str:
    """`<clip name><suffix>`; a clip name too long for that is cut and given a hash, so the
    sidecar still sits beside its clip under a name that stays the same from run to run."""
    name = clip_name + suffix
    if len(name.encode()) <= NAME_MAX:
        return name
    digest = hashlib.sha256(clip_name.encode()).hexdigest()[:8]
    keep = NAME_MAX - len(suffix.encode()) - len(digest) - 1
    head = clip_name.encode()[:keep].decode(errors="ignore")
    return f"{head}~{digest}{suffix}"


def sidecar_path(clip: Path, outputs: OutputsConfig) -> Path:
    if outputs.sidecar_dir is not None:
        relative = clip.absolute().relative_to(clip.absolute().anchor)
        return outputs.sidecar_dir / relative.with_name(sidecar_name(clip.name))
    return clip.with_name(sidecar_name(clip.name))


def sidecar_file(clip: str, outputs: OutputsConfig) -> str:
    """sidecar_path as a string, from a string: the up-to-date pass asks it of every clip,
    and the Path arithmetic cost it more than its stat."""
    if outputs.sidecar_dir is None:
        name = clip.rpartition("/")[2]
        if len(name.encode()) + len(SUFFIX) <= NAME_MAX:
            return clip + SUFFIX
    return str(sidecar_path(Path(clip), outputs))


def read_sidecar(path: Path) -> dict | None:
    """The sidecar's content, or None when it is missing or unreadable (never raises)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def sidecar_json(tagged: Tagged) -> dict:
    clip = tagged.clip
    return {
        "schema_version": SCHEMA_VERSION,
        "source": clip.source.to_json(),
        "model": tagged.model,
        "vocabulary": tagged.vocabulary,
        "duration": round(clip.duration, 3),
        "windows": [w.to_json() for w in clip.windows],
        "tags": [t.to_json() for t in tagged.tags],
        "top": tagged.top.label if tagged.top else None,
        "ranking": [t.to_json() for t in tagged.ranking],
        "reviews": {verdict: sorted(t.label for t in tagged.ranking if t.review == verdict)
                    for verdict in ("confirmed", "rejected")},
        "preview": tagged.outputs.get("preview"),
        "outputs": dict(tagged.outputs),
        "tagged_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "autotag_version": __version__,
    }


def dumps(data: dict) -> str:
    """The sidecar's text as docs/reference/sidecar.md shows it: a key per line, and a list one item per line,
    each item compact. Half the time of json.dumps(indent=2), which leaves the C encoder for
    the pure-Python one, and a tenth of the lines (a 30-tag vocabulary: 59 lines, not 619)."""
    if not data:
        return "{}\n"
    lines = []
    for key, value in data.items():
        name = json.dumps(key, ensure_ascii=False)
        if isinstance(value, list) and value:
            items = ",\n    ".join(json.dumps(v, ensure_ascii=False) for v in value)
            lines.append(f"  {name}: [\n    {items}\n  ]")
        else:
            lines.append(f"  {name}: {json.dumps(value, ensure_ascii=False)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


class Sidecar:
    name = "sidecar"

    def __init__(self, outputs: OutputsConfig) -> None:
        self.config = outputs

    def write(self, tagged: Tagged) -> Path:
        path = sidecar_path(tagged.clip.source.path, self.config)
        data = sidecar_json(tagged.with_output(self.name, path))
        try:
            return write_file(path, dumps(data).encode())
        except OutputError as exc:
            if self.config.sidecar_dir is None and "cannot write in" in str(exc):
                raise OutputError(f"{exc}; set outputs.sidecar_dir to write sidecars to a "
                                  "folder of their own") from None
            raise
