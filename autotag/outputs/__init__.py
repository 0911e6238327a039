"""Tagged clip → each configured output in turn → the paths written, recorded in the sidecar.

One small class per output, chosen by config. Order matters: the preview, XMP and NFO are
written first so the sidecar can list them; the log line follows the sidecar; the hook runs last,
once everything it may read exists. One output's failure does not stop the others; the hook's
failure is logged and never fails the clip.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol

from autotag.clip import Tagged
from autotag.config import Config, OutputsConfig
from autotag.outputs.base import OutputError, stem_sharers
from autotag.outputs.hook import Hook
from autotag.outputs.log import MatchLog
from autotag.outputs.nfo import Nfo, nfo_path
from autotag.outputs.nfo import autotags_alone as nfo_alone
from autotag.outputs.preview import Preview, preview_name
from autotag.outputs.sidecar import Sidecar, read_sidecar, sidecar_path
from autotag.outputs.xmp import Xmp, xmp_path
from autotag.outputs.xmp import autotags_alone as xmp_alone

log = logging.getLogger(__name__)

# outputs whose presence a sidecar lists (Tagged.outputs): what a store older than schema 6
# checks, reading the sidecar once, in place of the digest it lacks (passes.UpToDate)
LISTED_OUTPUTS = ("preview", "xmp", "nfo")

__all__ = ["ClipOutput", "Output", "OutputError", "OutputSet", "build_outputs", "clip_outputs",
           "listed_outputs", "outputs_digest", "own_outputs", "read_sidecar", "sidecar_path"]


class Output(Protocol):
    name: str

    def write(self, tagged: Tagged) -> Path | None:
        """Write this output for one clip; return the path written. Raises OutputError."""


@dataclass(frozen=True)
class Kind:
    """One output that writes a file: whether a config has it, how it is built, where it
    writes for a clip, and what a person calls it."""

    name: str  # as Tagged.outputs and the sidecar's "outputs" name it
    title: str  # as the web app's clip page shows it
    on: Callable[[OutputsConfig], object]
    make: Callable[[OutputsConfig], Output]
    where: Callable[[Path, OutputsConfig], Path]


# The one list of the files a clip's outputs are, in the order they are written: the
# preview, XMP and NFO before the sidecar that lists them, the match log after it. The hook
# (config.hooks, no file) runs after all of them (build_outputs).
KINDS: tuple[Kind, ...] = (
    Kind("preview", "preview image", lambda o: o.previews, lambda o: Preview(o.previews),
         lambda clip, o: o.previews / preview_name(clip)),
    Kind("xmp", "XMP", lambda o: o.xmp, lambda o: Xmp(o.xmp_root),
         lambda clip, o: xmp_path(clip)),
    Kind("nfo", "NFO", lambda o: o.nfo, lambda o: Nfo(), lambda clip, o: nfo_path(clip)),
    Kind("sidecar", "sidecar", lambda o: o.sidecars, Sidecar, sidecar_path),
    Kind("log", "match log", lambda o: o.log, lambda o: MatchLog(o.log),
         lambda clip, o: o.log),
)


class ClipOutput(NamedTuple):
    name: str
    title: str
    path: Path


def clip_outputs(clip: Path, outputs: OutputsConfig) -> list[ClipOutput]:
    """What outputs this config gives a clip, and where: each file's output name, title and
    path, in the order written (the match log is one file for every clip)."""
    return [ClipOutput(k.name, k.title, k.where(clip, outputs)) for k in KINDS if k.on(outputs)]


def outputs_digest(config: Config) -> str:
    """What a clip's outputs are made from besides the model and the vocabulary: which
    per-clip files are written, where, and the tagging settings that decide what they say.
    The match log and the hook are events, not files kept up to date: switching them on
    later does not replay past clips, so they are left out."""
    outputs, tagging = config.outputs, config.tagging
    spec = {
        "sidecars": outputs.sidecars, "sidecar_dir": str(outputs.sidecar_dir or ""),
        "previews": str(outputs.previews or ""), "xmp": outputs.xmp and outputs.xmp_root,
        "nfo": outputs.nfo,
        "tagging": [tagging.top_k, tagging.min_score, tagging.temperature,
                    sorted(tagging.thresholds.items())],
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def listed_outputs(config: Config) -> tuple[str, ...]:
    """The outputs of LISTED_OUTPUTS this config writes."""
    on = {k.name for k in KINDS if k.on(config.outputs)}
    return tuple(name for name in LISTED_OUTPUTS if name in on)


def own_outputs(clip: Path, outputs: OutputsConfig) -> list[Path]:
    """The files autotag alone writes for a clip that is gone: its sidecar and preview, and
    its XMP and NFO only while their content is autotag's alone (a file a person or another
    program has added to is theirs, and stays). An NFO or XMP named by a stem another clip
    still has (bikes.nfo, with bikes.mkv still there) is not this clip's to remove."""
    # the log is every clip's; an XMP or NFO may be a person's too (below)
    found = [o.path for o in clip_outputs(clip, outputs) if o.name in ("sidecar", "preview")]
    named = clip.with_name(clip.name + ".xmp")
    if named.exists() and xmp_alone(named):
        found.append(named)
    if not stem_sharers(clip):  # the clip is gone: any sharer is another clip
        found += [p for p, alone in ((clip.with_suffix(".xmp"), xmp_alone),
                                     (nfo_path(clip), nfo_alone)) if p.exists() and alone(p)]
    return found


class OutputSet:
    """The outputs of one configuration, in the order they are written."""

    def __init__(self, outputs: list[Output], advisory: frozenset[str] = frozenset()) -> None:
        self.outputs = outputs
        self.advisory = advisory  # outputs whose failure is logged, not the clip's failure

    @property
    def names(self) -> list[str]:
        return [o.name for o in self.outputs]

    def write_all(self, tagged: Tagged) -> tuple[Tagged, list[str]]:
        """Write every output; returns the clip with the paths written and the failures."""
        errors: list[str] = []
        for output in self.outputs:
            try:
                path = output.write(tagged)
            except OutputError as exc:
                if output.name in self.advisory:
                    log.warning("%s for %s: %s", output.name, tagged.clip.source.path, exc)
                else:
                    errors.append(f"{output.name}: {exc}")
                continue
            if path is not None:
                tagged = tagged.with_output(output.name, path)
        return tagged, errors


def build_outputs(config: Config) -> OutputSet:
    """The outputs of this config (KINDS, then the hook), in the order they are written."""
    outputs: list[Output] = [k.make(config.outputs) for k in KINDS if k.on(config.outputs)]
    if config.hooks.on_tagged:
        outputs.append(Hook(config.hooks.on_tagged, config.hooks.timeout))
    return OutputSet(outputs, advisory=frozenset({"hook"}))
