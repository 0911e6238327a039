"""Every error class autotag defines derives from AutotagError, so a caller reporting autotag's
own failures catches one class, and anything else that escapes is a bug with its traceback."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

from autotag.errors import AutotagError

PACKAGE = Path(__file__).resolve().parent.parent / "autotag"
# raised and caught inside one module to unwind a thread, never reported to a person
INTERNAL = {"_Closing", "StaleIndex"}


def _error_classes():
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and node.name not in INTERNAL and any(
                    getattr(b, "id", getattr(b, "attr", "")).endswith(("Error", "Exception"))
                    or getattr(b, "id", "") in ("NotQuantized", "CannotEdit", "IndexUnavailable",
                                                "ModelFailure")
                    for b in node.bases):
                module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
                yield module, node.name


def test_every_error_class_derives_from_autotag_error():
    found = list(_error_classes())
    assert len(found) >= 18
    for module, name in found:
        cls = getattr(importlib.import_module(module), name)
        assert issubclass(cls, AutotagError), f"{module}.{name}"
