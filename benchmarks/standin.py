"""Random weights → S3D-G layer structure → SavedModel with MIL-NCE's hub signatures (for timing).

    video: float32 [B, T, H, W, 3] in [0, 1] → video_embedding [B, 512], mixed_5c [B, 1024]
    text:  string [N]                       → text_embedding [N, 512]

The layers are those of S3D-G as MIL-NCE uses it (space-to-depth stem, separable 3D
convolutions, self-gated inception blocks Mixed_3b..Mixed_5c, a linear head), channels-last as
TensorFlow's CPU kernels want them, with random weights and batch norm folded into biases. Its
scores mean nothing; its cost is realistic: about 9 M video parameters and 37 G multiply-adds
per 32×224×224 window. The text side is MIL-NCE's too: a 66,250-word × 300 table (words hashed
into it here), a 2048-wide layer, max over words, a 512-wide projection.

Built by `python -m benchmarks.standin DIR` or on demand by the benchmark, never committed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

EMBED_DIM = 512  # video and text embedding width
MIXED_5C = 1024  # channels of the last inception block
WORDS = 66_250  # MIL-NCE's word vocabulary
WORD_DIM = 300  # word vector width
TEXT_HIDDEN = 2048  # the text branch's hidden width
MAX_WORDS = 16  # words per prompt the text branch reads
SEED = 8  # fixed: two builds have the same weights, so the fingerprint is stable

# Inception blocks: (name, 1x1, 3x3 reduce, 3x3, 3x3' reduce, 3x3', pool proj), as in S3D-G.
INCEPTION = {
    "3b": (64, 96, 128, 16, 32, 32), "3c": (128, 128, 192, 32, 96, 64),
    "4b": (192, 96, 208, 16, 48, 64), "4c": (160, 112, 224, 24, 64, 64),
    "4d": (128, 128, 256, 24, 64, 64), "4e": (112, 144, 288, 32, 64, 64),
    "4f": (256, 160, 320, 32, 128, 128),
    "5b": (256, 160, 320, 32, 128, 128), "5c": (384, 192, 384, 48, 128, 128),
}


class _Weights:
    """Creates the variables and counts multiply-adds for one window as layers are declared."""

    def __init__(self) -> None:
        self.rng = np.random.default_rng(SEED)
        self.variables: list[tf.Variable] = []

    def make(self, shape: tuple[int, ...], fan_in: int) -> tf.Variable:
        value = self.rng.standard_normal(shape, dtype=np.float32) * np.float32(
            np.sqrt(2.0 / fan_in))
        var = tf.Variable(value, trainable=False)
        self.variables.append(var)
        return var

    def conv(self, kernel: tuple[int, int, int], cin: int, cout: int) -> tuple:
        fan_in = kernel[0] * kernel[1] * kernel[2] * cin
        bias = tf.Variable(np.full((cout,), 0.01, np.float32), trainable=False)
        self.variables.append(bias)
        return (self.make((*kernel, cin, cout), fan_in), bias)


class StandIn(tf.Module):
    """S3D-G with random weights behind MIL-NCE's two signatures."""

    def __init__(self) -> None:
        super().__init__()
        w = _Weights()
        self.stem = w.conv((2, 4, 4), 24, 64)  # on the space-to-depth input
        self.conv_2b = w.conv((1, 1, 1), 64, 64)
        self.conv_2c = self._separable(w, 64, 192)
        self.gate_2c = w.make((192, 192), 192)
        self.blocks = []
        cin = 192
        for name, spec in INCEPTION.items():
            self.blocks.append((name, self._inception(w, cin, spec)))
            cin = spec[0] + spec[2] + spec[4] + spec[5]
        self.head = w.make((MIXED_5C, EMBED_DIM), MIXED_5C)
        self.words = w.make((WORDS, WORD_DIM), WORD_DIM)
        self.text_1 = w.make((WORD_DIM, TEXT_HIDDEN), WORD_DIM)
        self.text_2 = w.make((TEXT_HIDDEN, EMBED_DIM), TEXT_HIDDEN)
        self._vars = w.variables  # tracked, so they are saved

    @staticmethod
    def _separable(w: _Weights, cin: int, cout: int) -> tuple:
        """A 3×3×3 convolution as 1×3×3 spatial then 3×1×1 temporal (S3D's separable conv)."""
        return (w.conv((1, 3, 3), cin, cout), w.conv((3, 1, 1), cout, cout))

    def _inception(self, w: _Weights, cin: int, spec: tuple[int, ...]) -> dict:
        b0, b1a, b1b, b2a, b2b, b3 = spec
        return {
            "b0": w.conv((1, 1, 1), cin, b0),
            "b1a": w.conv((1, 1, 1), cin, b1a), "b1b": self._separable(w, b1a, b1b),
            "b2a": w.conv((1, 1, 1), cin, b2a), "b2b": self._separable(w, b2a, b2b),
            "b3": w.conv((1, 1, 1), cin, b3),
            "gates": [w.make((c, c), c) for c in (b0, b1b, b2b, b3)],
        }

    # -- video -----------------------------------------------------------------------------

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, None, 3], tf.float32)])
    def video(self, frames: tf.Tensor) -> dict[str, tf.Tensor]:
        return self.forward(frames)

    def forward(self, frames: tf.Tensor) -> dict[str, tf.Tensor]:
        """The video network, traceable at any static shape (for counting its cost)."""
        x = _space_to_depth(frames)  # [B, T/2, H/2, W/2, 24]
        x = _conv(x, self.stem)
        x = _max_pool(x, (1, 3, 3), (1, 2, 2))
        x = _conv(x, self.conv_2b)
        x = _gate(_sep(x, self.conv_2c), self.gate_2c)
        x = _max_pool(x, (1, 3, 3), (1, 2, 2))
        for name, block in self.blocks:
            if name == "4b":
                x = _max_pool(x, (3, 3, 3), (2, 2, 2))
            elif name == "5b":
                x = _max_pool(x, (2, 2, 2), (2, 2, 2))
            x = _inception(x, block)
        mixed_5c = tf.reduce_mean(x, axis=[1, 2, 3])  # [B, 1024]
        return {"video_embedding": tf.matmul(mixed_5c, self.head), "mixed_5c": mixed_5c}

    # -- text ------------------------------------------------------------------------------

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def text(self, texts: tf.Tensor) -> dict[str, tf.Tensor]:
        words = tf.strings.split(tf.strings.lower(texts)).to_tensor("", shape=[None, MAX_WORDS])
        ids = tf.strings.to_hash_bucket_fast(words, WORDS)
        known = tf.cast(words != "", tf.float32)[..., None]  # padding adds nothing
        vectors = tf.gather(self.words, ids) * known  # [N, MAX_WORDS, 300]
        hidden = tf.nn.relu(tf.tensordot(vectors, self.text_1, 1)) * known
        return {"text_embedding": tf.matmul(tf.reduce_max(hidden, axis=1), self.text_2)}


def _space_to_depth(x: tf.Tensor) -> tf.Tensor:
    """[B, T, H, W, 3] → [B, T/2, H/2, W/2, 24]: MIL-NCE's stem folds 2×2×2 blocks into channels."""
    s = tf.shape(x)
    b, t, h, w = (s[i] if x.shape[i] is None else x.shape[i] for i in range(4))
    t, h, w = t // 2, h // 2, w // 2
    x = x[:, :2 * t, :2 * h, :2 * w]
    x = tf.reshape(x, [b, t, 2, h, 2, w, 2, 3])
    x = tf.transpose(x, [0, 1, 3, 5, 2, 4, 6, 7])
    return tf.reshape(x, [b, t, h, w, 24])


def _conv(x: tf.Tensor, layer: tuple, strides: tuple[int, ...] = (1, 1, 1, 1, 1)) -> tf.Tensor:
    kernel, bias = layer
    return tf.nn.relu(tf.nn.conv3d(x, kernel, strides, "SAME") + bias)


def _sep(x: tf.Tensor, layers: tuple) -> tf.Tensor:
    return _conv(_conv(x, layers[0]), layers[1])


def _gate(x: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """S3D-G's self-gating: channels scaled by a sigmoid of their own global average."""
    pooled = tf.reduce_mean(x, axis=[1, 2, 3])
    return x * tf.sigmoid(tf.matmul(pooled, weights))[:, None, None, None, :]


def _max_pool(x: tf.Tensor, size: tuple[int, int, int], stride: tuple[int, int, int]) -> tf.Tensor:
    return tf.nn.max_pool3d(x, (1, *size, 1), (1, *stride, 1), "SAME")


def _inception(x: tf.Tensor, block: dict) -> tf.Tensor:
    branches = [
        _conv(x, block["b0"]),
        _sep(_conv(x, block["b1a"]), block["b1b"]),
        _sep(_conv(x, block["b2a"]), block["b2b"]),
        _conv(_max_pool(x, (3, 3, 3), (1, 1, 1)), block["b3"]),
    ]
    return tf.concat([_gate(b, g) for b, g in zip(branches, block["gates"])], axis=-1)


def video_parameters(module: StandIn) -> int:
    """Parameters of the video side (the text table and layers excluded)."""
    text = {id(v) for v in (module.words, module.text_1, module.text_2)}
    return sum(int(np.prod(v.shape)) for v in module._vars if id(v) not in text)


def video_macs(module: StandIn, frames: int = 32, size: int = 224) -> float:
    """Multiply-adds of one window, from the traced graph's convolutions and matmuls."""
    graph = tf.function(module.forward).get_concrete_function(
        tf.TensorSpec([1, frames, size, size, 3], tf.float32)).graph
    total = 0.0
    for op in graph.get_operations():
        if op.type == "Conv3D":
            out = op.outputs[0].shape
            kernel = op.inputs[1].shape
            total += np.prod(out[1:]) * np.prod(kernel[:-1])
        elif op.type == "MatMul":
            a, b = op.inputs[0].shape, op.inputs[1].shape
            total += a[0] * a[1] * b[1]
    return float(total)


def build(path: Path) -> Path:
    """Write the stand-in SavedModel to `path` and return it."""
    module = StandIn()
    tf.saved_model.save(module, str(path), signatures={"video": module.video, "text": module.text})
    return path


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "standin-model")
    m = StandIn()
    print(f"video parameters: {video_parameters(m) / 1e6:.1f} M; "
          f"multiply-adds per window: {video_macs(m) / 1e9:.1f} G")
    print(build(target))
