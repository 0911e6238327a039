"""The embedder's interface: what the engine, the vocabulary and the web app need from a model.

Below every room that uses a model, so the engine (paths → embedded clips) names what it calls
without importing model.py, which loads models (hub handles, SavedModels, OpenVINO) and so sits
above the runtimes. float32 throughout; the real model's embeddings are not normalised.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from autotag.errors import AutotagError


class Embedder(Protocol):
    """What the engine needs from a model; tests hand the engine (through app.open_app) theirs."""

    fingerprint: str  # changes when the weights or the handle change

    def embed_video(self, frames: np.ndarray) -> np.ndarray:
        """float32 [B, T, H, W, 3] in [0, 1] → float32 [B, 512]."""

    def embed_text(self, texts: list[str]) -> np.ndarray:
        """N strings → float32 [N, 512]."""


class ModelError(AutotagError):
    """The model cannot be loaded or does not have the MIL-NCE interface; one line, with the fix."""
