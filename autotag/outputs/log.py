"""Tagged clip → one JSON line in the top-match log: time, path, top label and score, runner-up."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from autotag.clip import Tagged
from autotag.outputs.base import append_to


class MatchLog:
    name = "log"

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, tagged: Tagged) -> Path:
        top = tagged.tags[0] if tagged.tags else None
        # the best-ranked tag other than the top match (a per-tag threshold can give the
        # second-ranked tag and not the first); with no tag given, the nearest miss
        runner_up = next((t for t in tagged.ranking if top is None or t.label != top.label),
                         None)
        line = {
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            "path": str(tagged.clip.source.path),
            "label": top.label if top else None,
            "score": round(top.score, 4) if top else None,
            "runner_up": ({"label": runner_up.label, "score": round(runner_up.score, 4)}
                          if runner_up else None),
        }
        return append_to(self.path, json.dumps(line, ensure_ascii=False))
