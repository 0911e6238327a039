"""Tagged clip → `<tag>` elements in `clip.nfo` (Kodi and Jellyfin), merged like the XMP keywords.

A new file is a minimal `<movie>` (Kodi's root for a single video) holding only tags, so a
scraper still fills in the rest. An existing file keeps its root, elements, comments and the
user's tags; which tags are autotag's is recorded in an `<autotag owned="...">` element, which
Kodi and Jellyfin ignore. A malformed file is reported and left untouched.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from autotag.clip import Tagged
from autotag.outputs.base import OutputError, check_depth, write_file
from autotag.outputs.keywords import merge

OWNED_ELEMENT = "autotag"
SEPARATOR = "|"  # labels may contain commas


def nfo_path(clip: Path) -> Path:
    return clip.with_suffix(".nfo")


class Nfo:
    name = "nfo"

    def write(self, tagged: Tagged) -> Path:
        path = nfo_path(tagged.clip.source.path)
        root = self._read(path) if path.exists() else ET.Element("movie")
        marker = root.find(OWNED_ELEMENT)
        owned = [x for x in (marker.get("owned", "") if marker is not None else "").split(
            SEPARATOR) if x]
        present = [e.text or "" for e in root.findall("tag")]
        change = merge(present, [t.label for t in tagged.tags], owned)
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
