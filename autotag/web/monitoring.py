"""The daemon's status (as handed to the Library) + the store's counts → the status JSON, the
health check and Prometheus's /metrics.

What the daemon is doing comes only through Library.status: a daemon serving the app hands its
live snapshot, `autotag serve` reads the status file the daemon writes (autotag.status).
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from autotag.web import prometheus
from autotag.web.library import Library, library_of

RECENT = 12  # clips on the status page and the empty search page


def status_json(lib: Library) -> dict:
    """The daemon's status as it was handed (Library.status), with the model, the store's
    size and counts, recent clips and failures, and the vocabulary."""
    daemon = lib.status()
    counts = lib.store.counts()
    try:
        store_bytes = sum(os.path.getsize(p) for p in (
            lib.store.path, Path(f"{lib.store.path}-wal")) if os.path.exists(p))
    except OSError:
        store_bytes = 0
    model = lib.config.model
    return {
        "daemon": daemon,
        "model": {"handle": model.handle, "fingerprint": lib.model,
                  "runtime": getattr(lib.embedder, "runtime", None) or model.runtime,
                  "precision": daemon.get("model", {}).get("precision") or model.precision,
                  "resident": bool(getattr(lib.embedder, "resident", True))},
        "store": {"path": str(lib.store.path), "bytes": store_bytes,
                  "tagged": counts.get("tagged", 0), "failed": counts.get("failed", 0),
                  "indexed": len(lib.index)},
        "recent": [{"id": r.id, "path": r.where, "when": r.updated}
                   for r in lib.store.recent("tagged", RECENT)],
        "failures": [{"path": r.where, "reason": r.last_error, "attempts": r.attempts,
                      "when": r.updated} for r in lib.store.recent("failed", 50)],
        "vocabulary": list(lib.vocabulary.labels),
    }


def healthz(request: Request) -> Response:
    """Liveness: 200 with the daemon's state while the store answers, 503 when it does not."""
    lib = library_of(request)
    try:
        lib.store.last_change()
    except Exception as exc:  # noqa: BLE001 - any store fault is "unhealthy"
        return JSONResponse({"ok": False, "error": str(exc)}, status_code=503)
    return JSONResponse({"ok": True, "daemon": lib.status().get("state")})


def metrics_text(request: Request) -> Response:
    """Prometheus metrics: clips tagged and failed, queue, models loaded, search latency."""
    lib = library_of(request)
    daemon = lib.status()
    counts = daemon.get("counts", {})
    lines: list[str] = []
    lines += prometheus.sample("autotag_clips_tagged_total", "counter",
                            "clips tagged (or re-tagged from stored embeddings) by the daemon",
                            counts.get("tagged", 0) + counts.get("reused", 0))
    lines += prometheus.sample("autotag_clips_failed_total", "counter",
                            "clips the daemon could not tag", counts.get("failed", 0))
    lines += prometheus.sample("autotag_windows_embedded_total", "counter",
                            "windows the video model embedded", daemon.get("windows", 0))
    lines += prometheus.sample("autotag_queue_depth", "gauge", "clips waiting to be tagged",
                            daemon.get("queue", 0))
    lines += prometheus.sample("autotag_daemon_up", "gauge", "1 while a daemon is watching",
                            1 if daemon.get("state") in ("watching", "reloading") else 0)
    # per process: the daemon's model, and this web app's own when it runs apart (autotag
    # serve); a stopped daemon's last status says nothing of a model (daemon.status)
    lines += prometheus.sample("autotag_model_loaded", "gauge",
                            "1 while that process's video model is loaded",
                            1 if daemon.get("model", {}).get("resident") else 0,
                            {"process": "daemon"})
    if daemon.get("pid") != os.getpid():
        web_model = 1 if getattr(lib.embedder, "resident", True) else 0
        lines.append(f'autotag_model_loaded{{process="web"}} {web_model}')
    jobs = lib.jobs.snapshot()
    lines += prometheus.sample("autotag_outputs_pending", "gauge",
                            "clips this web app is still bringing up to date after a change",
                            jobs["total"] - jobs["done"] if jobs["state"] == "running" else 0)
    model = daemon.get("model", {})
    if model.get("precision"):  # issue 34: which precision runs (auto may change it)
        lines += prometheus.sample("autotag_model_precision", "gauge",
                                "1 for the precision the daemon's video model runs", 1,
                                {"precision": model["precision"]})
    lines += prometheus.sample("autotag_index_clips", "gauge", "clips in the search index",
                            len(lib.index))
    lines += lib.search_latency.lines("autotag_search_latency_seconds",
                                      "time to answer a search, text embedding included")
    return PlainTextResponse("\n".join(lines) + "\n",
                             media_type="text/plain; version=0.0.4; charset=utf-8")

