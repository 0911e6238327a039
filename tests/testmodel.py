"""Build a small SavedModel with exactly MIL-NCE's hub interface whose embeddings mean something.

    video: float32 [B, T, H, W, 3] in [0, 1] → video_embedding [B, 512], mixed_5c [B, 1024]
    text:  string [N]                       → text_embedding [N, 512]

Video features (dims 0-4): how red, green and blue the window is (each channel's mean minus the
mean of the other two, ×10), how much it moves (mean absolute frame difference, ×40) and how
bright it is ((mean - 0.5) ×10). A text embedding is the sum of its known words' directions, so
"red" scores ~10 on a pure red clip and -5 on a blue one, like MIL-NCE's 4..9 for matches and < 0
for the rest. Unknown words add nothing: a prompt of only unknown words embeds like "", as it does
in the real model. Built once per test session (seconds); never part of the product.

The shared-component variant (build(..., common=True), issue 31) is shaped like a joint
space: every video embedding carries one large vector, COMMON (MIL-NCE's video embeddings
are neither centred nor normalised): |COMMON|² is COMMON_NORM² = 3600, where a clip's own
features give at most ~250; and each of eight colour concepts (PROTOTYPES) has a direction of
its own, as a joint space gives a concept (dims 5-12: 10·exp(-d²/(2·0.25²)), d the distance of
the window's mean colour to the prototype, in [0, 1] RGB). Text embeddings are unchanged
(no word points at dims 5..), so text tags score as before; likeness measured from the origin
calls every clip alike.
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
# The features' scales: red, green, blue, motion, brightness.
FEATURE_SCALE = [10.0, 10.0, 10.0, 40.0, 10.0]
# tensorflow_hub's ModuleDef proto {format: FORMAT_V3}, serialised (field 1, varint 3): the
# marker file of a TF1 Hub module; loading only checks that it exists (the empty tag set).
HUB_MODULE_DEF = b"\x08\x03"
COMMON_NORM = 60.0  # the shared component's length (the features' own: about 5..15)
# the shared-component variant's concept directions (dims 5-12): mean colour, [0, 1] RGB
PROTOTYPES = [(1, 0, 0), (1, 1, 0), (0, 1, 0), (0, 1, 1), (0, 0, 1), (1, 0, 1), (1, 1, 1),
              (0, 0, 0)]
PROTOTYPE_WIDTH = 0.25  # RGB distance at which a concept's feature falls to 10·e^-0.5


def common_vector() -> list[float]:
    """COMMON: a fixed vector of length COMMON_NORM over dims 13..511 (none on the features)."""
    import numpy as np

    rng = np.random.default_rng(31)
    tail = np.abs(rng.normal(size=DIM - 5 - len(PROTOTYPES))) + 0.5  # one sign: none cancel
    return [0.0] * (5 + len(PROTOTYPES)) + (tail * COMMON_NORM / np.linalg.norm(tail)).tolist()


class ColourMotionModel(tf.Module):
    def __init__(self, common: bool = False) -> None:
        super().__init__()
        # the colour model's graph stays as it was without it
        self.common = tf.Variable(common_vector(), trainable=False) if common else None
        keys = tf.constant(list(WORDS))
        values = tf.range(len(WORDS), dtype=tf.int64)
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(keys, values), default_value=-1)
        self.word_vectors = tf.Variable(tf.stack(_word_rows()), trainable=False)
        # a variable, as the real model's weights are: a converter must find it captured
        self.feature_scale = tf.Variable(FEATURE_SCALE, trainable=False)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, None, 3], tf.float32)])
    def video(self, frames: tf.Tensor) -> dict[str, tf.Tensor]:
        return video_outputs(frames, self.feature_scale, self.common)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def text(self, texts: tf.Tensor) -> dict[str, tf.Tensor]:
        return text_outputs(texts, self.table, self.word_vectors)


def video_outputs(frames: tf.Tensor, scale: tf.Tensor, common: tf.Tensor | None = None
                  ) -> dict[str, tf.Tensor]:
    """float32 [B, T, H, W, 3] → the five features × `scale` [5], zero-padded to 512 wide,
    plus `common` [512] (the shared component, or nothing)."""
    rgb = tf.reduce_mean(frames, axis=[1, 2, 3])  # [B, 3]
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    steps = tf.shape(frames)[1] - 1
    diffs = tf.abs(frames[:, 1:] - frames[:, :-1])
    motion = tf.reduce_sum(diffs, axis=[1, 2, 3, 4]) / tf.cast(
        tf.maximum(steps, 1) * tf.reduce_prod(tf.shape(frames)[2:]), tf.float32)
    features = tf.stack([r - (g + b) / 2, g - (r + b) / 2, b - (r + g) / 2, motion,
                         (r + g + b) / 3 - 0.5], axis=1) * scale
    if common is not None:  # the shared-component variant: concept directions, COMMON
        distance = tf.norm(rgb[:, None, :] - tf.constant(PROTOTYPES, tf.float32)[None], axis=2)
        concepts = 10.0 * tf.exp(-tf.square(distance) / (2 * PROTOTYPE_WIDTH ** 2))
        features = tf.concat([features, concepts], axis=1)
    embedding = tf.pad(features, [[0, 0], [0, DIM - features.shape[1]]])
    if common is not None:
        embedding = embedding + common[None, :]
    mixed_5c = tf.tile(embedding, [1, 2])
    return {"video_embedding": embedding, "mixed_5c": mixed_5c}


def text_outputs(texts: tf.Tensor, table, word_vectors) -> dict[str, tf.Tensor]:
    """string [N] → the sum of each text's known words' directions [N, 512]."""
    words = tf.strings.split(tf.strings.lower(texts))  # ragged [N, words]
    ids = tf.ragged.map_flat_values(table.lookup, words)
    ids = tf.ragged.map_flat_values(
        lambda i: tf.where(i < 0, tf.cast(len(WORDS), tf.int64), i), ids)
    vectors = tf.ragged.map_flat_values(tf.gather, word_vectors, ids)
    return {"text_embedding": tf.reduce_sum(vectors, axis=1)}  # "" → zeros


def _word_rows() -> list:
    """One row per word, then a zero row at the end: where unknown words (-1) land."""
    return [tf.one_hot(dim, DIM) * sign for dim, sign in WORDS.values()] + [tf.zeros(DIM)]


def build(path: Path, common: bool = False) -> Path:
    """Write the SavedModel (TF2 format) to `path` and return it; common: the variant whose
    video embeddings share one large vector."""
    module = ColourMotionModel(common)
    tf.saved_model.save(module, str(path), signatures={"video": module.video, "text": module.text})
    return path


def build_tf1(path: Path) -> Path:
    """Write the same model in the real model's TF1 Hub module format and return `path`: one
    MetaGraph under the empty tag set, `tfhub_module.pb` beside `saved_model.pb`, the vocabulary
    in a hash table initialised by the SavedModel's main op, variables restored from the
    checkpoint (the video side's scales among them, so a converter meets captured weights), and
    signatures with one input each (load_v1_in_v2 then lets it be passed by position)."""
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        frames = v1.placeholder(tf.float32, [None, None, None, None, 3], name="frames")
        texts = v1.placeholder(tf.string, [None], name="texts")
        scale = v1.get_variable("feature_scale", initializer=tf.constant(FEATURE_SCALE))
        word_vectors = v1.get_variable("word_vectors", initializer=tf.stack(_word_rows()))
        table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
            tf.constant(list(WORDS)), tf.range(len(WORDS), dtype=tf.int64)), default_value=-1)
        video = video_outputs(frames, scale)
        text = text_outputs(texts, table, word_vectors)
        info = v1.saved_model.utils.build_tensor_info
        signatures = {
            "video": v1.saved_model.signature_def_utils.build_signature_def(
                {"default": info(frames)}, {k: info(t) for k, t in video.items()}),
            "text": v1.saved_model.signature_def_utils.build_signature_def(
                {"default": info(texts)}, {k: info(t) for k, t in text.items()}),
        }
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            builder = v1.saved_model.Builder(str(path))
            builder.add_meta_graph_and_variables(
                session, tags=[], signature_def_map=signatures,
                main_op=v1.tables_initializer(), strip_default_attrs=True)
            builder.save()
    (path / "tfhub_module.pb").write_bytes(HUB_MODULE_DEF)
    return path


if __name__ == "__main__":  # python -m tests.testmodel [DIR] [--tf1]
    builder = build_tf1 if "--tf1" in sys.argv else build
    names = [a for a in sys.argv[1:] if a != "--tf1"]
    print(builder(Path(names[0] if names else "test-model")))
