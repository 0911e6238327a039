"""Merging autotag's keywords into a list a user also edits, without undoing the user's edits.

autotag remembers which keywords it added (`owned`). On each run:
- an owned keyword no longer wanted is removed (autotag's own stale tag);
- an owned keyword still wanted is left as it is: if the user deleted it, it stays deleted;
- a wanted keyword not owned is added unless already there; one that was there already is the
  user's, so autotag never claims it and never removes it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Merge:
    add: tuple[str, ...]  # keywords to append
    remove: frozenset[str]  # keywords to take out
    owned: tuple[str, ...]  # what autotag owns after the merge


def merge(present: Iterable[str], wanted: Iterable[str], owned: Iterable[str]) -> Merge:
    present_set = set(present)
    wanted = list(dict.fromkeys(wanted))
    owned_set = set(owned)
    remove = frozenset(k for k in owned_set - set(wanted) if k in present_set)
    add = tuple(k for k in wanted if k not in owned_set and k not in present_set)
    still = tuple(k for k in wanted if k in owned_set)
    return Merge(add, remove, tuple(dict.fromkeys(still + add)))
