"""The records that flow between stages: source file → sampled windows → tags.

Plain frozen dataclasses, no behaviour beyond (de)serialisation, so every stage can be tested with
hand-made values and no stage imports another's machinery.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class SourceInfo:
    """What identifies one version of a clip on disk."""

    path: Path
    size: int  # bytes
    mtime: float  # seconds since the epoch (st_mtime)
    sha256: str  # hex digest of the whole file

    def to_json(self) -> dict:
        return {"path": str(self.path), "size": self.size, "mtime": self.mtime, "sha256": self.sha256}


@dataclass(frozen=True)
class Window:
    """One model window: the time span its 32 frames were taken from, in seconds."""

    start: float
    end: float

    def to_json(self) -> dict:
        return {"start": round(self.start, 3), "end": round(self.end, 3)}


@dataclass(frozen=True)
class Segment:
    """A span of a clip where a tag scores high, in seconds, with its best window score."""

    start: float
    end: float
    score: float

    def to_json(self) -> dict:
        return {"start": round(self.start, 3), "end": round(self.end, 3), "score": round(self.score, 4)}


@dataclass(frozen=True)
class Tag:
    """One tag given to a clip: raw clip score, softmax confidence and where it happens."""

    label: str
    score: float
    confidence: float
    segments: tuple[Segment, ...] = ()
    review: str | None = None  # "confirmed" or "rejected" when a person said so

    def to_json(self) -> dict:
        data = {
            "label": self.label,
            "score": round(self.score, 4),
            "confidence": round(self.confidence, 4),
            "segments": [s.to_json() for s in self.segments],
        }
        if self.review:
            data["review"] = self.review
        return data


@dataclass(frozen=True)
class Embedded:
    """A clip after the model: its windows and their embeddings, what search and retag reuse.

    embeddings: float32 [n_windows, 512], one row per window, unnormalised as the model gives them.
    thumbnails: uint8 [n_thumbs, h, w, 3] RGB frames from across the clip, for previews and sheets.
    """

    source: SourceInfo
    duration: float  # seconds
    windows: tuple[Window, ...]
    embeddings: np.ndarray
    thumbnails: np.ndarray

    @property
    def clip_embedding(self) -> np.ndarray:
        """float32 [512]: the mean of the window embeddings; its dot product with a text
        embedding is the mean window score, the clip score (see scoring.py)."""
        return self.embeddings.mean(axis=0).astype(np.float32)


@dataclass(frozen=True)
class Tagged:
    """A clip with its tags: everything the outputs write."""

    clip: Embedded
    model: str  # model fingerprint
    vocabulary: str  # vocabulary fingerprint
    tags: tuple[Tag, ...]  # given tags, best first
    ranking: tuple[Tag, ...] = field(default=())  # every tag of the vocabulary, best first
    outputs: dict[str, str] = field(default_factory=dict)  # output name → path written

    @property
    def top(self) -> Tag | None:
        return self.tags[0] if self.tags else None

    def with_output(self, name: str, path: Path | str) -> Tagged:
        return dataclasses.replace(self, outputs={**self.outputs, name: str(path)})
