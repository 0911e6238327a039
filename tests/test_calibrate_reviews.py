"""`autotag calibrate --from-reviews` (issue 21): thresholds from the clips a person confirmed or
rejected a tag on, the MIN_REVIEWS guard (from reviews and from a labelled folder), how many
library clips gain or lose each tag, and --dry-run.

The test model scores a clip of colour (c, 0, 0) 10·c/255 for red (tests/testmodel.py), so shades
of red give clips whose red clip score is known: the reviewed ones in two groups, and unreviewed
ones between and above them whose tags follow the new threshold.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from autotag import cli
from autotag.analysis.calibration import (
    CONFIRMED,
    MIN_REVIEWS,
    REJECTED,
    from_reviews,
    library_changes,
    shortfall_message,
)
from autotag.app import open_app
from autotag.config import TaggingConfig, load_config
from autotag.store import FileRecord
from tests.clips import write_video
from tests.helpers import sidecar

CONFIRMED_SCORES = (9.5, 9.0, 8.5, 8.0, 7.5, 7.0)  # red clip scores of the clips confirmed red
REJECTED_SCORES = (4.0, 3.5, 3.0, 2.0, 1.0, 0.0)  # and rejected: 4.0, 3.5 and 3.0 are red now
# not reviewed: fading is red now (min_score 3.0) and not once the threshold sits between the
# groups (about 5.5); strong stays red
UNREVIEWED = {"fading": 4.8, "strong": 6.3}

CONFIG = """\
# calibrate --from-reviews must keep this comment
model: {{handle: '{model}', batch_size: 8}}
vocabulary: [red, green, {{sea: [blue water, blue sky]}}]
tagging:
  top_k: 2
  min_score: 3.0             # the raw score a tag needs
sampling: {{max_windows: 2}}
state: {{path: '{state}'}}
outputs: {{log: null, previews: null}}
"""


def shade(score: float) -> tuple[int, int, int]:
    return round(score / 10 * 255), 0, 0


@pytest.fixture
def library(tmp_path, model_dir, run_once):
    """(config, {'confirmed': [clips], 'rejected': [clips], 'fading': clip, 'strong': clip}),
    every clip tagged, nothing reviewed yet."""
    clips = tmp_path / "clips"
    clips.mkdir()
    made: dict = {group: [write_video(clips / f"{group} {s:g}.mp4", [(shade(s), 1)])
                          for s in scores]
                  for group, scores in (("confirmed", CONFIRMED_SCORES),
                                        ("rejected", REJECTED_SCORES))}
    for name, score in UNREVIEWED.items():
        made[name] = write_video(clips / f"{name}.mp4", [(shade(score), 1)])
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(model=model_dir, state=tmp_path / "state.sqlite3"))
    assert run_once(config, clips) == 0
    return config, made


def review(config: Path, embedder, clips, *verdict: str) -> None:
    assert cli.main(["review", "--config", str(config), *map(str, clips), *verdict],
                    embedder=embedder) == 0


def calibrate(config: Path, embedder, *extra: str) -> int:
    return cli.main(["calibrate", "--from-reviews", "--config", str(config), *extra],
                    embedder=embedder)


def labels(clip: Path) -> list[str]:
    return [t["label"] for t in sidecar(clip)["tags"]]


def red_scores(config: Path, embedder) -> dict[str, float]:
    """Each stored clip's red clip score (file name → score), as calibrate computes it."""
    app = open_app(load_config(config), embedder)
    try:
        records, matrix = app.store.clip_index(app.tagger.model)
        red = matrix @ app.vocabulary.vectors[app.vocabulary.labels.index("red")]
    finally:
        app.close()
    return {r.path.name: float(s) for r, s in zip(records, red, strict=True)}


def test_reviews_move_a_threshold_between_their_groups_and_retag_follows(library, embedder,
                                                                         capsys):
    config, clips = library
    assert labels(clips["fading"]) == ["red"] and labels(clips["strong"]) == ["red"]
    review(config, embedder, clips["confirmed"], "--confirm", "red")
    review(config, embedder, clips["rejected"], "--reject", "red")
    capsys.readouterr()
    before = config.read_text()

    assert calibrate(config, embedder) == 0
    out = capsys.readouterr().out
    assert "thresholds for 90% precision from 12 reviewed clips; the clips of 14 " in out
    assert "green, sea: no reviews yet" in out
    threshold = load_config(config).tagging.thresholds["red"]
    scores = red_scores(config, embedder)
    lowest_confirmed = min(scores[c.name] for c in clips["confirmed"])
    highest_rejected = max(scores[c.name] for c in clips["rejected"])
    # the groups are apart, so 90% precision (here 100%) keeps every confirmed clip
    assert highest_rejected < threshold <= lowest_confirmed
    assert scores["fading.mp4"] < threshold < scores["strong.mp4"]
    # written by the config editor: only the thresholds line added, the rest kept as it was
    after = config.read_text()
    assert after.replace(f"  thresholds:\n    red: {threshold}\n", "") == before
    assert load_config(config).tagging.thresholds == {"red": threshold}
    assert load_config(config).tagging.temperature == 1.0

    assert cli.main(["retag", "--config", str(config)], embedder=embedder) == 0
    assert labels(clips["fading"]) == [] and labels(clips["strong"]) == ["red"]
    assert all(labels(c) == ["red"] for c in clips["confirmed"])
    assert all(labels(c) == [] for c in clips["rejected"])  # reviews still win

    # a rerun changes nothing
    assert calibrate(config, embedder) == 0
    assert "no threshold changes; nothing written" in capsys.readouterr().out
    assert config.read_text() == after


def test_too_few_reviews_leave_the_threshold_and_say_how_many_more(library, embedder, capsys):
    config, clips = library
    review(config, embedder, clips["confirmed"][:4], "--confirm", "red")
    review(config, embedder, clips["rejected"][:5], "--reject", "red")
    capsys.readouterr()
    before = config.read_text()
    assert calibrate(config, embedder) == 0
    out = capsys.readouterr().out
    assert "red: 1 more confirmed clip needed; threshold left at 3.0" in out
    assert "nothing written" in out and config.read_text() == before

    app = open_app(load_config(config), embedder)
    try:
        proposal = from_reviews(app.store, app.tagger.model, app.vocabulary,
                                app.config.tagging, 0.9)
    finally:
        app.close()
    red = proposal.tag("red")
    assert (red.confirmed, red.rejected, red.needed, red.new, red.old) == (4, 5, (1, 0), None,
                                                                           3.0)
    assert (red.gains, red.losses) == (0, 0) and proposal.thresholds == {}
    assert not proposal.changed and proposal.tag("green").needed == (MIN_REVIEWS, MIN_REVIEWS)


def test_shortfall_messages():
    assert shortfall_message("skiing", (2, 4), 3.0) == \
        "skiing: 2 more confirmed and 4 more rejected clips needed; threshold left at 3.0"
    assert shortfall_message("skiing", (0, 1), 4.25) == \
        "skiing: 1 more rejected clip needed; threshold left at 4.25"
    assert shortfall_message("red", (3, 1), 3.0, reviews=False) == \
        "red: 3 more clips in its folder and 1 more clip in other tags' folders needed; " \
        "threshold left at 3.0"


def test_a_labelled_folder_with_two_clips_a_tag_warns_and_leaves_thresholds_alone(
        labelled, embedder, capsys):
    root, config_path = labelled
    assert cli.main(["calibrate", "--write", "--config", str(config_path), str(root)],
                    embedder=embedder) == 0
    out = capsys.readouterr().out
    # red: red.mp4 and darkred.gif, against the 4 other clips; green: green.mp4 against 5
    assert ("red: 3 more clips in its folder and 1 more clip in other tags' folders needed; "
            "threshold left at 3.0") in out
    assert "green: 4 more clips in its folder needed; threshold left at 3.0" in out
    assert "too few clips" in out
    config = load_config(config_path)
    assert config.tagging.thresholds == {}
    assert config.tagging.temperature != 1.0  # the temperature is fitted over every clip still


def test_dry_run_shows_the_table_and_writes_nothing(library, embedder, capsys):
    config, clips = library
    review(config, embedder, clips["confirmed"], "--confirm", "red")
    review(config, embedder, clips["rejected"], "--reject", "red")
    capsys.readouterr()
    before = config.read_text()
    assert calibrate(config, embedder, "--dry-run") == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.lstrip("│ ").startswith("red "))
    cells = [cell.strip() for cell in row.split("│")[1:-1]]
    assert cells[-2:] == ["0", "-1"]  # gains, losses: fading loses red
    assert "dry run: nothing written" in out
    assert calibrate(config, embedder, "--dry-run", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    red = next(t for t in data["per_tag"] if t["label"] == "red")
    assert (red["confirmed"], red["rejected"], red["gains"], red["losses"]) == (6, 6, 0, 1)
    assert red["old"] == 3.0 and 4.0 < red["new"] < 7.0 and data["thresholds"] == {
        "red": red["new"]}
    assert config.read_text() == before
    assert labels(clips["fading"]) == ["red"]  # nothing re-tagged either
    assert calibrate(config, embedder, "--dry-run", "--write") == 2
    assert cli.main(["calibrate", "--config", str(config)], embedder=embedder) == 2
    assert "name a labelled folder DIR or pass --from-reviews" in capsys.readouterr().err


# -- the gains and losses, and the fit, on constructed cases -----------------------------------

def test_gains_and_losses_follow_thresholds_top_k_and_reviews():
    labels = ("a", "b", "c")
    scores = np.array([
        [5.0, 4.0, -2.0],  # a now (top_k 1); a fails 6.0, so b takes its place: a -1, b +1
        [4.5, 0.0, -2.0],  # a now, nothing after: a -1
        [7.0, 0.0, 0.0],  # a both times (c passes -1 after, but top_k is 1)
        [5.0, 0.0, -2.0],  # a confirmed: kept whatever the threshold
        [2.0, 1.0, 0.0],  # nothing now; c's threshold drops to -1: c +1
        [0.0, 0.0, 0.5],  # c would pass -1, but c is rejected here
    ], np.float32)
    verdicts = np.zeros(scores.shape, np.int8)
    verdicts[3, 0] = CONFIRMED
    verdicts[5, 2] = REJECTED
    before = TaggingConfig(top_k=1, min_score=3.0)
    after = dataclasses.replace(before, thresholds={"a": 6.0, "c": -1.0})
    gains, losses = library_changes(scores, verdicts, labels, before, after)
    assert gains.tolist() == [0, 1, 1] and losses.tolist() == [2, 0, 0]


class FakeStore:
    """The two reads from_reviews makes: the clip index and every review."""

    def __init__(self, rows: list[tuple[str, str, float]], reviews: dict) -> None:
        self.rows, self.reviews = rows, reviews  # (path, sha256, score of tag a)

    def clip_index(self, model: str):
        records = [FileRecord(Path(p), 1, 1.0, sha, "tagged", 0, None, model, "v", 0.0, i)
                   for i, (p, sha, _) in enumerate(self.rows)]
        matrix = np.array([[score, 0.0] for _, _, score in self.rows], np.float32)
        return records, matrix

    def all_reviews(self) -> dict:
        return self.reviews


@dataclasses.dataclass
class FakeVocabulary:
    labels: tuple[str, ...] = ("a", "b")
    vectors: np.ndarray = dataclasses.field(default_factory=lambda: np.eye(2, dtype=np.float32))


def test_from_reviews_counts_a_content_once_in_the_fit_and_each_path_in_the_table():
    confirmed = [9.0, 8.0, 7.0, 6.0, 5.0]
    rejected = [4.5, 2.0, 1.0, 0.0, -1.0]
    rows = [(f"/c{i}.mp4", f"c{i}", s) for i, s in enumerate(confirmed)]
    rows += [(f"/r{i}.mp4", f"r{i}", s) for i, s in enumerate(rejected)]
    rows += [("/copy of r0.mp4", "r0", 4.5)]  # a copy: the same content, reviewed once
    rows += [("/x.mp4", "x", 4.6), ("/y.mp4", "y", 4.7)]  # unreviewed, a now, not after
    reviews = {f"c{i}": {"a": "confirmed"} for i in range(5)}
    reviews |= {f"r{i}": {"a": "rejected", "b": "rejected"} for i in range(5)}
    reviews["gone"] = {"a": "confirmed"}  # content no longer in the library: not used
    tagging = TaggingConfig(top_k=2, min_score=3.0, thresholds={"b": 1.5})
    proposal = from_reviews(FakeStore(rows, reviews), "m", FakeVocabulary(), tagging, 0.9)
    a, b = proposal.tags
    assert (a.confirmed, a.rejected, a.needed, a.old) == (5, 5, (0, 0), 3.0)
    assert 4.5 < a.new <= 5.0 and a.precision == 1.0 and a.recall == 1.0
    assert (a.gains, a.losses) == (0, 2)  # x and y; r0 and its copy were rejected already
    assert (b.confirmed, b.rejected, b.needed, b.new) == (0, 5, (5, 0), None)
    assert b.message() == "b: 5 more confirmed clips needed; threshold left at 1.5"
    assert proposal.merged == {"a": a.new, "b": 1.5} and proposal.changed
    assert (proposal.clips, proposal.reviewed) == (13, 10)
    assert json.loads(json.dumps(proposal.to_json()))["per_tag"][1]["precision"] is None
