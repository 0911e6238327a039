"""The one base of every error autotag raises on purpose.

A caller that reports autotag's own failures (a command's one-line exit, the daemon's start-up,
the web app's 4xx) catches `AutotagError`, not a union of each room's classes; anything else
that escapes is a bug and keeps its traceback. Each room still names its own subclass
(ConfigError, ModelError, StoreError, DecodeError...), so a caller that can act on one kind
catches that one.
"""

from __future__ import annotations


class AutotagError(Exception):
    """An error of autotag's own, with a message fit for one line."""
