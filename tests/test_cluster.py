"""Issue 15: `autotag backfill` on a local Ray (2 CPUs, no dashboard, a capped object store).

20 generated clips, a bad one and one whose decoding kills its Ray worker: the 20 are tagged
exactly as `--once` tags them, the two are named and failed, a rerun re-does nothing, search
finds the backfilled clips. The worker is killed by this module's worker_process_setup_hook
(no hook in the product): in every Ray worker it wraps media.sample_clip to `os._exit` on one
file name. Skipped when the cluster extra (Ray) is not installed.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from autotag import cli, cluster  # noqa: E402 - after the skip
from autotag.engine import ModelFailure  # noqa: E402
from autotag.store import Store  # noqa: E402
from tests.clips import BLUE, GREEN, RED, write_gif, write_video  # noqa: E402
from tests.helpers import REPO, write_config  # noqa: E402

CRASH = "crash-the-decoder.mp4"  # decoding this file kills the Ray worker (os._exit)
BAD = "bad.mp4"
OBJECT_STORE = 256 * 2**20  # bytes: Ray's minimum is 75 MB; a test clip's windows are ~5 MB


def crash_on_name() -> None:
    """Ray's worker_process_setup_hook (runs in each Ray worker as it starts): the worker
    dies, as a crashing decoder would, when it samples the file named CRASH."""
    from autotag import media

    sample_clip = media.sample_clip

    def dying(path, *args, **kwargs):
        if Path(path).name == CRASH:
            os._exit(3)
        return sample_clip(path, *args, **kwargs)

    media.sample_clip = dying


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Ray 2.60 authenticates with a token (a new local Ray writes one to ~/.ray): the test's own
    token = tmp_path_factory.mktemp("ray") / "auth_token"
    token.write_text(secrets.token_hex(32))
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(token)
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")  # as `autotag backfill` starts Ray
    # address "local": a Ray of its own, never the three-node cluster test_cluster_nodes.py may
    # be running beside it (pytest -n 2), which ray.init would otherwise join
    ray.init(address="local", num_cpus=2, include_dashboard=False,
             object_store_memory=OBJECT_STORE, log_to_driver=False, logging_level=logging.ERROR,
             runtime_env={"worker_process_setup_hook": f"{__name__}.crash_on_name",
                          "env_vars": {"PYTHONPATH": str(REPO)}})
    yield
    ray.shutdown()
    del os.environ["RAY_AUTH_TOKEN_PATH"]


def make_clips(folder: Path) -> list[Path]:
    """20 small clips of every kind the generators make (MP4 in two codecs, AVI, GIF), in
    three colours, 1 to 7 s (1 to 3 windows), some in a subfolder."""
    (folder / "sub").mkdir(parents=True)
    colours = (RED, GREEN, BLUE)
    clips = []
    for i in range(20):
        parts = [(colours[i % 3], 1 + i % 4)] + ([(colours[(i + 1) % 3], 3)] if i % 5 == 0 else [])
        where = folder / ("sub" if i % 4 == 0 else "")
        if i % 6 == 1:
            clips.append(write_gif(where / f"clip{i:02d}.gif", parts))
        elif i % 6 == 3:
            clips.append(write_video(where / f"clip{i:02d}.avi", parts, fourcc="MJPG"))
        else:
            clips.append(write_video(where / f"clip{i:02d}.mp4", parts))
    (folder / BAD).write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 500)
    write_video(folder / CRASH, [(RED, 2), (GREEN, 1)])  # content no other clip has
    return clips


def outputs(root: Path) -> dict[str, object]:
    """Every output (sidecars, the log, previews), minus the time each was written."""
    found: dict[str, object] = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file() or ".sqlite3" in path.name or path.name == "config.yaml":
            continue
        name = str(path.relative_to(root))
        if path.name.endswith(".autotag.json"):
            data = json.loads(path.read_text())
            data.pop("tagged_at")
            found[name] = data
        elif path.suffix == ".jsonl":
            lines = [json.loads(line) for line in path.read_text().splitlines()]
            for line in lines:
                line.pop("time")
            found[name] = sorted(lines, key=lambda line: line["path"])  # arrival order differs
        elif path.suffix in (".mp4", ".avi", ".gif"):
            continue
        else:
            found[name] = path.read_bytes()
    return found


def mtimes(root: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in root.rglob("*")
            if p.is_file() and ".sqlite3" not in p.name}


def backfill(config: Path, embedder, *paths: Path) -> int:
    return cli.main(["backfill", "--config", str(config), *map(str, paths)], embedder=embedder)


def test_backfill_tags_as_once_fails_only_the_bad_and_crashed_clips_resumes_and_is_searchable(
        tmp_path, model_dir, embedder, local_ray, run_once, capsys, monkeypatch):
    clips = make_clips(tmp_path / "clips")
    config = write_config(tmp_path, model_dir)
    rows: list[dict] = []
    outcome = cluster.outcome
    monkeypatch.setattr(cluster, "outcome", lambda e, row, s: rows.append(row) or outcome(e, row, s))

    assert backfill(config, embedder, tmp_path / "clips") == 1
    err = capsys.readouterr().err
    for name in (BAD, CRASH):  # each named on stderr in one line, with its reason
        line = next(line for line in err.splitlines() if name in line)
        assert line.split()[2:4] == ["ERROR", "skipping"], line
    assert "worker decoding or embedding it died" in next(
        line for line in err.splitlines() if CRASH in line)
    store = Store(tmp_path / "state.sqlite3")
    try:
        failed = {r.path.name: r.last_error for r in store.files("failed")}
        assert sorted(failed) == [BAD, CRASH]
        assert sorted(r.path for r in store.files("tagged")) == sorted(clips)
    finally:
        store.close()
    # the stages ran in different processes (not fused), and no frames came back
    assert len(rows) == 21 and all("frames" not in row for row in rows)
    assert all(row["decoder"] != row["embedder"] for row in rows)
    assert {row["embeddings"].dtype for row in rows if not row["error"]} == \
        {np.dtype(np.float32)}

    # search finds the backfilled clips
    assert cli.main(["search", "--config", str(config), "--json", "--top", "30", "red"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert len(hits) == 20 and Path(hits[0]["path"]).name in {c.name for c in clips[::3]}

    # a second run re-does nothing (the two failures removed: they would be retried, as by --once)
    (tmp_path / "clips" / BAD).unlink()
    (tmp_path / "clips" / CRASH).unlink()
    backfilled, before = outputs(tmp_path), mtimes(tmp_path)
    rows.clear()
    assert backfill(config, embedder, tmp_path / "clips") == 0
    assert "0 tagged, 0 tagged from stored embeddings, 20 up to date, 0 failed" in \
        capsys.readouterr().err
    assert not rows and mtimes(tmp_path) == before

    # `--once` on the same clips writes the same outputs (tagged_at aside)
    for path in tmp_path.rglob("*"):
        if path.name.endswith(".autotag.json") or path.name in ("matches.jsonl", "state.sqlite3"):
            path.unlink()
    shutil.rmtree(tmp_path / "previews")
    assert run_once(config, tmp_path / "clips") == 0
    assert outputs(tmp_path) == backfilled


def test_copies_are_tagged_on_the_driver_without_the_cluster(tmp_path, model_dir, embedder,
                                                             local_ray, monkeypatch, capsys):
    clips = tmp_path / "clips"
    clips.mkdir()
    write_video(clips / "a.mp4", [(GREEN, 2)])
    config = write_config(tmp_path, model_dir)
    assert backfill(config, embedder, clips) == 0
    shutil.copy(clips / "a.mp4", clips / "copy of a.mp4")
    monkeypatch.setattr(cluster, "connect", lambda *a, **k: pytest.fail("Ray was used"))
    capsys.readouterr()
    assert backfill(config, embedder, clips) == 0
    assert "0 tagged, 1 tagged from stored embeddings, 1 up to date" in capsys.readouterr().err


# -- without a cluster --------------------------------------------------------------------------

class FailsOnRed:
    """A model that fails on any batch holding a red window."""

    fingerprint = "test"

    def embed_video(self, frames):
        if (frames[:, 0, 0, 0, 0] > 0.5).any():
            raise RuntimeError("red")
        return np.ones((len(frames), 512), np.float32)


def test_a_model_failure_fails_only_its_clip_in_a_shared_batch():
    red = np.full((2, 32, 4, 4, 3), (255, 0, 0), np.uint8)
    green = np.full((3, 32, 4, 4, 3), (0, 255, 0), np.uint8)
    results = cluster.embed_clips(FailsOnRed(), [green, red, green, green[:0]], 4,
                                  ["", "", "", "cannot decode"])
    assert [r.shape for r in (results[0], results[2])] == [(3, 512), (3, 512)]
    assert "the model failed: RuntimeError: red" in results[1]
    assert results[3] is None  # came with its decoding error
    with pytest.raises(ModelFailure):
        cluster.stages.embed_windows(FailsOnRed(), list(red))


def test_resources_one_actor_per_gpu_else_per_cpu_node():
    def node(cpus, gpus=0, alive=True):
        return {"Alive": alive, "Resources": {"CPU": cpus, **({"GPU": gpus} if gpus else {})}}

    assert cluster.plan_resources([node(8, 2), node(8, 1), node(4, 4, alive=False)]) == \
        cluster.Resources(actors=3, gpus=1, cpus=cluster.GPU_ACTOR_CPUS,
                          threads=cluster.GPU_ACTOR_THREADS)
    # a KubeRay head with num-cpus 0 runs nothing; the smallest worker sizes the actors
    assert cluster.plan_resources([node(0), node(16), node(8)]) == \
        cluster.Resources(actors=2, gpus=0, cpus=6, threads=8)
    assert cluster.plan_resources([node(2)], threads=3) == cluster.Resources(1, 0, 1, 3)
    with pytest.raises(cluster.ClusterError, match="no node"):
        cluster.plan_resources([node(1)])


def test_without_ray_backfill_names_the_extra_and_help_never_imports_ray(tmp_path, capsys,
                                                                         monkeypatch):
    code = ("import sys, autotag.cli as c\n"
            "try:\n    c.main(['backfill', '--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'ray' not in sys.modules, 'ray imported'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "--address" in done.stdout
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "ray" else find_spec(name, *a))
    assert cli.main(["backfill", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == \
        "autotag: error: autotag backfill needs Ray: pip install 'autotag[cluster]'"


def test_a_cluster_failure_is_one_line_naming_the_model_error():
    error = RuntimeError("Traceback (most recent call last):\n  File x, line 1\n"
                         "autotag.model.ModelError: cannot read the model at /m; set model.handle\n")
    assert cluster._failure(error) == \
        "the cluster run failed: cannot read the model at /m; set model.handle"
    assert cluster._failure(RuntimeError("actor died\nlast words")) == \
        "the cluster run failed: last words"
