"""python -m autotag: the same as the autotag command."""

from autotag.cli import entry

entry()
