"""Tagged clip → keywords in an XMP sidecar (new, or merged into the user's) → atomic write.

Media managers each read a different keyword property first (Immich: digiKam's TagsList, then
Lightroom's hierarchicalSubject, then dc:subject), so all three are written:
    dc:subject             rdf:Bag  skiing
    lr:hierarchicalSubject rdf:Bag  Activity|skiing
    digiKam:TagsList       rdf:Seq  Activity/skiing
plus autotag's own namespace: the keywords it owns (see keywords.py) and every tag's score,
confidence and segments. Sidecar: `clip.mp4.xmp` or `clip.xmp`, whichever exists (both: the
first), else a new `clip.mp4.xmp`. A user's file is untrusted input: parsed with defusedxml (no
entities, no external references); a malformed one is reported and left untouched. Everything
else in it (other properties, namespaces and their prefixes, comments, the xpacket wrapper) is
kept.
"""

from __future__ import annotations

import io
import re
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from autotag.clip import Tagged
from autotag.outputs.base import OutputError, check_depth, stem_sharers, write_file
from autotag.outputs.keywords import merge

NS = {
    "x": "adobe:ns:meta/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "dc": "http://purl.org/dc/elements/1.1/",
    "lr": "http://ns.adobe.com/lightroom/1.0/",
    "digiKam": "http://www.digikam.org/ns/1.0/",
    "autotag": "https://github.com/autotag/autotag/ns/1.0/",
}
RDF = "{%s}" % NS["rdf"]
AT = "{%s}" % NS["autotag"]
# property → (container, how a label is written under xmp_root)
KEYWORDS = {
    "{%s}subject" % NS["dc"]: ("Bag", lambda root, label: label),
    "{%s}hierarchicalSubject" % NS["lr"]: ("Bag", lambda root, label: f"{root}|{label}"),
    "{%s}TagsList" % NS["digiKam"]: ("Seq", lambda root, label: f"{root}/{label}"),
}
CONTAINERS = {RDF + "Bag", RDF + "Seq", RDF + "Alt"}
OWNED = AT + "Owned"  # rdf:Bag of the bare labels autotag added
SCORES = AT + "Tags"  # rdf:Seq of {label, score, confidence, segments}
XPACKET_BEGIN = '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
XPACKET_END = '\n<?xpacket end="w"?>\n'
_register_lock = threading.Lock()  # ElementTree's prefix registry is global


def xmp_path(clip: Path) -> Path:
    """`<clip name>.xmp` (digiKam's and darktable's form), or an existing `<stem>.xmp`
    (Lightroom's) that belongs to this clip alone: a stem that other clips share
    (bikes.mp4, bikes.mkv) is never written, or one clip's tags would show for all."""
    own = clip.with_name(clip.name + ".xmp")
    stem = clip.with_suffix(".xmp")
    if own.exists() or not stem.exists() or len(stem_sharers(clip)) > 1:
        return own
    return stem


def autotags_alone(path: Path) -> bool:
    """The XMP holds nothing but what autotag writes (a new document: its keywords, all
    owned, and its scores): a file autotag made and no one has added to. Never raises."""
    try:
        text = path.read_text(encoding="utf-8")
        meta, _ = parse(text, path)
    except (OSError, UnicodeDecodeError, OutputError):
        return False
    if any(outside_root(text)) or len(meta) != 1:
        return False
    descriptions = list(meta.find(RDF + "RDF"))
    if len(descriptions) != 1 or descriptions[0].tag != RDF + "Description":
        return False
    description = descriptions[0]
    owned = set(_items(description.find(OWNED)))
    mine = {OWNED, SCORES, *KEYWORDS}
    if any(child.tag not in mine for child in description) or set(description.attrib) - {
            RDF + "about"}:
        return False
    # every keyword one of autotag's labels, in some root's form (xmp_root may have changed)
    return all(li.split("|")[-1].split("/")[-1] in owned or li in owned
               for prop in KEYWORDS for li in _items(description.find(prop)))


class Xmp:
    name = "xmp"

    def __init__(self, root: str) -> None:
        self.root = root

    def write(self, tagged: Tagged) -> Path:
        path = xmp_path(tagged.clip.source.path)
        if path.exists():
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise OutputError(f"cannot read {path.name}: {exc}; left untouched") from None
            tree, prefixes = parse(text, path)
            wrapped = "<?xpacket" in text
            outside = outside_root(text)
        else:
            tree, prefixes, wrapped, outside = new_document(), {}, True, ([], [])
        update(tree, tagged, self.root)
        return write_file(path, serialise(tree, prefixes, wrapped, outside))


def parse(text: str, path: Path) -> tuple[ET.Element, dict[str, str]]:
    """Parse safely, keeping comments, processing instructions and the file's prefixes."""
    try:
        prefixes = {}
        for _, (prefix, uri) in SafeET.iterparse(io.StringIO(text), events=("start-ns",),
                                                  forbid_dtd=True):
            prefixes.setdefault(prefix, uri)
        builder = ET.TreeBuilder(insert_comments=True, insert_pis=True)
        parser = SafeET.DefusedXMLParser(target=builder, forbid_dtd=True)
        parser.feed(text)
        root = parser.close()
    except DefusedXmlException:
        raise OutputError(f"{path.name} declares a DTD or entities, which autotag refuses "
                          "(XML bombs); left untouched") from None
    except (ET.ParseError, ValueError) as exc:
        raise OutputError(f"{path.name} is not valid XMP ({type(exc).__name__}: "
                          f"{str(exc)[:120]}); left untouched") from None
    check_depth(root, path)
    if root.tag == RDF + "RDF":  # a bare rdf:RDF without x:xmpmeta: wrap it
        meta = ET.Element("{%s}xmpmeta" % NS["x"])
        meta.append(root)
        root = meta
    if root.find(RDF + "RDF") is None:
        raise OutputError(f"{path.name} has no rdf:RDF element; left untouched")
    return root, prefixes


def outside_root(text: str) -> tuple[list[str], list[str]]:
    """The user's comments and processing instructions before and after the root element,
    which ElementTree drops (its tree has one root). The XML declaration and the xpacket
    wrapper are not among them: serialise writes its own."""
    before, pos = _misc(text, 0)
    root = re.match(r"<([^\s/>]+)", text[pos:])
    close = text.rfind(f"</{root.group(1)}") if root else -1
    if close < pos:  # a self-closing root: no epilogue worth keeping
        return before, []
    after, _ = _misc(text, text.find(">", close) + 1)
    return before, after


_MISC = re.compile(r"\s*(<!--.*?-->|<\?.*?\?>)", re.S)  # a comment or a PI, and whitespace


def _misc(text: str, pos: int) -> tuple[list[str], int]:
    """The comments and PIs (but the declaration and xpacket) from pos on, and where they end."""
    found = []
    while match := _MISC.match(text, pos):
        if not re.match(r"<\?(xml|xpacket)\b", match.group(1)):
            found.append(match.group(1))
        pos = match.end()
    return found, pos + len(text[pos:]) - len(text[pos:].lstrip())


def new_document() -> ET.Element:
    meta = ET.Element("{%s}xmpmeta" % NS["x"])
    rdf = ET.SubElement(meta, RDF + "RDF")
    ET.SubElement(rdf, RDF + "Description", {RDF + "about": ""})
    return meta


def update(meta: ET.Element, tagged: Tagged, root: str) -> None:
    rdf = meta.find(RDF + "RDF")
    descriptions = rdf.findall(RDF + "Description")
    if not descriptions:
        descriptions = [ET.SubElement(rdf, RDF + "Description", {RDF + "about": ""})]
    labels = [t.label for t in tagged.tags]
    owned_element, home = _find(descriptions, OWNED)
    owned = _items(owned_element)
    # Ownership is decided once per label, over all three properties: a label the user has in
    # any of them (Activity|red in Lightroom alone) is the user's, in every form, for good.
    # Deciding per property made autotag claim, and later delete, the user's Activity|red.
    items = {prop: _items(_find(descriptions, prop)[0]) for prop in KEYWORDS}
    present = [x for x in dict.fromkeys([*labels, *owned])
               if any(form(root, x) in items[prop] for prop, (_, form) in KEYWORDS.items())]
    ownership = merge(present, labels, owned)
    for prop, (kind, form) in KEYWORDS.items():
        element, where = _find(descriptions, prop)
        add = [form(root, x) for x in ownership.add]
        remove = {form(root, x) for x in ownership.remove}
        if element is None and not add:
            continue
        container = _container(where or descriptions[0], prop, kind, element)
        for li in list(container):
            if li.text in remove:
                container.remove(li)
        for keyword in add:
            ET.SubElement(container, RDF + "li").text = keyword
    _replace_bag(home or descriptions[0], OWNED, "Bag", list(ownership.owned))
    _write_scores(home or descriptions[0], tagged)


def _find(descriptions: list[ET.Element], prop: str) -> tuple[ET.Element | None,
                                                               ET.Element | None]:
    for description in descriptions:
        element = description.find(prop)
        if element is not None:
            return element, description
    return None, None


def _items(element: ET.Element | None) -> list[str]:
    if element is None:
        return []
    return [li.text or "" for li in element.iter(RDF + "li")]


def _container(description: ET.Element, prop: str, kind: str,
               element: ET.Element | None) -> ET.Element:
    if element is None:
        element = ET.SubElement(description, prop)
    container = next((c for c in element if c.tag in (RDF + "Bag", RDF + "Seq", RDF + "Alt")),
                     None)
    if container is None:
        container = ET.SubElement(element, RDF + kind)
    return container


def _replace_bag(description: ET.Element, prop: str, kind: str, values: list[str]) -> None:
    old = description.find(prop)
    if old is not None:
        description.remove(old)
    element = ET.SubElement(description, prop)
    container = ET.SubElement(element, RDF + kind)
    for value in values:
        ET.SubElement(container, RDF + "li").text = value


def _write_scores(description: ET.Element, tagged: Tagged) -> None:
    old = description.find(SCORES)
    if old is not None:
        description.remove(old)
    element = ET.SubElement(description, SCORES)
    seq = ET.SubElement(element, RDF + "Seq")
    for tag in tagged.tags:
        segments = " ".join(f"{s.start:.1f}-{s.end:.1f}" for s in tag.segments)
        li = ET.SubElement(seq, RDF + "li", {RDF + "parseType": "Resource"})
        ET.SubElement(li, AT + "label").text = tag.label
        ET.SubElement(li, AT + "score").text = f"{tag.score:.4f}"
        ET.SubElement(li, AT + "confidence").text = f"{tag.confidence:.4f}"
        ET.SubElement(li, AT + "segments").text = segments


def serialise(meta: ET.Element, prefixes: dict[str, str], wrapped: bool,
              outside: tuple[list[str], list[str]] = ([], [])) -> bytes:
    with _register_lock:
        for prefix, uri in {**NS, **prefixes}.items():
            if prefix and not re.match(r"ns\d+$", prefix):
                ET.register_namespace(prefix, uri)
        ET.indent(meta, space=" ")
        for container in meta.iter():
            if (container.tag in CONTAINERS and not len(container)
                    and not (container.text or "").strip()):
                container.text = None  # emptied by a merge: no blank keyword for readers
        body = ET.tostring(meta, encoding="unicode")
    before, after = outside
    body = "\n".join([*before, body, *after])
    text = (XPACKET_BEGIN + body + XPACKET_END) if wrapped else body + "\n"
    return text.encode("utf-8")
