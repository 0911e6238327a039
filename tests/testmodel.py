"""Build a small SavedModel with exactly MIL-NCE's hub interface whose embeddings mean something.

    video: float32 [B, T, H, W, 3] in [0, 1] → video_embedding [B, 512], mixed_5c [B, 1024]
    text:  string [N]                       → text_embedding [N, 512]

Video features (dims 0-4): how red, green and blue the window is (each channel's mean minus the
mean of the other two, ×10), how much it moves (mean absolute frame difference, ×40) and how
bright it is ((mean - 0.5) ×10). A text embedding is the sum of its known words' directions, so
"red" scores ~10 on a pure red clip and -5 on a blue one, like MIL-NCE's 4..9 for matches and < 0
for the rest. Unknown words add nothing: a prompt of only unknown words embeds like "", as it does
in the real model. Built once per test session (seconds); never part of the product.
"""

from __future__ import annotations

import sys
from pathlib import Path

import tensorflow as tf

DIM = 512
# word → (dimension, sign). Several words per feature so prompt ensembles can be exercised.
WORDS = {
    "red": (0, 1.0), "crimson": (0, 1.0),
    "green": (1, 1.0), "grass": (1, 1.0),
    "blue": (2, 1.0), "sky": (2, 1.0), "water": (2, 1.0),
    "moving": (3, 1.0), "motion": (3, 1.0), "flashing": (3, 1.0),
    "bright": (4, 1.0), "white": (4, 1.0), "dark": (4, -1.0), "night": (4, -1.0),
}


class ColourMotionModel(tf.Module):
    def __init__(self) -> None:
        super().__init__()
        keys = tf.constant(list(WORDS))
        values = tf.range(len(WORDS), dtype=tf.int64)
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(keys, values), default_value=-1)
        rows = [tf.one_hot(dim, DIM) * sign for dim, sign in WORDS.values()]
        # One extra zero row at the end: where unknown words (-1) land.
        self.word_vectors = tf.Variable(tf.stack(rows + [tf.zeros(DIM)]), trainable=False)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, None, 3], tf.float32)])
    def video(self, frames: tf.Tensor) -> dict[str, tf.Tensor]:
        rgb = tf.reduce_mean(frames, axis=[1, 2, 3])  # [B, 3]
        r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
        steps = tf.shape(frames)[1] - 1
        diffs = tf.abs(frames[:, 1:] - frames[:, :-1])
        motion = tf.reduce_sum(diffs, axis=[1, 2, 3, 4]) / tf.cast(
            tf.maximum(steps, 1) * tf.reduce_prod(tf.shape(frames)[2:]), tf.float32)
        features = tf.stack([
            10.0 * (r - (g + b) / 2), 10.0 * (g - (r + b) / 2), 10.0 * (b - (r + g) / 2),
            40.0 * motion, 10.0 * ((r + g + b) / 3 - 0.5)], axis=1)
        embedding = tf.pad(features, [[0, 0], [0, DIM - 5]])
        mixed_5c = tf.tile(embedding, [1, 2])
        return {"video_embedding": embedding, "mixed_5c": mixed_5c}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def text(self, texts: tf.Tensor) -> dict[str, tf.Tensor]:
        words = tf.strings.split(tf.strings.lower(texts))  # ragged [N, words]
        ids = tf.ragged.map_flat_values(self.table.lookup, words)
        ids = tf.ragged.map_flat_values(
            lambda i: tf.where(i < 0, tf.cast(len(WORDS), tf.int64), i), ids)
        vectors = tf.ragged.map_flat_values(tf.gather, self.word_vectors, ids)
        return {"text_embedding": tf.reduce_sum(vectors, axis=1)}  # "" → zeros


def build(path: Path) -> Path:
    """Write the SavedModel to `path` and return it."""
    module = ColourMotionModel()
    tf.saved_model.save(module, str(path), signatures={"video": module.video, "text": module.text})
    return path


if __name__ == "__main__":
    print(build(Path(sys.argv[1] if len(sys.argv) > 1 else "test-model")))
