"""The benchmark's code paths (issue 8) on the test model and tiny clips: that it runs and
reports every row, not how fast (no timing is asserted)."""

from __future__ import annotations

import pytest

from autotag.engine import hash_file
from benchmarks import clipset, measure, report, suite

pytestmark = pytest.mark.skipif(not clipset.shutil.which("ffmpeg"), reason="needs ffmpeg")


def test_every_measurement_runs_and_is_reported(model_dir, tmp_path):
    settings = suite.Settings(
        cache=tmp_path / "cache", handle=str(model_dir), batch_size=2, threads=0,
        max_windows=2, max_pixels=8_294_400, model_calls=1, cheap=(64, 48, 2),
        heavy=(96, 64, 0), long_loops=3, codecs=(), rss_clips=(), rss_size=(64, 48),
        rss_seconds=1.0, watch_clips=1, stability=0.2, sweep_batches=(), sweep_threads=(),
        clip_seconds=2.0, cold_start=False,
        repeat_model=False, compare_runtimes=False)  # the runtime block: its own test below
    workspace = measure.Workspace(tmp_path / "runs", str(model_dir),
                                  {"model": {"batch_size": 2}, "sampling": {"max_windows": 2}})
    results = suite.run(settings, workspace, say=lambda message: None)

    assert results.model.result["windows"] == 2 and results.model.peak_rss_mb > 0
    (cheap,) = results.sets
    assert cheap.once.result["tagged"] == 2 and cheap.once.result["windows"] > 0
    assert cheap.article.result["clips"] == 2
    assert cheap.article.result["input_dtype"] == "float64"  # the article's method, as it was
    assert results.warm.ready_seconds > 0 and len(results.warm.latencies) == 1
    rows = report.rows(results)
    statuses = {row.measure: row.status for row in rows}
    assert statuses["efficiency = autotag ÷ model alone"] in (report.MET, report.MISSED)
    assert any(row.section.startswith("decoding alone") for row in rows)
    # the sweep's verdict, on points the run did not time (the sweep is the model probe again)
    results.sweep = {(2, 0, 0): results.model, (1, 0, 0): results.model,
                     (2, 1, 1): results.model}
    statuses = {row.measure: row.status for row in report.rows(results)}
    assert statuses["model.batch_size vs the fastest batch"] == report.MET
    assert statuses["model.threads vs the fastest (intra, inter)"] == report.MET
    text = report.render(results)
    path = report.write(results, text, tmp_path / "results")
    assert "autotag --once" in path.read_text() and path.with_suffix(".json").exists()
    assert "| efficiency = autotag ÷ model alone |" in path.with_suffix(".md").read_text()


def test_the_runtime_comparison_is_reported_from_its_measurements(model_dir, tmp_path):
    """The side-by-side block's rows (issue 14), from one real model-alone run standing in for
    each of its measurements (the block's eight child processes would double this file's time).
    """
    workspace = measure.Workspace(tmp_path / "runs", str(model_dir), {})
    child = measure.model_alone(workspace, 2, 1, 0, runtime="openvino",
                                cache=tmp_path / "ov-cache")
    assert child.result["runtime"] == "openvino" and child.result["windows_per_second"] > 0
    once = measure.Child(3.0, child.peak_rss_mb, 0,
                         {"windows": 4, "seconds": 2.0, "startup_seconds": 1.0, "tagged": 2,
                          "clips": 2, "exit_code": 0, "runtime": "openvino"})
    settings = suite.Settings(cache=tmp_path, handle=str(model_dir), batch_size=2, threads=0,
                              max_windows=2, max_pixels=8_294_400)
    runtimes = suite.RuntimeResults(child, child, child, child, "cheap",
                                    {"tensorflow": once, "openvino": once},
                                    {"tensorflow": child, "openvino": child}, 1.0)
    results = suite.Results(settings=settings, machine="test", model=child, runtimes=runtimes)
    sections = {row.section for row in report.runtime_rows(results)}
    assert any(s.startswith("runtimes, model alone") for s in sections)
    assert any(s.startswith("runtimes, autotag --once") for s in sections)


def test_memory_runs_read_a_subset_of_one_clip_set(tmp_path):
    clips = clipset.generated(tmp_path, "rss", 64, 48, 3, seconds=1.0)
    assert len({hash_file(p) for p in clips.clips}) == 3  # the store has nothing to reuse
    first = clipset.subset(clips, 2)
    assert sorted(p.name for p in first.iterdir()) == [p.name for p in clips.clips[:2]]


def test_real_samples_convert_to_other_codecs(tmp_path):
    real = clipset.real(tmp_path, ["h264", "mpeg4"], limit=1)
    assert {p.suffix for p in real.clips} == {".mp4", ".avi"}
    assert measure.window_count(real.clips[1], 8) >= 1  # autotag's sampler reads the conversion


def test_standin_model_has_the_hub_interface_and_the_cost_of_s3dg():
    from benchmarks import standin

    module = standin.StandIn()
    assert 8e6 < standin.video_parameters(module) < 11e6
    assert 30e9 < standin.video_macs(module) < 45e9
    import numpy as np

    out = module.video(np.zeros((1, 8, 32, 32, 3), np.float32))
    assert out["video_embedding"].shape == (1, 512) and out["mixed_5c"].shape == (1, 1024)
    assert module.text(np.array(["riding a bike", ""]))["text_embedding"].shape == (2, 512)


def test_decoding_alone_reports_cpu_a_window_on_every_set(tmp_path, capsys):
    from benchmarks import decoding
    from tests.clips import RED, write_video

    assert decoding.main(["--clips", str(tmp_path), "--repeat", "1"]) == 2  # not built yet
    for name in decoding.SETS:
        (tmp_path / "sets" / name).mkdir(parents=True)
        write_video(tmp_path / "sets" / name / "a.mp4", [(RED, 4)])
    (tmp_path / "sources").mkdir()
    short, long = decoding.LONG
    write_video(tmp_path / "sources" / short, [(RED, 4)])
    write_video(tmp_path / "sources" / long, [(RED, 40)])
    capsys.readouterr()
    assert decoding.main(["--clips", str(tmp_path), "--repeat", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name in decoding.SETS:  # 4 s: 2 windows
        assert any(line.startswith(f"{name}: ") and " ms CPU a window " in line
                   and line.endswith(", 2 windows)") for line in lines), lines
    assert any(line.startswith("10-minute vs 10-second 1080p, 2 windows: ") for line in lines)


def test_the_runtimes_table_names_the_cpu_and_every_runtime():
    """benchmarks.runtimes (issue 19): its table from figures, the CPU and its flags first."""
    from benchmarks import runtimes

    name, flags = runtimes.cpu()
    assert name and isinstance(flags, set)
    figures = runtimes.Figures(f"{name}; flags: avx2", daemon={"steady": 600.0,
                                                                "released": 150.0})
    figures.rows = [runtimes.Row("TensorFlow, oneDNN off", 0.7, 0.6, 1800.0),
                    runtimes.Row("OpenVINO f32 (the default now)", 1.9, 1.7, 700.0),
                    runtimes.Row("OpenVINO INT8 (model.precision: int8)", note="refused: why")]
    figures.quantize = {"accepted": False, "reason": "why", "examples": [1, 2]}
    text = runtimes.render(figures, None)
    assert f"CPU: {name}; flags: avx2" in text
    assert "| OpenVINO f32 (the default now) | 1.90 | 1.70 | - | 700 MB  |" in text
    assert "refused: why" in text and "| now, released | 150 MB |" in text
    assert '"accepted": false' in text and "examples" not in text


def test_the_serve_benchmark_writes_latency_page_load_memory_and_the_command_time(model_dir,
                                                                                   tmp_path):
    """benchmarks.serve on a tiny store, without a browser or another checkout: every figure
    is in its JSON and plausible (the model's fingerprint only: nothing loads it)."""
    import json

    from autotag.store import SCHEMA_VERSION
    from benchmarks import serve

    results = tmp_path / "results"
    assert serve.main(["--clips", "300", "--queries", "5", "--no-browser", "--model",
                       str(model_dir), "--cache", str(tmp_path / "cache"),
                       "--results", str(results)]) == 0
    (path,) = results.glob("serve-*.json")
    r = json.loads(path.read_text())
    s = r["server"]
    for name in ("api_search", "page_search"):
        assert s[name]["n"] == 5 and 0 < s[name]["p50_ms"] <= s[name]["p95_ms"] < 10_000
    page = s["first_page"]
    assert 0 < page["html_ms"] <= page["total_ms"] < 30_000 and len(page["assets"]) == 2
    assert 20 < s["loaded"]["rss_mb"] <= s["after_queries"]["hwm_mb"] < 4_000
    assert not s["tensorflow_loaded"] and "browser" not in s
    command = r["command"]["after"]
    assert len(command["runs_s"]) == serve.CLI_RUNS and 0 < command["median_s"] < 60
    assert 0 < command["python_start_s"] < command["median_s"] and command["imports_s"] > 0
    assert list(r["command"]) == ["after"] and r["build"]["after"]["schema"] == SCHEMA_VERSION
    assert r["machine"]["cpu"] and r["machine"]["flags"]
    assert "| search, /api/search top 24 (p50 / p95 of 5) |" in path.with_suffix(".md").read_text()


def test_the_scale_uptodate_benchmark_runs_quick():
    from benchmarks.scale import uptodate

    r = uptodate.measure(quick=True)
    rows = {row["metric"]: row for row in r["rows"]}
    whole = rows[f"--once over {uptodate.QUICK_CLIPS:,} tagged, unchanged clips"]
    assert whole["before"] is None and 0 < whole["after"] < 60 and whole["unit"] == "s"
    assert rows["store bytes per clip: clips"]["after"] > 4 * uptodate.DIM  # a window's floats
    assert any("target" in note for note in r["notes"])


def test_the_scale_plan_benchmark_runs_quick():
    pytest.importorskip("ray")
    from benchmarks.scale import plan

    r = plan.measure(quick=True)
    (n,) = plan.QUICK_CLIPS
    rows = {row["metric"]: row for row in r["rows"]}
    first = rows[f"backfill, {n:,} clips: command start → first model call"]
    assert first["before"] is None and 0 < first["after"] < plan.FIRST_CALL_TIMEOUT
    assert rows[f"backfill, {n:,} clips: driver peak memory (VmHWM)"]["after"] > 20


def _burn(seconds: float) -> None:
    """Spend `seconds` of this thread's CPU (not wall: the machine may be loaded)."""
    import time

    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_the_stage_profiler_counts_each_thread_s_cpu_in_its_group():
    """benchmarks.stages' thread sampler (issue 34): a decode worker's CPU and the main
    thread's are told apart, and a worker that ends between two readings still counts in
    full: it reports its own clock as it ends, as the profiled decode workers do. (Waiting
    for the sampler instead lost 0.16 s of 0.4 on a loaded CI machine: the sampler needs the
    GIL the burning worker holds.)"""
    import threading

    from benchmarks import stages

    def decode_worker():
        _burn(0.4)
        threads.ended("decode workers")

    with stages.ThreadCpu() as threads:
        worker = threading.Thread(target=decode_worker, name="autotag-decode-0")
        worker.start()
        worker.join()
        _burn(0.2)
    groups = threads.groups()
    tick = 2 / stages.TICK
    assert groups["decode workers"] >= 0.4
    assert groups["main thread (model calls, outputs)"] >= 0.2 - tick
    assert groups["decode workers"] < 0.4 + 0.2  # the main thread's CPU is not the worker's


def test_the_stage_profiler_times_once_and_the_limit_on_the_test_model(model_dir, tmp_path,
                                                                         openvino_cache):
    """benchmarks.stages end to end on two tiny clips: the --once child reports every stage
    and the windows it embedded, the limit child decodes and embeds the same windows, and
    the table says how near the limit --once ran."""
    import shutil

    from autotag.config import openvino_installed
    from autotag.model import load_model
    from benchmarks import stages
    from tests.clips import BLUE, RED, write_video

    if openvino_installed():  # the session's conversion, not one more in the children
        converted = load_model(str(model_dir), runtime="openvino", batch_size=2,
                               cache_dir=openvino_cache).cache_path
        shutil.copytree(converted, tmp_path / "cache" / "autotag" / "tfhub" / "openvino"
                        / converted.name)
    clips = tmp_path / "clips"
    clips.mkdir()
    write_video(clips / "a.mp4", [(RED, 3.2), (BLUE, 3.2)])
    write_video(clips / "b.mp4", [(BLUE, 3.2)])
    once, limit = stages.measure_stages(str(model_dir), clips, "f32", tmp_path / "cache",
                                        tmp_path, {"model": {"batch_size": 2}})
    assert once["exit_code"] == 0 and once["windows"] == limit["windows"] == 3
    assert once["stages"]["decode"]["calls"] == 2 and once["stages"]["model"]["calls"] >= 2
    assert once["stages"]["outputs"]["calls"] == 2 and once["stages"]["load"]["calls"] == 1
    assert once["threads"]["decode workers"] > 0 and once["process_cpu"] > 0
    assert limit["decode_wall"] > 0 and limit["model_wall"] > 0
    text = stages.render(once, limit)
    assert "× the limit**" in text and "| … decoding (engine.decode) |" in text


def test_the_runtimes_table_puts_issue_34_s_ratios_side_by_side():
    """benchmarks.runtimes: on each clip set, the default now against the --before checkout's
    with its IR cached, not its first run that converts it (wall, start-up included), and
    --once after start-up against the limit."""
    from pathlib import Path

    from benchmarks import runtimes

    figures = runtimes.Figures("a CPU; flags: avx2")
    figures.rows = [runtimes.Row("OpenVINO auto (the default now), 720p clips", once=12.0,
                                 wall=2.5),
                    runtimes.Row(f"OpenVINO auto (the default now), {runtimes.HD} clips",
                                 model=10.0, once=2.7, wall=10.0),
                    runtimes.Row(f"the limit, {runtimes.HD} clips (bf16): decoding alone + "
                                 "the model alone", once=3.0, wall=9.3)]
    figures.before = [
        runtimes.Row("before: with the [openvino] extra, its first run (converts its IR)",
                     once=2.0, wall=20.0),
        runtimes.Row("before: with the [openvino] extra", once=3.0, wall=6.0),
        runtimes.Row(f"before: with the [openvino] extra, {runtimes.HD} clips", once=1.7,
                     wall=16.0)]
    text = runtimes.render(figures, Path("/tmp/before"))
    assert "720p, the default now against before's: 6.0 s / 2.5 s = **2.40×**" in text
    assert "16.0 s / 10.0 s = **1.60×**" in text
    assert "2.70 / 3.00 windows/s = **0.90×**" in text
    assert f"| OpenVINO auto (the default now), {runtimes.HD} clips | 10.00 | 2.70 | 10.00 s |" \
        in text


def test_an_older_checkout_gets_only_the_config_keys_it_knows(tmp_path):
    """benchmarks.runtimes --before: keys and sections the other checkout's config.yaml lacks
    (a key it does not know is an error there) are left out of the config it runs with."""
    import yaml

    from benchmarks import runtimes

    old = tmp_path / "old"
    old.mkdir()
    shipped = yaml.safe_load(measure.BASE_CONFIG.read_text())
    del shipped["mqtt"], shipped["watch"]["follow_symlinks_out"], shipped["model"]["auto_int8"]
    (old / "config.yaml").write_text(yaml.safe_dump(shipped))
    run = tmp_path / "run"
    run.mkdir()
    ws = measure.Workspace(tmp_path / "ws", "/model")
    data = yaml.safe_load(runtimes.config_for(ws, run, old, model={"precision": "auto"})
                          .read_text())
    assert "mqtt" not in data and "follow_symlinks_out" not in data["watch"]
    assert "auto_int8" not in data["model"] and data["model"]["precision"] == "f32"
    assert data["model"]["handle"] == "/model" and data["state"]["path"] == str(run / "state.sqlite3")
    mine = yaml.safe_load(runtimes.config_for(ws, run, None).read_text())
    assert "follow_symlinks_out" in mine["watch"] and "mqtt" in mine


def test_the_scale_command_benchmark_times_autotag_search_whole_and_by_phase(tmp_path):
    """benchmarks.scale.command on a small store: the real command prints its hits (checked
    inside), its first and warm runs are timed, and its phases add up to less than a run."""
    from benchmarks.scale import command

    folder = tmp_path / "run"
    folder.mkdir()
    r = command.at_size(200, folder, tmp_path / "cache", 1, False, lambda message: None)
    assert r["first_s"] > 0 and len(r["warm_s"]) == 1 and r["python_start_s"] > 0
    phases = r["phases_s"]
    assert {"imports", "index: manifest and checksum", "ranking: int8 scan + exact re-rank",
            "query embedding"} <= set(phases)
    assert all(s >= 0 for s in phases.values())
    assert "warm median" in command.report(r)


def test_the_scale_live_benchmark_reports_the_web_index_s_memory(tmp_path):
    """benchmarks.scale.live on a small store: the web app's index loads, searches and
    previews in a child, whose memory (RSS and peak) is reported at each step."""
    from benchmarks.scale import live

    folder = tmp_path / "run"
    folder.mkdir()
    r = live.at_size(300, folder, tmp_path / "cache")
    for step in ("start", "loaded", "searched", "previewed"):
        assert 0 < r[step]["VmRSS"] <= r[step]["VmHWM"]
    assert r["loaded"]["VmHWM"] >= r["start"]["VmHWM"] and len(r["preview_s"]) == 3
