"""`autotag quantize [DIR...]`: an INT8 video model, calibrated and validated on your own clips.

argv → config (the model on OpenVINO at f32) → app (cli.common.open_app) → clips (cli.common.walk;
watch.paths when no DIR) → windows (analysis.quantize, progress bar) → split by clip → NNCF →
validation against f32 → the report printed (a rich table, or JSON) and kept beside the cached
IR. Exit 0 when the INT8 model passed the bar (model.precision: int8 then runs it), 1 when it
was refused (autotag stays at f32), 2 for usage and startup errors.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from autotag.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    Context,
    UsageError,
    add_common,
    interactive,
    load_config,
    open_app,
    walk,
)
from autotag.cli.labelled import print_json, progress

log = logging.getLogger(__name__)



def build() -> argparse.ArgumentParser:
    from autotag.analysis.quantizing import (
        DEFAULT_WINDOWS,
        MIN_MEAN_COSINE,
        MIN_TAG_AGREEMENT,
        MIN_WINDOWS,
    )

    parser = argparse.ArgumentParser(
        prog="autotag quantize",
        description="Quantize the video model to INT8 with NNCF, calibrated on windows of your "
                    "own clips, and validate it on windows of other clips: the embeddings' "
                    "cosine to f32's and whether the vocabulary's tags stay the same. The "
                    f"INT8 model is kept only when the mean cosine is at least {MIN_MEAN_COSINE} "
                    f"and {MIN_TAG_AGREEMENT:.0%} of windows get f32's tags; then "
                    "'model.precision: int8' runs it. Needs pip install 'autotag[int8]'.")
    parser.add_argument("dirs", nargs="*", type=Path, metavar="DIR",
                        help="folders (or clips) to take windows from (default: watch.paths)")
    parser.add_argument("--windows", type=int, default=DEFAULT_WINDOWS, metavar="N",
                        help=f"windows to decode in all, a third of them held out for "
                             f"validation (default: {DEFAULT_WINDOWS}, at least {MIN_WINDOWS}; "
                             "each takes 4.8 MB of memory)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    add_common(parser)
    return parser


def run(args: argparse.Namespace, ctx: Context) -> int:
    from autotag.analysis import quantizing as q

    config = load_config(args)
    if args.windows < q.MIN_WINDOWS:
        raise UsageError(f"--windows {args.windows} is too few: quantizing needs at least "
                         f"{q.MIN_WINDOWS} (calibration and validation)")
    try:
        q.import_nncf()  # before the model loads and clips decode: a missing extra costs no wait
    except q.QuantizeError as exc:
        raise UsageError(str(exc)) from None
    dirs = args.dirs or list(config.watch.paths)
    if not dirs:
        raise UsageError("no clips to quantize on: pass folders of your clips (autotag "
                         "quantize DIR...) or set watch.paths in the config")
    clips, _ = walk(config, dirs)
    if not clips:
        raise UsageError("no clips found to quantize on; pass folders that hold your clips")
    configured = config.model.precision
    # the reference is f32 on OpenVINO whatever model.precision says: INT8 is made from its IR
    config = dataclasses.replace(config, model=dataclasses.replace(
        config.model, runtime="openvino", precision="f32"))
    app = open_app(config, ctx)
    try:
        f32_dir = getattr(app.embedder, "cache_path", None)
        if f32_dir is None:
            raise UsageError("the video model is not running on OpenVINO (see the warning "
                             "above); INT8 is made from OpenVINO's converted model")
        with progress("decoding", enabled=not args.json) as on_progress:
            windows = q.collect_windows(clips, args.windows, config.sampling,
                                        lambda _, done, wanted: on_progress(min(done, wanted),
                                                                            wanted))
        split = q.split_windows(windows)
        log.info("calibrating on %d windows of %d clips, validating on %d windows of %d clips",
                 q.Split.count(split.calibration), len(split.calibration),
                 q.Split.count(split.validation), len(split.validation))
        report = q.quantize(Path(f32_dir), split, app.vocabulary, config.tagging,
                            app.embedder.fingerprint, config.model.threads,
                            show_progress=interactive())
    except q.QuantizeError as exc:
        raise UsageError(str(exc)) from None
    finally:
        app.close()
    if args.json:
        print_json(report.to_json())
    else:
        print_report(report)
    if report.accepted:
        how = ("model.precision auto runs it from the next start (or the daemon that "
               "started this, now)" if configured == "auto" else
               "set model.precision: int8 (or auto) to run it")
        log.info("INT8 accepted: %s (report: %s)", how, report.path / q.REPORT)
        return EXIT_OK
    stays = ("autotag stays at f32" if configured != "int8" else
             "model.precision: int8 cannot run until a quantization passes; set "
             "model.precision: f32")
    log.error("INT8 refused: %s; %s (report: %s)", report.reason, stays,
              report.path / q.REPORT)
    return EXIT_FAILED


def print_report(report, console=None) -> None:
    """The figures against the bar, then the windows tagged differently (if any)."""
    from rich.console import Console
    from rich.table import Table

    from autotag.analysis import quantizing as q

    console = console or Console()
    f = report.figures
    table = Table(title=f"INT8 vs f32 on {f.windows} held-out windows of {f.clips} clips "
                        f"(calibrated on {report.calibration_windows} windows of "
                        f"{report.calibration_clips} clips, split by {report.split}; "
                        f"activation ranges: {report.chosen.ranges})", title_justify="left")
    for name, justify in (("measure", "left"), ("figure", "right"), ("bar", "right"),
                          ("", "left")):
        table.add_column(name, justify=justify)

    def row(name: str, figure: str, value: float | None = None, bar: float | None = None,
            shown: str = "") -> None:
        met = "" if bar is None else ("met" if value >= bar else "[red]NOT MET[/]")
        table.add_row(name, figure, shown, met)

    row("mean cosine to f32", f"{f.mean_cosine:.4f}", f.mean_cosine, q.MIN_MEAN_COSINE,
        f"≥ {q.MIN_MEAN_COSINE}")
    row("lowest cosine", f"{f.min_cosine:.4f}")
    bar = f"≥ {q.MIN_TAG_AGREEMENT:.0%}"
    row("first tag given as f32's", f"{f.top_tag_agreement:.1%} of windows", f.top_tag_agreement,
        q.MIN_TAG_AGREEMENT, bar)
    row("tags given as f32's", f"{f.tag_agreement:.1%} of windows", f.tag_agreement,
        q.MIN_TAG_AGREEMENT, bar)
    row("tags given as f32's, whole clips", f"{f.clip_tag_agreement:.1%} of {f.clips} clips")
    row("speed, side by side", f"{f.int8_windows_per_second:.2f} vs "
        f"{f.f32_windows_per_second:.2f} windows/s ({f.speedup:.2f}×)")
    if report.int8_bytes:
        row("weights", f"{size(report.int8_bytes)} vs {size(report.f32_bytes)}")
    for attempt in report.attempts:
        if attempt is not report.chosen:
            table.add_row(f"with {attempt.ranges} ranges first",
                          f"cosine {attempt.figures.mean_cosine:.4f}, first tag "
                          f"{attempt.figures.top_tag_agreement:.1%}, tags "
                          f"{attempt.figures.tag_agreement:.1%}", "", "refused")
    console.print(table)
    if f.examples:
        diff = Table(title="windows tagged differently", title_justify="left")
        for name in ("clip", "at", "f32", "int8"):
            diff.add_column(name)
        for e in f.examples:
            diff.add_row(Path(e["path"]).name, f"{e['start']:.1f} s",
                         ", ".join(e["f32"]) or "none", ", ".join(e["int8"]) or "none")
        console.print(diff)


def size(n: int) -> str:
    """Bytes as '9.3 MB' (or '224 B' for the test model's few weights)."""
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n} B"
