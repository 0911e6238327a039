"""Light by default (issue 19): a steady process holds no TensorFlow, an idle daemon gives the
video model back, and TensorFlow, where it runs the model, runs with oneDNN on.

Each process is a real one (a subprocess running the CLI, as users do), because this test
process has TensorFlow loaded for the session's test model: what counts is what `autotag`
itself imports and maps.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from autotag.config import openvino_installed
from tests.clips import BLUE, GREEN, RED, write_video
from tests.helpers import DEADLINE, REPO, DaemonProcess, wait_for

pytestmark = pytest.mark.skipif(not openvino_installed(), reason="OpenVINO not installed")

# TensorFlow's own native libraries (libtensorflow_framework, libtensorflow_cc,
# _pywrap_tensorflow_internal), not OpenVINO's TensorFlow frontend, which `import openvino` maps
TF_LIBRARIES = ("libtensorflow", "_pywrap_tensorflow")

# Runs the CLI, then says whether TensorFlow is in the process: in sys.modules, or its
# native library in the memory map (the 570 MB that import brings).
REPORT = f"""
import json, sys
from autotag import cli
code = cli.main(sys.argv[1:])
maps = open("/proc/self/maps").read()
print(json.dumps({{"code": code, "modules": "tensorflow" in sys.modules,
                  "mapped": any(lib in maps for lib in {TF_LIBRARIES!r})}}))
"""


def tensorflow_mapped(pid: int) -> bool:
    maps = Path(f"/proc/{pid}/maps").read_text()
    return any(lib in maps for lib in TF_LIBRARIES)


def write_config(folder: Path, model_dir: Path, vocabulary: str, extra: str = "") -> Path:
    config = folder / "config.yaml"
    config.write_text(
        f"model: {{handle: '{model_dir}', runtime: auto{extra}}}\n"
        f"vocabulary: {vocabulary}\n"
        f"state: {{path: '{folder / 'state.sqlite3'}'}}\n"
        "watch: {stability_seconds: 0.3, rescan_seconds: 0}\n"
        "outputs: {log: matches.jsonl, previews: null}\n")
    return config


def once(config: Path, folder: Path) -> tuple[dict, str]:
    done = subprocess.run([sys.executable, "-c", REPORT, "--once", "--config", str(config),
                           str(folder)], capture_output=True, text=True, timeout=600,
                          check=False, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1]), done.stderr


def test_once_never_imports_tensorflow_and_starts_it_only_in_a_child_for_new_work(
        tmp_path, model_dir):
    clips = tmp_path / "clips"
    clips.mkdir()
    write_video(clips / "red.mp4", [(RED, 2)])
    config = write_config(tmp_path, model_dir, "[red, green]")
    # cold: the IR is converted and the vocabulary embedded, each in a child process
    first, err = once(config, clips)
    assert first == {"code": 0, "modules": False, "mapped": False}, err
    assert "converting the video model for OpenVINO (once, in a child process" in err
    assert "embedded 3 text(s) with the model" in err  # red, green and the empty prompt
    # warm: a cached model and vocabulary; a new clip is tagged with no child at all
    write_video(clips / "green.mp4", [(GREEN, 2)])
    second, err = once(config, clips)
    assert second == {"code": 0, "modules": False, "mapped": False}, err
    assert "tagged" in err and "green.mp4" in err
    assert "converting" not in err and "with the model" not in err
    assert "compiled from the cache" in err
    # a new prompt: embedded in a child, and still none of TensorFlow here
    config.write_text(config.read_text().replace("[red, green]", "[red, green, blue]"))
    write_video(clips / "blue.mp4", [(BLUE, 2)])
    third, err = once(config, clips)
    assert third == {"code": 0, "modules": False, "mapped": False}, err
    assert "embedded 1 text(s) with the model" in err


def test_a_daemon_holds_no_tensorflow_and_gives_the_model_back_when_idle(tmp_path, model_dir):
    """Tags a clip, takes a new vocabulary on SIGHUP, releases the video model after 2 idle
    seconds (the log and systemd's STATUS= say so), then tags a clip that arrives after."""
    root = tmp_path / "inbox"
    root.mkdir()
    config = write_config(tmp_path, model_dir, "[red, green]", ", idle_unload_seconds: 2")
    notify = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify))
    listener.setblocking(False)
    daemon = DaemonProcess(config, root, ["-c", REPORT], env={"NOTIFY_SOCKET": str(notify)})
    statuses: list[str] = []

    def status(text: str) -> bool:
        while True:
            try:
                statuses.append(listener.recv(4096).decode())
            except BlockingIOError:
                return any(text in s for s in statuses)

    try:
        wait_for(lambda: daemon.count("watching") > 0, DEADLINE * 4)
        write_video(root / "red.mp4", [(RED, 2)])
        wait_for(lambda: daemon.count("tagged ") >= 1, DEADLINE * 2)
        assert not tensorflow_mapped(daemon.proc.pid)
        config.write_text(config.read_text().replace("[red, green]", "[red, green, blue]"))
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: daemon.count("embedded 1 text(s) with the model") == 1, DEADLINE * 2)
        # released (again: the model may have gone idle already while the texts embedded)
        wait_for(lambda: daemon.count("released the video model after 2 s idle")
                 > daemon.count("video model loaded again"))
        wait_for(lambda: status("video model released (idle)"))
        assert not tensorflow_mapped(daemon.proc.pid)
        write_video(root / "blue.mp4", [(BLUE, 2)])
        wait_for(lambda: daemon.count("blue.mp4: blue") == 1, DEADLINE * 2)
        lines = list(daemon.lines)
        released = max(i for i, x in enumerate(lines) if "released the video model" in x)
        tagged = next(i for i, x in enumerate(lines) if "blue.mp4: blue" in x)
        assert any("video model loaded again" in x for x in lines[released:tagged]), lines
    finally:
        code = daemon.stop()
        listener.close()
    out = json.loads(daemon.proc.stdout.read().splitlines()[-1])
    assert out == {"code": 0, "modules": False, "mapped": False}, "".join(daemon.lines[-20:])
    assert code == 0


ONEDNN = """
import importlib.abc, json, os, sys
seen = {}

class Watch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" and "at import" not in seen:
            seen["at import"] = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
        return None

sys.meta_path.insert(0, Watch())
from autotag.model import tensorflow
tensorflow()
print(json.dumps(seen))
"""


@pytest.mark.parametrize("preset", [None, "0"])
def test_onednn_is_switched_on_before_tensorflows_import_unless_the_user_set_it(preset):
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if preset is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = preset
    done = subprocess.run([sys.executable, "-c", ONEDNN], capture_output=True, text=True,
                          timeout=300, check=True, env={**env, "PYTHONPATH": str(REPO)})
    assert json.loads(done.stdout.splitlines()[-1]) == {"at import": preset or "1"}
