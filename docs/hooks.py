"""MkDocs hooks: reference pages generated from the code that already states them.

A page holds a marker `<!-- generated: NAME -->`; on_page_markdown replaces it with text made
from the code (config.yaml's keys and comments, the argparse parsers, the sidecar's JSON Schema,
the web app's routes, the benchmark results committed under docs/benchmarks/), so the reference
cannot drift from what autotag does. `mkdocs build --strict` runs in the test suite.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARKER = re.compile(r"<!-- generated: ([a-z-]+) -->")
KEY = re.compile(r"^(?P<indent> *)(?P<key>[a-z_0-9]+):(?P<value>[^#]*?)\s*(?:#\s?(?P<comment>.*))?$")


def on_page_markdown(markdown: str, **_) -> str:
    return MARKER.sub(lambda m: GENERATORS[m.group(1)](), markdown)


def _config() -> str:
    """config.yaml → a table: each key's dotted name, default and its comments."""
    rows, path, pending, last = [], [], [], None
    for line in (ROOT / "config.yaml").read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            if last is not None and len(line) - len(line.lstrip()) >= last[0]:
                last[1].append(stripped.lstrip("# "))  # a continued inline comment
            else:
                pending.append(stripped.lstrip("# "))
                last = None
            continue
        match = KEY.match(line)
        if not match:
            pending, last = [], None
            continue
        depth = len(match["indent"]) // 2
        path = path[:depth] + [match["key"]]
        notes = pending + ([match["comment"]] if match["comment"] else [])
        value = match["value"].strip()
        rows.append((".".join(path), value, notes))
        pending = []
        last = (line.index("#") if match["comment"] else len(line), notes)
    out = ["| key | default | what it does |", "|---|---|---|"]
    for key, value, notes in rows:
        text = " ".join(n for n in notes if n).replace("|", "\\|").replace("<", "&lt;")
        out.append(f"| `{key}` | `{value}` | {text} |" if value else f"| **`{key}`** | | {text} |")
    return "\n".join(out)


def _commands() -> str:
    """Every command's argparse help, as `autotag COMMAND --help` prints it."""
    os.environ["COLUMNS"] = "100"
    from autotag.cli import COMMANDS

    parts = []
    for name, module in COMMANDS.items():
        title = "autotag [--once] DIR..." if name == "tag" else f"autotag {name}"
        help_text = module.build().format_help()
        parts.append(f"## `{title}`\n\n```text\n{help_text}```\n")
    return "\n".join(parts)


def _schema_rows(schema: dict, defs: dict, prefix: str, out: list[str], depth: int) -> None:
    for name, prop in schema.get("properties", {}).items():
        ref = prop.get("$ref") or prop.get("items", {}).get("$ref")
        target = defs.get(ref.rsplit("/", 1)[-1], {}) if ref else prop
        kind = prop.get("type", target.get("type", ""))
        kind = "/".join(kind) if isinstance(kind, list) else kind
        text = (prop.get("description") or target.get("description") or "").replace("|", "\\|")
        out.append(f"| `{prefix}{name}` | {kind} | {text} |")
        if depth < 2 and target.get("properties"):
            suffix = "[]." if prop.get("type") == "array" else "."
            _schema_rows(target, defs, f"{prefix}{name}{suffix}", out, depth + 1)


def _sidecar_schema() -> str:
    """The sidecar's JSON Schema: a table of its fields, then the schema itself."""
    text = (ROOT / "autotag/schemas/sidecar.schema.json").read_text()
    schema = json.loads(text)
    out = [schema.get("description", ""), "", "| field | type | meaning |", "|---|---|---|"]
    _schema_rows(schema, schema.get("$defs", {}), "", out, 0)
    out += ["", '??? note "The whole schema (autotag/schemas/sidecar.schema.json)"', "",
            "    ```json"] + ["    " + line for line in text.splitlines()] + ["    ```"]
    return "\n".join(out)


def _http() -> str:
    """The web app's routes: path, methods and the first line of each endpoint's docstring."""
    from types import SimpleNamespace

    from starlette.routing import Mount, Route

    from autotag.config import load_config
    from autotag.web.routes import create_app

    app = create_app(SimpleNamespace(config=load_config(ROOT / "config.yaml")))
    while not hasattr(app, "routes"):  # through the security middleware to the router
        app = app.app
    out = ["| method | path | what it does |", "|---|---|---|"]
    for route in app.routes:
        if isinstance(route, Mount):
            out.append(f"| GET | `{route.path}/…` | static files (CSS, scripts) |")
        elif isinstance(route, Route):
            methods = ", ".join(sorted(set(route.methods or ["GET"]) - {"HEAD"}))
            doc = (route.endpoint.__doc__ or "").strip().split("\n\n")[0]
            doc = " ".join(doc.split()).replace("|", "\\|")  # one line of a table row
            out.append(f"| {methods} | `{route.path}` | {doc} |")
    return "\n".join(out)


def _benchmarks() -> str:
    """The benchmark results committed under docs/benchmarks/*.md, newest first."""
    folder = ROOT / "docs/benchmarks"
    parts = []
    for path in sorted(folder.glob("*.md"), reverse=True):
        parts.append(path.read_text())
    return "\n\n".join(parts) or "No results committed yet."


GENERATORS = {
    "config": _config,
    "commands": _commands,
    "sidecar-schema": _sidecar_schema,
    "http": _http,
    "benchmarks": _benchmarks,
}
