"""A labelled folder of generated clips and its config, shared by test_evaluate and test_calibrate.

The test model's clip scores follow from the clips' colours (testmodel.py): with red = [red],
green = [green], sea = [blue water, blue sky] (2 × blue), sky = [sky] (1 × blue), bright, a clip
of colour (r, g, b) in [0, 1] scores 10·(r − (g+b)/2) for red, 20·(b − (r+g)/2) for sea, and so
on. The layout below gives these scores (configured prompts), from which every expected figure
in those tests is computed by hand:

    clip          folders    red     green    sea      sky     top-1
    red.mp4       red        10.0    -5.0    -10.0    -5.0     red     right
    darkred.gif   red         5.9    -2.9     -5.9    -2.9     red     right
    green.mp4     Green      -5.0    10.0    -10.0    -5.0     green   right
    blue.mp4      sea, sky   -5.0    -5.0     20.0    10.0     sea     right (either counts)
    purple.gif    sea         7.1    -7.9      1.8     0.9     red     wrong: sea → red
    sky.gif       sky        -4.0    -1.1     10.2     5.1     sea     wrong: sky → sea

sky and sea are the deliberately confusable pair (both blue; sea's prompts score twice as high).
"""

from __future__ import annotations

import os
from pathlib import Path

from autotag.analysis.labelling import Labelled, load_labelled
from autotag.config import Config
from autotag.engine import Engine
from autotag.model import Embedder
from autotag.store import Store
from tests.clips import BLUE, GREEN, RED, write_gif, write_video

CONFIG = """\
# a test config: calibrate --write must keep these comments
model:
  handle: '{model}'          # the test model
  batch_size: 4

vocabulary:
  - red
  - green
  - sea: [blue water, blue sky]
  - sky
  - bright

tagging:
  top_k: 2                   # at most two tags
  min_score: 3.0             # the raw score a tag needs;
                             # a comment continued on a second line
  temperature: 1.0           # softmax temperature
  thresholds: {{}}             # per-tag min_score (autotag calibrate)

# state and outputs live with the test
state:
  path: '{state}'
outputs: {{log: null, previews: null}}
"""


def build_labelled(root: Path) -> Path:
    """The layout of the module docstring, plus a folder no tag matches."""
    for name in ("red", "Green", "sea", "sky", "cats"):
        (root / name).mkdir(parents=True)
    write_video(root / "red" / "red.mp4", [(RED, 2)])
    write_gif(root / "red" / "darkred.gif", [((150, 0, 0), 2)])
    write_video(root / "Green" / "green.mp4", [(GREEN, 2)])
    write_video(root / "sea" / "blue.mp4", [(BLUE, 2)])
    write_gif(root / "sea" / "purple.gif", [((255, 0, 150), 2)])
    write_gif(root / "sky" / "sky.gif", [((100, 150, 255), 2)])
    os.symlink("../sea/blue.mp4", root / "sky" / "blue.mp4")  # one clip, two tags
    write_video(root / "cats" / "cat.mp4", [(GREEN, 1)])
    return root


def write_config(folder: Path, model_dir: Path, text: str = CONFIG) -> Path:
    path = folder / "config.yaml"
    path.write_text(text.format(model=model_dir, state=folder / "state.sqlite3"))
    return path


def embed_labelled(root: Path, config: Config, embedder: Embedder) -> Labelled:
    """load_labelled through an engine over the config's state store."""
    store = Store(config.state.store_path)
    try:
        return load_labelled(root, Engine(config, embedder, store))
    finally:
        store.close()
