"""Property-based fuzzing of the two parsers that read what users wrote: config.yaml, and the XMP
and NFO sidecars autotag merges its keywords into.

config: any text or bytes → a Config or a ConfigError (one line), never another exception.
XMP/NFO: any existing sidecar → either a merge in which every element, attribute, text and
keyword the user had is still there, or OutputError with the file left byte-identical.
Example counts are modest so the default suite stays fast; HYPOTHESIS_PROFILE=fuzz runs more.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from autotag.config import Config, ConfigError, load_config, parse_config
from autotag.outputs import OutputError
from autotag.outputs.nfo import Nfo
from autotag.outputs.xmp import NS, Xmp
from tests.helpers import tagged

settings.register_profile("default", max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("fuzz", max_examples=2000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
PROFILE = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# -- config -----------------------------------------------------------------------------------

SECTIONS = {
    "model": ["handle", "batch_size", "threads"],
    "tagging": ["top_k", "min_score", "temperature", "thresholds"],
    "sampling": ["max_windows", "max_pixels", "decode_workers", "decode_timeout"],
    "outputs": ["sidecars", "sidecar_dir", "log", "previews", "xmp", "xmp_root", "nfo"],
    "hooks": ["on_tagged", "timeout"],
    "watch": ["paths", "stability_seconds", "rescan_seconds", "polling", "polling_seconds",
              "ignore"],
    "state": ["path"],
}
KEYS = sorted({k for keys in SECTIONS.values() for k in keys} | set(SECTIONS) | {"vocabulary"})

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-3, 3),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.sampled_from(["~", "~nobody-here/x", "a\0b", "/", ".", "..", "red",
                                           "x: y", "[", "'", "|", "\t", "~/x"]),
)
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=6), st.integers(-2, 2), st.booleans())
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)), max_leaves=12)
sections = st.fixed_dictionaries({}, optional={
    **{name: st.one_of(values, st.dictionaries(st.sampled_from(sub + ["nope"]), values,
                                               max_size=4))
       for name, sub in SECTIONS.items()},
    "vocabulary": st.one_of(values, st.lists(st.one_of(
        st.text(max_size=8), st.dictionaries(st.text(max_size=8), values, max_size=1)),
        max_size=4)),
})
documents = st.one_of(sections, st.dictionaries(keys, values, max_size=5))


def _parses_or_config_error(text: str, base: Path) -> None:
    try:
        config = parse_config(text, base=base)
    except ConfigError as exc:
        message = str(exc)
        assert message and "\n" not in message and "Traceback" not in message
        return
    assert isinstance(config, Config) and config.vocabulary
    assert all(label.isprintable() for label in config.labels)
    for section in (config.model, config.tagging, config.sampling, config.watch,
                    config.hooks):
        for value in vars(section).values():
            if isinstance(value, float):
                assert math.isfinite(value), config


@settings(PROFILE)
@given(document=documents)
@example(document={"vocabulary": ["a"], "state": {"path": "~nobody-here/x"}})
@example(document={"vocabulary": ["a"], "model": {"handle": "a\0b"}})
@example(document={"vocabulary": ["a"], "tagging": {"min_score": math.nan}})
@example(document={"vocabulary": ["a"], "watch": {"polling_seconds": math.inf}})
@example(document={"vocabulary": ["a"], "hooks": {"timeout": 10 ** 400}})
@example(document={"vocabulary": [{"0\n": 5}]})  # CI found it: a newline in the message
@example(document={"vocabulary": ["a"], "watch": {"a\nb": 1}})  # the same, in a key
def test_config_from_any_yaml_mapping_is_a_config_or_a_config_error(document, tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    _parses_or_config_error(yaml.safe_dump(document, allow_unicode=True), base)


@settings(PROFILE)
@given(text=st.one_of(st.text(max_size=200),
                      st.text(alphabet="{}[]:,-?&*!|>'\"# \n\tvocabulary0.~e", max_size=120)))
@example(text="[" * 5000)
@example(text="vocabulary: [a]\nx: 2001-13-45")
@example(text="vocabulary: [a]\nhooks: {timeout: 1" + "0" * 5000 + "}")
@example(text="5")
def test_config_from_any_text_is_a_config_or_a_config_error(text, tmp_path_factory):
    _parses_or_config_error(text, tmp_path_factory.getbasetemp())


@settings(PROFILE)
@given(data=st.binary(max_size=200))
@example(data=b"\xff\xfevocabulary: [a]\n")
def test_config_file_of_any_bytes_is_a_config_or_a_config_error(data):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.yaml"
        path.write_bytes(data)
        try:
            load_config(path)
        except ConfigError as exc:
            assert "\n" not in str(exc)


# -- XMP and NFO ------------------------------------------------------------------------------

# text an XML document can hold as is (no control characters, no lone surrogates, not U+FFFE or
# U+FFFF, which XML 1.0's Char production leaves out too; a CR would be normalised to LF by any
# parser, so it is left out of the comparison)
xml_text = st.text(st.characters(blacklist_categories=("Cs", "Cc"),
                                 blacklist_characters="\r\ufffe\uffff"), max_size=12)
names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.-]{0,7}", fullmatch=True).filter(
    lambda n: not n.lower().startswith("xml"))
LABELS = ["red", "green", "blue", "sea"]
keywords = st.one_of(st.sampled_from(LABELS + ["Activity|red", "Activity/green", "holiday"]),
                     xml_text)
USER_NS = "urn:user:test"


@st.composite
def user_elements(draw, depth: int = 2) -> str:
    """A user's own element (in their namespace): attributes, text, children, comments."""
    name = draw(names)
    attrs = "".join(f" u:{k}={quoteattr(v)}" for k, v in draw(
        st.dictionaries(names, xml_text, max_size=2)).items())
    parts = [escape(draw(xml_text))]
    if depth:
        for _ in range(draw(st.integers(0, 2))):
            parts.append(draw(user_elements(depth - 1)))
    if draw(st.booleans()):
        parts.append(f"<!--{draw(xml_text).replace('-', '_')}-->")
    return f"<u:{name}{attrs}>{''.join(parts)}</u:{name}>"


def _bag(prop: str, kind: str, items: list[str]) -> str:
    lis = "".join(f"<rdf:li>{escape(k)}</rdf:li>" for k in items)
    return f"<{prop}><rdf:{kind}>{lis}</rdf:{kind}></{prop}>"


@st.composite
def xmp_documents(draw) -> str:
    """A user's XMP sidecar: keyword bags (some, all or none), their own properties."""
    props = []
    for prop, kind in (("dc:subject", "Bag"), ("lr:hierarchicalSubject", "Bag"),
                       ("digiKam:TagsList", "Seq")):
        if draw(st.booleans()):
            props.append(_bag(prop, kind, draw(st.lists(keywords, max_size=4))))
    props += draw(st.lists(user_elements(), max_size=3))
    props = draw(st.permutations(props))
    descriptions = [f'<rdf:Description rdf:about="">{"".join(props)}</rdf:Description>']
    if draw(st.booleans()):
        descriptions.append(f'<rdf:Description rdf:about="">{draw(user_elements())}'
                            "</rdf:Description>")
    xmlns = " ".join(f'xmlns:{p}="{NS[p]}"' for p in ("x", "rdf", "dc", "lr", "digiKam"))
    body = (f'<x:xmpmeta {xmlns} xmlns:u="{USER_NS}"><rdf:RDF>{"".join(descriptions)}'
            "</rdf:RDF></x:xmpmeta>")
    if draw(st.booleans()):
        body = f'<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>{body}<?xpacket end="w"?>'
    return body


def _mutate(data: st.DataObject, text: str) -> str:
    """Delete, duplicate or insert a few characters: mostly malformed, sometimes still valid."""
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(text)))
        j = data.draw(st.integers(i, min(len(text), i + 8)))
        text = text[:i] + data.draw(st.sampled_from(["", text[i:j] * 2, "<", "&", "\0", "é",
                                                    "</x>", '"']), label="edit") + text[j:]
    return text


def _facts(root: ET.Element) -> list[tuple]:
    """Every element the user wrote, as (tag, attributes, stripped text), in document order;
    autotag's own namespace excluded. The rdf:li of a keyword counts with its text."""
    out = []
    for element in root.iter():
        if not isinstance(element.tag, str) or element.tag.startswith("{%s}" % NS["autotag"]):
            continue
        if element.tag == "autotag":  # NFO: autotag's ownership marker
            continue
        out.append((element.tag, tuple(sorted(element.attrib.items())),
                    (element.text or "").strip()))
    return out


def _survives(before: list[tuple], after: list[tuple]) -> list[tuple]:
    """The user's facts missing after the merge (a multiset difference)."""
    remaining = list(after)
    missing = []
    for fact in before:
        if fact in remaining:
            remaining.remove(fact)
        elif fact[0].endswith("}Bag") or fact[0].endswith("}Seq"):
            continue  # a container's whitespace text is re-indented; its items are checked
        else:
            missing.append(fact)
    return missing


def _comments(root: ET.Element) -> list[str]:
    return [c.text for c in root.iter() if c.tag is ET.Comment]


def _merge_twice(write, path: Path, parse, labels_1: list[str], labels_2: list[str]):
    """Write twice (the vocabulary changed between runs): the user's data must survive both,
    the first run's stale keywords go, the second's are there. Returns the final root or None
    if the file was refused as malformed (then it must be byte-identical)."""
    original = path.read_bytes()
    try:
        before = parse(original)
    except (ET.ParseError, LookupError):  # LookupError: encoding="TF-8"
        before = None
    try:
        write(tagged(path.with_suffix(".mp4"), *labels_1))
    except OutputError as exc:
        assert "left untouched" in str(exc) or "not valid" in str(exc), exc
        assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(original).digest()
        return None, None
    assert before is not None, "a document no parser accepts was merged into"
    write(tagged(path.with_suffix(".mp4"), *labels_2))
    after = parse(path.read_bytes())
    assert _survives(_facts(before), _facts(after)) == []
    assert sorted(_comments(before)) == sorted(c for c in _comments(after))
    return before, after


def _parse_xml(data: bytes) -> ET.Element:
    """The reference reading, comments kept (ElementTree's default drops them)."""
    parser = ET.XMLParser(target=ET.TreeBuilder(insert_comments=True))
    parser.feed(data)
    return parser.close()


def _bag_items(root: ET.Element, prop: str) -> list[str]:
    rdf = "{%s}" % NS["rdf"]
    return [li.text or "" for e in root.iter(prop) for li in e.iter(rdf + "li")]


labels_lists = st.lists(st.sampled_from(LABELS), max_size=3, unique=True)


LIGHTROOM_ONLY = (  # the user's keyword in one property only: autotag once claimed, then deleted it
    f'<x:xmpmeta xmlns:x="{NS["x"]}"><rdf:RDF xmlns:rdf="{NS["rdf"]}"><rdf:Description '
    f'rdf:about="" xmlns:lr="{NS["lr"]}"><lr:hierarchicalSubject><rdf:Bag><rdf:li>Activity|red'
    "</rdf:li></rdf:Bag></lr:hierarchicalSubject></rdf:Description></rdf:RDF></x:xmpmeta>")


@settings(PROFILE)
@given(document=xmp_documents(), labels_1=labels_lists, labels_2=labels_lists)
@example(document=LIGHTROOM_ONLY, labels_1=["red"], labels_2=["green"])
def test_xmp_merge_keeps_every_user_element_and_keyword(document, labels_1, labels_2):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "clip.mp4.xmp"
        path.write_text(document, encoding="utf-8")
        before, after = _merge_twice(Xmp("Activity").write, path, _parse_xml, labels_1, labels_2)
    assert before is not None, "a well-formed XMP document was refused"
    subject = "{%s}subject" % NS["dc"]
    user = set(_bag_items(before, subject))
    final = set(_bag_items(after, subject))
    # a label the user has in any form (Activity|red in Lightroom alone) is theirs: left alone
    users_labels = user | {x.split("|", 1)[1] for x in _bag_items(
        before, "{%s}hierarchicalSubject" % NS["lr"]) if x.startswith("Activity|")} | {
        x.split("/", 1)[1] for x in _bag_items(before, "{%s}TagsList" % NS["digiKam"])
        if x.startswith("Activity/")}
    assert user <= final  # never a user's keyword removed
    assert set(labels_2) - users_labels <= final  # the current tags are there
    assert final - user - set(labels_2) == set()  # the first run's stale tags are gone


@settings(PROFILE)
@given(document=xmp_documents(), data=st.data())
def test_xmp_merge_of_a_damaged_file_merges_cleanly_or_leaves_it_untouched(document, data):
    damaged = _mutate(data, document)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "clip.mp4.xmp"
        path.write_bytes(damaged.encode("utf-8", "surrogatepass"))
        _merge_twice(Xmp("Activity").write, path, _parse_xml, ["red"], ["green"])
        assert [p.name for p in Path(folder).iterdir()] == ["clip.mp4.xmp"]  # no temp files


@settings(PROFILE)
@given(data=st.binary(max_size=300))
@example(data=b"\xff\xfe<x/>")
@example(data=b'<?xml version="1.0" encoding="TF-8"?>\n<movie></movie>')
@example(data=b'<!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>')
def test_xmp_and_nfo_of_any_bytes_merge_or_are_left_untouched(data):
    with tempfile.TemporaryDirectory() as folder:
        for name, writer in (("clip.mp4.xmp", Xmp("Activity")), ("clip.nfo", Nfo())):
            path = Path(folder) / name
            path.write_bytes(data)
            _merge_twice(writer.write, path, _parse_xml, ["red"], ["green"])


@st.composite
def nfo_documents(draw) -> str:
    """A Kodi/Jellyfin NFO: a root, the user's <tag>s, other elements (with their own <tag>
    children further down, which are not keywords), comments."""
    root = draw(st.sampled_from(["movie", "tvshow", "episodedetails", "musicvideo"]))
    children = [f"<tag>{escape(k)}</tag>" for k in draw(st.lists(keywords, max_size=4))]
    for element in draw(st.lists(user_elements(), max_size=3)):
        children.append(element.replace("u:", "").replace(f' xmlns:u="{USER_NS}"', ""))
    if draw(st.booleans()):
        children.append(f"<!--{draw(xml_text).replace('-', '_')}-->")
    if draw(st.booleans()):
        children.append("<actor><name>A</name><tag>not a keyword</tag></actor>")
    children = draw(st.permutations(children))
    head = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n' if draw(
        st.booleans()) else ""
    return f"{head}<{root}>{''.join(children)}</{root}>"


@settings(PROFILE)
@given(document=nfo_documents(), labels_1=labels_lists, labels_2=labels_lists)
def test_nfo_merge_keeps_every_user_element_and_tag(document, labels_1, labels_2):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "clip.nfo"
        path.write_text(document, encoding="utf-8")
        before, after = _merge_twice(Nfo().write, path, _parse_xml, labels_1, labels_2)
    assert before is not None, "a well-formed NFO was refused"
    assert after.tag == before.tag
    user = [e.text or "" for e in before.findall("tag")]
    final = [e.text or "" for e in after.findall("tag")]
    assert set(user) <= set(final) and set(labels_2) <= set(final)
    assert set(final) - set(user) - set(labels_2) == set()


@settings(PROFILE)
@given(document=nfo_documents(), data=st.data())
def test_nfo_merge_of_a_damaged_file_merges_cleanly_or_leaves_it_untouched(document, data):
    damaged = _mutate(data, document)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "clip.nfo"
        path.write_bytes(damaged.encode("utf-8", "surrogatepass"))
        _merge_twice(Nfo().write, path, _parse_xml, ["red"], ["green"])
        assert [p.name for p in Path(folder).iterdir()] == ["clip.nfo"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12)


@settings(PROFILE)
@given(data=st.dictionaries(st.text(), json_values, max_size=8))
def test_sidecar_text_reads_back_as_the_same_json_a_list_item_per_line(data):
    from autotag.outputs.sidecar import dumps

    text = dumps(data)
    assert json.loads(text) == data
    lines = text.rstrip("\n").split("\n")  # not splitlines(): U+2028 in a name is one line
    expected = 2 + sum(len(v) + 2 if isinstance(v, list) and v else 1 for v in data.values())
    assert len(lines) == (expected if data else 1)
