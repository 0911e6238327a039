"""XMP and NFO sidecars merged into users' files, read back by exiftool; the on_tagged hook."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from autotag.clip import Tag, Tagged
from autotag.config import parse_config
from autotag.outputs import OutputError, build_outputs, clip_outputs
from autotag.outputs.hook import Hook
from autotag.outputs.nfo import Nfo
from autotag.outputs.xmp import Xmp, xmp_path
from tests.helpers import tagged

EXIFTOOL = shutil.which("exiftool")
needs_exiftool = pytest.mark.skipif(EXIFTOOL is None and not os.environ.get("CI"),
                                    reason="exiftool not installed (CI installs it)")


def exif(path: Path) -> dict:
    done = subprocess.run([EXIFTOOL or "exiftool", "-j", "-G1", "-struct", "-XMP:all", str(path)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout)[0]


def as_list(value) -> list[str]:
    return value if isinstance(value, list) else [value]


DARKTABLE = """<?xml version="1.0" encoding="UTF-8"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="XMP Core 4.4.0-Exiv2">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:darktable="http://darktable.sf.net/"
    xmp:Rating="4"
    darktable:xmp_version="5"
    darktable:import_timestamp="63848215233">
   <dc:subject xmlns:dc="http://purl.org/dc/elements/1.1/">
    <rdf:Bag><rdf:li>holiday</rdf:li></rdf:Bag>
   </dc:subject>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
"""

EXIFTOOL_STYLE = """<?xpacket begin='\ufeff' id='W5M0MpCehiHzreSzNTczkc9d'?>
<x:xmpmeta xmlns:x='adobe:ns:meta/' x:xmptk='Image::ExifTool 12.57'>
<rdf:RDF xmlns:rdf='http://www.w3.org/1999/02/22-rdf-syntax-ns#'>
 <rdf:Description rdf:about='' xmlns:dc='http://purl.org/dc/elements/1.1/'>
  <dc:title><rdf:Alt><rdf:li xml:lang='x-default'>Our trip</rdf:li></rdf:Alt></dc:title>
  <dc:subject><rdf:Bag><rdf:li>family</rdf:li></rdf:Bag></dc:subject>
 </rdf:Description>
 <rdf:Description rdf:about='' xmlns:xmp='http://ns.adobe.com/xap/1.0/'>
  <xmp:Rating>3</xmp:Rating>
 </rdf:Description>
</rdf:RDF>
</x:xmpmeta>
<?xpacket end='w'?>"""

LIGHTROOM = """<x:xmpmeta xmlns:x="adobe:ns:meta/">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:lr="http://ns.adobe.com/lightroom/1.0/"
    xmp:Rating="5">
   <dc:title><rdf:Alt><rdf:li xml:lang="x-default">Best run</rdf:li></rdf:Alt></dc:title>
   <dc:subject><rdf:Bag><rdf:li>alps</rdf:li><rdf:li>skiing</rdf:li></rdf:Bag></dc:subject>
   <lr:hierarchicalSubject><rdf:Bag><rdf:li>Places|alps</rdf:li></rdf:Bag></lr:hierarchicalSubject>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
"""


@needs_exiftool
def test_new_xmp_is_read_by_exiftool_in_all_three_properties(tmp_path):
    clip = tmp_path / "run.mp4"
    path = Xmp("Activity").write(tagged(clip, "skiing", "biking"))
    assert path == tmp_path / "run.mp4.xmp"
    data = exif(path)
    assert as_list(data["XMP-dc:Subject"]) == ["skiing", "biking"]
    assert as_list(data["XMP-digiKam:TagsList"]) == ["Activity/skiing", "Activity/biking"]
    assert as_list(data["XMP-lr:HierarchicalSubject"]) == ["Activity|skiing", "Activity|biking"]


@needs_exiftool
@pytest.mark.parametrize("style, name", [(DARKTABLE, "run.mp4.xmp"), (EXIFTOOL_STYLE, "run.mp4.xmp"),
                                         (LIGHTROOM, "run.xmp")])
def test_merge_keeps_the_users_data_and_drops_only_stale_autotag_tags(tmp_path, style, name):
    clip = tmp_path / "run.mp4"
    existing = tmp_path / name
    existing.write_text(style, encoding="utf-8")
    before = exif(existing)
    assert xmp_path(clip) == existing
    Xmp("Activity").write(tagged(clip, "biking", "running"))
    after = exif(existing)
    user_keys = {k: v for k, v in before.items() if k not in ("SourceFile",)}
    for key, value in user_keys.items():  # every property the user had is still there
        if key in ("XMP-dc:Subject", "XMP-lr:HierarchicalSubject"):
            assert set(as_list(value)) <= set(as_list(after[key])), key
        else:
            assert after[key] == value, key
    assert {"biking", "running"} <= set(as_list(after["XMP-dc:Subject"]))
    # the vocabulary changes: running is gone from it, swimming is new
    Xmp("Activity").write(tagged(clip, "biking", "swimming"))
    final = exif(existing)
    subject = as_list(final["XMP-dc:Subject"])
    assert "running" not in subject and {"biking", "swimming"} <= set(subject)
    assert set(as_list(before["XMP-dc:Subject"])) <= set(subject)  # the user's, all kept
    assert "Activity|running" not in as_list(final["XMP-lr:HierarchicalSubject"])


def test_a_users_keyword_equal_to_a_tag_is_never_removed(tmp_path):
    clip = tmp_path / "run.mp4"
    (tmp_path / "run.xmp").write_text(LIGHTROOM)  # the user has 'skiing' already
    Xmp("Activity").write(tagged(clip, "skiing"))
    Xmp("Activity").write(tagged(clip, "biking"))  # skiing no longer a tag
    text = (tmp_path / "run.xmp").read_text()
    assert "<rdf:li>skiing</rdf:li>" in text and "<rdf:li>biking</rdf:li>" in text


def test_a_keyword_the_user_removed_is_not_put_back(tmp_path):
    clip = tmp_path / "run.mp4"
    path = Xmp("Activity").write(tagged(clip, "skiing", "biking"))
    head, subject = path.read_text().split("<dc:subject>")
    subject, tail = subject.split("</dc:subject>")
    # the user deletes 'biking' in their photo manager (autotag's own records stay)
    path.write_text(head + "<dc:subject>" + subject.replace("<rdf:li>biking</rdf:li>", "")
                    + "</dc:subject>" + tail)
    Xmp("Activity").write(tagged(clip, "skiing", "biking"))
    subject = path.read_text().split("<dc:subject>")[1].split("</dc:subject>")[0]
    assert "skiing" in subject and "biking" not in subject


def test_billion_laughs_and_malformed_xmp_are_refused_and_untouched(tmp_path):
    clip = tmp_path / "run.mp4"
    bomb = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
            '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
            '<x:xmpmeta xmlns:x="adobe:ns:meta/">&lol2;</x:xmpmeta>')
    path = tmp_path / "run.mp4.xmp"
    for content in (bomb, "<x:xmpmeta><unclosed>", "not xml at all"):
        path.write_text(content)
        with pytest.raises(OutputError, match="left untouched"):
            Xmp("Activity").write(tagged(clip, "skiing"))
        assert path.read_text() == content


def test_nfo_created_and_merged_keeping_other_elements(tmp_path):
    clip = tmp_path / "run.mp4"
    nfo = tmp_path / "run.nfo"
    nfo.write_text("<?xml version='1.0'?>\n<movie>\n  <!-- mine -->\n  <title>Run</title>\n"
                   "  <plot>A run &amp; a fall</plot>\n  <tag>favourite</tag>\n</movie>\n")
    assert Nfo().write(tagged(clip, "running", "biking")) == nfo
    Nfo().write(tagged(clip, "running"))
    text = nfo.read_text()
    assert "<title>Run</title>" in text and "A run &amp; a fall" in text and "mine" in text
    assert "<tag>favourite</tag>" in text and "<tag>running</tag>" in text
    assert "<tag>biking</tag>" not in text
    fresh = tmp_path / "new.mkv"
    Nfo().write(tagged(fresh, "dancing"))
    assert "<movie>" in (tmp_path / "new.nfo").read_text()


def test_malformed_nfo_is_left_untouched(tmp_path):
    nfo = tmp_path / "run.nfo"
    nfo.write_text("<movie><title>oops</movie>")
    with pytest.raises(OutputError):
        Nfo().write(tagged(tmp_path / "run.mp4", "running"))
    assert nfo.read_text() == "<movie><title>oops</movie>"


def test_hook_sees_the_variables(tmp_path):
    out = tmp_path / "env.txt"
    hook = Hook(f'printf "%s|%s|%s|%s" "$AUTOTAG_PATH" "$AUTOTAG_SIDECAR" "$AUTOTAG_TOP" '
                f'"$AUTOTAG_TAGS" > "{out}"', timeout=10)
    item = tagged(tmp_path / "my clip.mp4", "skiing", "biking").with_output("sidecar", "/s.json")
    hook.write(item)
    assert out.read_text() == f"{tmp_path / 'my clip.mp4'}|/s.json|skiing|skiing,biking"


def test_failing_and_hanging_hooks_do_not_fail_the_clip(tmp_path):
    base = f"vocabulary: [x]\nstate: {{path: {tmp_path / 's.db'}}}\noutputs: {{log: null, previews: null}}\n"
    for command, timeout in (("exit 3", 10), ("sleep 30", 0.5)):
        config = parse_config(base + f"hooks: {{on_tagged: '{command}', timeout: {timeout}}}\n",
                              base=tmp_path)
        result, errors = build_outputs(config).write_all(tagged(tmp_path / "a.mp4", "x"))
        assert errors == []
        assert "sidecar" in result.outputs


@needs_exiftool
def test_outputs_are_listed_in_the_sidecar(tmp_path):
    config = parse_config(f"vocabulary: [x]\nstate: {{path: {tmp_path / 's.db'}}}\n"
                          "outputs: {xmp: true, nfo: true, log: log.jsonl, previews: p}\n",
                          base=tmp_path)
    result, errors = build_outputs(config).write_all(tagged(tmp_path / "a.mp4", "x"))
    assert errors == []
    sidecar = json.loads((tmp_path / "a.mp4.autotag.json").read_text())
    assert set(sidecar["outputs"]) == {"preview", "xmp", "nfo", "sidecar"}
    assert sidecar["outputs"]["xmp"] == str(tmp_path / "a.mp4.xmp")
    assert set(result.outputs) == {"preview", "xmp", "nfo", "sidecar", "log"}


def test_clip_outputs_names_every_file_the_outputs_write_where_they_write_it(tmp_path):
    config = parse_config(f"vocabulary: [x]\nstate: {{path: {tmp_path / 's.db'}}}\n"
                          "outputs: {xmp: true, nfo: true, log: log.jsonl, previews: p, "
                          "sidecar_dir: side}\n", base=tmp_path)
    clip = tmp_path / "a.mp4"
    result, errors = build_outputs(config).write_all(tagged(clip, "x"))
    assert errors == []
    listed = clip_outputs(clip, config.outputs)
    assert {o.name: str(o.path) for o in listed} == result.outputs
    assert [o.name for o in listed] == [o.name for o in build_outputs(config).outputs]
    assert all(o.path.is_file() for o in listed)


def test_comments_and_instructions_around_the_root_are_kept(tmp_path):
    clip = tmp_path / "run.mp4"
    path = tmp_path / "run.mp4.xmp"
    path.write_text('<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
                    "<!-- written by hand, keep -->\n<?my-tool v=2?>\n"
                    '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
                    'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
                    '<rdf:Description rdf:about=""/></rdf:RDF></x:xmpmeta>\n'
                    "<!-- trailer -->\n<?xpacket end=\"w\"?>\n", encoding="utf-8")
    for labels in (("skiing",), ("biking",)):  # twice: nothing doubles, nothing is lost
        Xmp("Activity").write(tagged(clip, *labels))
    text = path.read_text(encoding="utf-8")
    assert text.count("<!-- written by hand, keep -->") == 1
    assert text.count("<?my-tool v=2?>") == 1
    assert text.count("<!-- trailer -->") == 1 and text.count("<?xpacket") == 2
    assert text.index("written by hand") < text.index("<x:xmpmeta") < text.index("trailer")
    assert "biking" in exif(path)["XMP-dc:Subject"]


@needs_exiftool
def test_a_sidecar_emptied_of_its_tags_leaves_no_blank_keyword(tmp_path):
    clip = tmp_path / "run.mp4"
    Xmp("Activity").write(tagged(clip, "skiing"))
    Xmp("Activity").write(tagged(clip))  # the vocabulary changed: no tag any more
    after = exif(clip.with_name("run.mp4.xmp"))
    for key in ("XMP-dc:Subject", "XMP-lr:HierarchicalSubject", "XMP-digiKam:TagsList"):
        assert after.get(key) in (None, "", []), (key, after.get(key))  # not a blank keyword


# -- the top-match log --------------------------------------------------------------------------

def test_match_log_runner_up_is_the_best_other_tag_or_the_nearest_miss(tmp_path):
    from autotag.outputs.log import MatchLog

    ski, bike, swim = (Tag(label, score, 0.3) for label, score in
                       [("ski", 7.0), ("bike", 5.0), ("swim", 1.0)])
    base = tagged(tmp_path / "a.mp4")
    log = MatchLog(tmp_path / "matches.jsonl")
    log.write(Tagged(base.clip, "model", "vocab", (ski,), (ski, bike, swim)))
    # a per-tag threshold gave the second-ranked tag only: the runner-up is the first
    log.write(Tagged(base.clip, "model", "vocab", (bike,), (ski, bike, swim)))
    log.write(Tagged(base.clip, "model", "vocab", (), (ski, bike, swim)))  # nothing given
    lines = [json.loads(x) for x in log.path.read_text().splitlines()]
    assert [(x["label"], x["runner_up"]["label"]) for x in lines] == [
        ("ski", "bike"), ("bike", "ski"), (None, "ski")]
    assert lines[2]["score"] is None and lines[2]["runner_up"]["score"] == 7.0
