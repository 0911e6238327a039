"""model.precision: auto (issue 34) on the test model: bf16 checked against f32 on the first
windows of the user's own clips where the CPU has AVX-512 BF16 or AMX, then run (or refused) and
recorded beside the cached model for the next start; f32 with a reason elsewhere; the config's
new default. The CPU is the test's own /proc/cpuinfo (monkeypatched), OpenVINO the real one."""

from __future__ import annotations

import json
import logging
import shutil
from types import SimpleNamespace

import numpy as np
import pytest

from autotag.config import ModelConfig, openvino_installed, parse_config
from autotag.daemon import int8 as auto_int8
from autotag.model import load_model
from autotag.runtimes import precision as p

pytestmark = pytest.mark.skipif(not openvino_installed(), reason="OpenVINO not installed")

BATCH = 2
WINDOW = (32, 224, 224, 3)
SAPPHIRE_RAPIDS = ("model name\t: Intel(R) Xeon(R) Platinum 8480+\n"
                   "flags\t\t: fpu sse2 avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_int8\n")
ZEN3 = "model name\t: AMD Ryzen 7 5800X\nflags\t\t: fpu sse2 avx2 fma\n"
PROMPTS = ["red", "green", "blue", "moving", "bright"]


@pytest.fixture
def cpu(tmp_path, monkeypatch):
    """cpu(text): /proc/cpuinfo says `text` for the rest of the test."""
    def use(text: str) -> None:
        info = tmp_path / "cpuinfo"
        info.write_text(text)
        monkeypatch.setattr(p, "CPUINFO", info)
    return use


@pytest.fixture
def cache(model_dir, openvino_cache, tmp_path):
    """A cache of the test's own holding the session's converted test model (no records)."""
    converted = load_model(str(model_dir), runtime="openvino", batch_size=BATCH,
                           cache_dir=openvino_cache).cache_path
    own = tmp_path / "ov-cache"
    shutil.copytree(converted, own / converted.name,
                    ignore=shutil.ignore_patterns("int8", p.AGREEMENT))
    return own


def windows(count: int, seed: int = 0) -> np.ndarray:
    """float32 [count, 32, 224, 224, 3]: solid colours of every hue and brightness, some
    flashing, so the test model's tags differ from window to window."""
    rng = np.random.default_rng(seed)
    out = np.empty((count, *WINDOW), np.float32)
    for i in range(count):
        out[i] = rng.random(3, dtype=np.float32)
        if i % 3 == 0:
            out[i, ::2] *= 0.2
    return out


def auto(model_dir, cache):
    return load_model(str(model_dir), runtime="openvino", batch_size=BATCH, precision="auto",
                      cache_dir=cache)


def test_on_a_bf16_cpu_bf16_is_checked_on_the_first_windows_then_runs_and_is_recorded(
        cpu, model_dir, cache, embedder, caplog):
    cpu(SAPPHIRE_RAPIDS)
    caplog.set_level(logging.INFO)
    model = auto(model_dir, cache)
    assert model.precision == "f32" and "checking bf16" in model.precision_reason
    assert "auto: this CPU has amx_bf16/avx512_bf16: checking bf16" in caplog.text  # start-up
    frames = windows(p.TRIAL_WINDOWS + 4)
    model.embed_video(frames[:BATCH])  # before the vocabulary is known: no trial yet
    assert model.precision == "f32" and model._candidate is None
    model.judge_with(embedder.embed_text(PROMPTS))
    reference = load_model(str(model_dir), runtime="openvino", batch_size=BATCH,
                           cache_dir=cache)  # f32, as set
    for start in range(0, p.TRIAL_WINDOWS, BATCH):
        batch = frames[start:start + BATCH]
        was = model.precision
        got = model.embed_video(batch)
        if was == "f32":  # the trial's windows are tagged from f32's embeddings
            np.testing.assert_array_equal(got, reference.embed_video(batch))
    assert model.precision == "bf16"
    record = json.loads((model.cache_path / p.AGREEMENT).read_text())
    (entry,) = record["cpus"].values()
    assert entry["cpu"] == "Intel(R) Xeon(R) Platinum 8480+"
    verdict = entry["bf16"]
    assert verdict["accepted"] and verdict["windows"] == p.TRIAL_WINDOWS
    assert verdict["mean_score_cosine"] >= p.MIN_SCORE_COSINE
    assert verdict["top_tag_agreement"] >= 1 - p.MAX_TOP_TAG_FLIPS / p.TRIAL_WINDOWS
    # the scores of bf16's windows keep f32's ranking
    texts = embedder.embed_text(PROMPTS)
    rest = frames[p.TRIAL_WINDOWS:]
    np.testing.assert_array_equal((model.embed_video(rest) @ texts.T).argmax(1),
                                  (reference.embed_video(rest) @ texts.T).argmax(1))
    # measured once per model and CPU: the next start runs bf16 at once, saying why
    again = auto(model_dir, cache)
    assert again.precision == "bf16" and again._trial is None
    assert "bf16 agreed with f32" in again.precision_reason


def test_a_candidate_that_disagrees_is_refused_f32_stays_and_the_next_start_says_why(
        cpu, model_dir, cache, embedder, monkeypatch, caplog):
    cpu(SAPPHIRE_RAPIDS)
    monkeypatch.setattr(p, "MIN_SCORE_COSINE", 1.5)  # a bar no cosine meets
    model = auto(model_dir, cache)
    model.judge_with(embedder.embed_text(PROMPTS))
    frames = windows(p.TRIAL_WINDOWS)
    for start in range(0, p.TRIAL_WINDOWS, BATCH):
        model.embed_video(frames[start:start + BATCH])
    assert model.precision == "f32" and model._trial is None
    assert "bf16 disagreed with f32" in caplog.text and "staying at f32" in caplog.text
    again = auto(model_dir, cache)
    assert again.precision == "f32" and again._trial is None
    assert "but bf16 disagreed with f32" in again.precision_reason


def test_without_avx512_bf16_or_amx_auto_runs_f32_and_says_why(cpu, model_dir, cache, caplog):
    cpu(ZEN3)
    caplog.set_level(logging.INFO)
    model = auto(model_dir, cache)
    assert model.precision == "f32" and model._trial is None
    assert "neither AVX-512 BF16 nor AMX" in model.precision_reason
    assert "f32 (auto: this CPU (AMD Ryzen 7 5800X) has neither" in caplog.text
    # and the daemon prepares INT8 for it unasked (daemon/int8.py): AVX2's int8 is the lever
    assert auto_int8.gains_from_int8(model)


SSE_ONLY = "model name\t: Intel(R) Core(TM)2 Duo CPU E8400\nflags\t\t: fpu sse2 ssse3 sse4_1\n"
NO_FLAGS = "processor\t: 0\nBogoMIPS\t: 48.00\nCPU implementer\t: 0x41\n"  # an ARM's


@pytest.mark.parametrize(("cpuinfo", "capabilities", "precision", "int8"), [
    (ZEN3, (), "f32", True),  # AVX2 alone: bf16 would run as f32; INT8 2.48× f32 (issue 19)
    (SAPPHIRE_RAPIDS, (), "f32", True),  # bf16 checked first; INT8 still runs faster
    (SSE_ONLY, ("FP32", "INT8"), "f32", False),  # flags named, no int8 gain among them
    (NO_FLAGS, ("FP32", "INT8"), "f32", True),  # no flags: OpenVINO's capabilities stand in
    (NO_FLAGS, ("FP32",), "f32", False),
    (NO_FLAGS, ("FP32", "BF16", "INT8"), "f32", True),  # bf16 is checked first there too
])
def test_the_cpu_probe_decides_who_gets_int8_unasked(cpu, tmp_path, cpuinfo, capabilities,
                                                     precision, int8):
    """Issue 34: "an AVX2 machine gets INT8 without anyone asking". What auto runs first and
    whether the daemon quantizes come from the CPU probe (/proc/cpuinfo's flags, OpenVINO's
    OPTIMIZATION_CAPABILITIES where it names none), not from a guess."""
    cpu(cpuinfo)
    choice = p.choose(tmp_path, p.this_cpu(capabilities), None)
    assert choice.precision == precision
    assert (choice.trial == "bf16") == (cpuinfo == SAPPHIRE_RAPIDS or "BF16" in capabilities)
    assert auto_int8.gains_from_int8(SimpleNamespace(choice=choice)) is int8


def test_verdicts_of_two_cpus_live_side_by_side(tmp_path):
    a, b = (p.Cpu(name, frozenset({"avx512_bf16"})) for name in ("Zen 4", "Sapphire Rapids"))
    ok = p.Verdict("bf16", True, "agreed", 32, 0.99999, 0.9999, 1.0, 3.7)
    no = p.Verdict("bf16", False, "disagreed", 32, 0.9, 0.8, 0.5, 1.9)
    p.record_verdict(tmp_path, a, ok)
    p.record_verdict(tmp_path, b, no)
    assert p.read_verdict(tmp_path, a) == ok and p.read_verdict(tmp_path, b) == no
    assert p.choose(tmp_path, a, None).precision == "bf16"
    assert p.choose(tmp_path, b, None).precision == "f32"


def test_an_accepted_int8_copy_runs_unless_bf16_was_measured_faster(tmp_path):
    cpu = p.Cpu("Sapphire Rapids", frozenset({"amx_bf16", "amx_int8"}))
    report = {"accepted": True, "speedup": 6.0, "mean_cosine": 0.999, "tag_agreement": 1.0}
    assert p.choose(tmp_path, cpu, report).precision == "int8"
    p.record_verdict(tmp_path, cpu, p.Verdict("bf16", True, "agreed", 32, 1.0, 1.0, 1.0, 7.0))
    assert p.choose(tmp_path, cpu, report).precision == "bf16"
    assert p.choose(tmp_path, cpu, {**report, "speedup": 8.0}).precision == "int8"


def test_auto_is_the_default_and_auto_int8_is_validated(tmp_path):
    assert ModelConfig().precision == "auto" and ModelConfig().auto_int8 is True
    config = parse_config("vocabulary: [red]\nmodel: {auto_int8: false}\n", tmp_path)
    assert config.model.auto_int8 is False
    from autotag.config import ConfigError

    with pytest.raises(ConfigError, match="model.auto_int8"):
        parse_config("vocabulary: [red]\nmodel: {auto_int8: sometimes}\n", tmp_path)


def test_a_trial_s_windows_wait_for_the_next_process_until_the_verdict(tmp_path):
    """`autotag --once` runs of a few windows each reach bf16's verdict together: the windows
    seen are kept beside the cached model and read back, and go once the verdict is given."""
    from autotag.runtimes.precision import TRIAL_WINDOWS, Trial

    rng = np.random.default_rng(0)
    keep = tmp_path / "trial.npz"
    first = Trial("bf16", keep=keep)
    half = rng.normal(size=(TRIAL_WINDOWS // 2, 512)).astype(np.float32)
    first.add(half, half + 1e-4, 1.0, 0.5)
    assert not first.full and keep.exists()
    second = Trial("bf16", keep=keep)  # the next run
    assert second.seen == TRIAL_WINDOWS // 2
    second.add(half, half + 1e-4, 1.0, 0.5)
    assert second.full
    verdict = second.verdict(rng.normal(size=(4, 512)).astype(np.float32))
    assert verdict.accepted and verdict.windows == TRIAL_WINDOWS and verdict.speedup == 2.0
    second.forget()
    assert not keep.exists() and Trial("bf16", keep=keep).seen == 0
