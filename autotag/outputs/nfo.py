"""Tagged clip → `<tag>` elements in `clip.nfo` (Kodi and Jellyfin), merged like the XMP keywords.

A new file is a minimal `<movie>` (Kodi's root for a single video) holding only tags, so a
scraper still fills in the rest. An existing file keeps its root, elements, comments and the
user's tags; which tags are autotag's is recorded in an `<autotag owned="...">` element, which
Kodi and Jellyfin ignore. A malformed file is reported and left untouched.

Kodi reads `<VideoFileName>.nfo` (the clip's name with .nfo for its extension) and Jellyfin
`<filename of the movie>.nfo`: bikes.mp4 and bikes.mkv in one folder both read bikes.nfo, and
whatever it says shows for both. So an NFO is written only for a clip that owns its stem; when
two or more clips share it, none of their tags go into it (tags autotag wrote there before are
taken out, the user's kept), and one line names the file and the clips.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from pathlib import Path

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from autotag.clip import Tagged
from autotag.files import show
from autotag.outputs.base import OutputError, check_depth, stem_sharers, write_file
from autotag.outputs.keywords import merge

log = logging.getLogger(__name__)

OWNED_ELEMENT = "autotag"
SEPARATOR = "|"  # labels may contain commas


def nfo_path(clip: Path) -> Path:
    return clip.with_suffix(".nfo")


class Nfo:
    name = "nfo"

    def __init__(self) -> None:
        self._said: set[tuple[Path, ...]] = set()  # shared names reported (once a process)

    def write(self, tagged: Tagged) -> Path | None:
        clip = tagged.clip.source.path
        path = nfo_path(clip)
        sharers = stem_sharers(clip)
        if len(sharers) > 1:
            return self._shared(path, sharers)
        return self._merge(path, [t.label for t in tagged.tags])

    def _shared(self, path: Path, sharers: list[Path]) -> None:
        """No clip's tags in an NFO that Kodi and Jellyfin show for several clips."""
        key = (path, *sharers)
        if key not in self._said:
            self._said.add(key)
            log.warning("%s would be the NFO of %d clips (%s): Kodi and Jellyfin show one NFO "
                        "for all of them, so autotag writes none of their tags into it; give "
                        "each clip its own name to have its NFO", show(path), len(sharers),
                        ", ".join(p.name for p in sharers))
        if path.exists() and autotags_alone(path):
            path.unlink(missing_ok=True)  # autotag's file, made for one of them: gone
        elif path.exists() and owned_tags(self._read(path)):
            self._merge(path, [])  # what autotag wrote there for one of them comes out

    def _merge(self, path: Path, labels: list[str]) -> Path:
        root = self._read(path) if path.exists() else ET.Element("movie")
        marker = root.find(OWNED_ELEMENT)
        owned = owned_tags(root)
        present = [e.text or "" for e in root.findall("tag")]
        change = merge(present, labels, owned)
        for element in root.findall("tag"):
            if element.text in change.remove:
                root.remove(element)
        for label in change.add:
            ET.SubElement(root, "tag").text = label
        if marker is None:
            marker = ET.SubElement(root, OWNED_ELEMENT)
        marker.set("owned", SEPARATOR.join(change.owned))
        ET.indent(root, space="  ")
        body = ET.tostring(root, encoding="unicode")
        text = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n' + body + "\n"
        return write_file(path, text.encode("utf-8"))

    @staticmethod
    def _read(path: Path) -> ET.Element:
        return read_nfo(path)


def owned_tags(root: ET.Element) -> list[str]:
    """The labels autotag added to this NFO (its marker's record)."""
    marker = root.find(OWNED_ELEMENT)
    return [x for x in (marker.get("owned", "") if marker is not None else "").split(
        SEPARATOR) if x]


def autotags_alone(path: Path) -> bool:
    """The NFO holds nothing but what autotag wrote (its marker and its own tags): a file
    autotag made, which no person or scraper has added to since. Never raises."""
    try:
        root = read_nfo(path)
    except OutputError:
        return False
    if root.tag != "movie" or root.find(OWNED_ELEMENT) is None or root.attrib:
        return False
    owned = set(owned_tags(root))
    for child in root:
        if child.tag == OWNED_ELEMENT:
            continue
        if child.tag != "tag" or child.text not in owned or len(child) or child.attrib:
            return False  # an element, comment or tag of someone else's
    return True


def read_nfo(path: Path) -> ET.Element:
    """The NFO's root element; OutputError when it cannot be read or is not XML."""
    try:
        parser = SafeET.DefusedXMLParser(target=ET.TreeBuilder(insert_comments=True),
                                         forbid_dtd=True)
        parser.feed(path.read_bytes())
        root = parser.close()
    # LookupError: an encoding="..." Python does not know (found by tests/test_fuzz.py)
    except (OSError, ET.ParseError, DefusedXmlException, ValueError, LookupError) as exc:
        raise OutputError(f"{path.name} is not valid XML ({type(exc).__name__}); "
                          "left untouched") from None
    check_depth(root, path)
    return root
