"""plan, index, uptodate (each measure()) → one table, this checkout beside --before's → JSON.

    python -m benchmarks.scale --before /tmp/scale-before       # the issue's sizes: ~1 hour
    python -m benchmarks.scale --quick                          # small sizes: a minute or two
    python -m benchmarks.scale --only index --before /tmp/scale-before

--before is a checkout of the code to compare with (`git worktree add /tmp/scale-before
44dee5f`). Results go to benchmarks/results/scale-<time>.json with the CPU and its flags.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from pathlib import Path

from benchmarks.serve import machine

PARTS = ("plan", "index", "uptodate")
RESULTS = Path(__file__).resolve().parents[1] / "results"


def table(rows: list[dict]) -> str:
    def cell(value) -> str:
        if value is None:
            return "–"
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"

    width = max(len(r["metric"]) for r in rows)
    lines = [f"{'':{width}}  {'before':>12}  {'after':>12}  unit"]
    lines += [f"{r['metric']:{width}}  {cell(r['before']):>12}  {cell(r['after']):>12}  "
              f"{r['unit']}" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, metavar="CHECKOUT",
                        help="a checkout of the code to compare with (a git worktree)")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a quick look")
    parser.add_argument("--only", choices=PARTS, action="append",
                        help="run only this part (repeat for several)")
    args = parser.parse_args(argv)
    out = {"machine": machine(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
           "quick": args.quick, "before": str(args.before) if args.before else None}
    for part in args.only or PARTS:
        module = importlib.import_module(f"benchmarks.scale.{part}")
        print(f"== {part}", file=sys.stderr, flush=True)
        figures = module.measure(quick=args.quick, before=args.before)
        out[part] = figures
        print(f"\n{part}\n{table(figures['rows'])}")
        for note in figures.get("notes", ()):
            print(f"  note: {note}")
    out["loadavg_end"] = list(os.getloadavg())
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"scale-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(out, indent=1, default=str))
    print(f"\n{out['machine']['cpu']}; flags: {' '.join(out['machine']['notable_flags'])}; "
          f"load {out['machine']['loadavg_start'][0]:.1f} → {out['loadavg_end'][0]:.1f}\n"
          f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
