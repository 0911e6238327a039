"""Every page as a person uses it, on a desktop (1366 px) and on a phone (390 px): Debian's
Chromium driven by Playwright. No page is wider than the screen; the library is browsed, paged,
filtered, reviewed in bulk and from the keyboard (the focus kept); review buttons are within a
thumb's reach; the plot fits; a portrait clip keeps its shape.

A full-page screenshot of every page at both widths goes to $AUTOTAG_SHOTS (default
tests/artifacts/pages/), to look at. One library (the browser tests' five clips, a portrait
clip and a rotated one, a 90-second clip with a long name, six short ones), one server, one
browser.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from autotag import cli
from tests import test_web_browser as browser_tests
from tests.clips import BLUE, GREEN, RED, ffmpeg, write_video
from tests.library import build_library, to_webm

# the browser tests' fixtures, by name: their server (over this module's library), browser and
# visit (a fresh context, with what went wrong on its pages), and their thread check
site, browser, visit = browser_tests.site, browser_tests.browser, browser_tests.visit
_no_thread_leaks = browser_tests._no_thread_leaks

sync_api = pytest.importorskip("playwright.sync_api")

SHOTS = Path(os.environ.get("AUTOTAG_SHOTS") or Path(__file__).parent / "artifacts" / "pages")
DESKTOP = {"width": 1366, "height": 800}
PHONE = {"width": 390, "height": 844}
WIDTHS = {"desktop": DESKTOP, "phone": PHONE}
THUMB = 40  # px: the least width and height of a button a thumb hits (WCAG's 24 px, doubled-ish)
LONG = "holiday at the beach with a name long enough to wrap on a phone.mp4"


@pytest.fixture(scope="module")
def made(tmp_path_factory, model_dir, embedder):
    """The browser tests' library, and more clips: a portrait one, a long one, six short ones."""
    folder = tmp_path_factory.mktemp("web-pages")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(folder / "xdg-cache"))
        mp.setenv("XDG_DATA_HOME", str(folder / "xdg-data"))
        made = build_library(folder, model_dir, embedder)
        clips = made["clips"]
        (clips / "phone").mkdir()
        (clips / "many").mkdir()
        to_webm(write_video(folder / "portrait.mp4", [(RED, 5)], size=(48, 96)),
                clips / "phone" / "portrait red.webm")
        write_video(clips / "phone" / LONG, [(BLUE, 40), (GREEN, 30), (RED, 20)], size=(96, 64))
        # stored 96×64 on its side (a phone held upright): shown 64×96
        wide = write_video(folder / "wide.mp4", [(GREEN, 4)], size=(96, 64))
        ffmpeg("-i", str(wide), "-c", "copy", "-metadata:s:v:0", "rotate=90",
               str(clips / "phone" / "turned green.mp4"))
        for i in range(6):
            write_video(clips / "many" / f"short {i}.mp4", [((RED, GREEN, BLUE)[i % 3], 2 + i)],
                        size=(64, 48))
        assert cli.main(["--once", "--config", str(made["config"]), str(clips)],
                        embedder=embedder) == 0
        yield made


# -- helpers ------------------------------------------------------------------------------------

def settle(page) -> None:
    """Scroll through the page so lazy thumbnails load, wait for every image, back to the top."""
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    page.wait_for_function("() => [...document.images].every(i => i.complete)")
    page.evaluate("window.scrollTo(0, 0)")


def wider(page) -> dict | None:
    """None when the page fits its window; else how wide it is and what sticks out."""
    return page.evaluate(
        "() => { const root = document.documentElement;"
        " if (root.scrollWidth <= innerWidth) return null;"
        " return {scrollWidth: root.scrollWidth, innerWidth,"
        " out: [...document.querySelectorAll('body *')]"
        ".filter(e => e.getBoundingClientRect().right > innerWidth + 0.5)"
        ".slice(0, 8).map(e => e.tagName.toLowerCase() + '.' + (e.getAttribute('class') || ''))};"
        " }")


def shot(page, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    path.write_bytes(page.screenshot(full_page=True))
    return path


def api(site, path: str) -> object:
    import urllib.request

    with urllib.request.urlopen(site.url + path) as response:
        return json.loads(response.read())


def clip_ids(site) -> dict[str, int]:
    found = {}
    for q in ("red", "green", "blue water"):
        for hit in api(site, f"/api/search?q={q.replace(' ', '+')}&top=50"):
            found[hit["name"]] = hit["id"]
    return found


def review_by_api(page, site, file_id: int, body: dict) -> None:
    """A review through the JSON API from the page's own origin (as app.js sends one)."""
    status = page.evaluate(
        "async ([url, body]) => { const csrf = document.querySelector('meta[name=csrf-token]')"
        ".content; const r = await fetch(url, {method: 'POST', headers: {'Content-Type':"
        " 'application/json', 'X-CSRF-Token': csrf}, body: JSON.stringify(body)});"
        " return r.status; }", [f"{site.url}/api/clips/{file_id}/reviews", body])
    assert status == 200


def chips(card) -> dict[str, str]:
    """A card's tag chips: label → 'given', 'confirmed' or 'rejected'."""
    found = {}
    for chip in card.locator(".chip:not(.none)").all():
        classes = chip.get_attribute("class").split()
        found[chip.inner_text().strip()] = next(
            (c for c in ("confirmed", "rejected") if c in classes), "given")
    return found


def card(page, name: str):
    return page.locator("ol#results > li.card").filter(
        has=page.locator(".name", has_text=re.compile(f"^{re.escape(name)}$")))


# -- every page fits, at both widths --------------------------------------------------------

def pages(site) -> dict[str, str]:
    ids = clip_ids(site)
    return {
        "search-empty": "/",
        "search-red": "/?q=red",
        "search-red-page-2": "/?q=red&top=4&page=2",
        "search-tag-sea": "/?tag=sea",
        "search-unknown-words": "/?q=zzzz",
        "library": "/library",
        "library-best-page-2": "/library?sort=best&per=4&page=2",
        "library-untagged": "/library?untagged=1",
        "library-needs-review": "/library?review=1",
        "library-red-longest": "/library?tag=red&sort=longest",
        "clip-late-red-query": f"/clips/{ids['late red.webm']}?q=red",
        "clip-long": f"/clips/{ids[LONG]}",
        "clip-portrait": f"/clips/{ids['portrait red.webm']}",
        "clip-turned": f"/clips/{ids['turned green.mp4']}",
        "clip-blue-preview": f"/clips/{ids['blue.avi']}",
        "clip-gif": f"/clips/{ids['spin.gif']}",
        "tags": "/tags",
        "status": "/status",
        "calibrate": "/calibrate",
        "error-404": "/clips/999999",
    }


@pytest.mark.parametrize("width", WIDTHS)
def test_no_page_is_wider_than_the_screen(site, visit, width):
    page = visit.page
    page.set_viewport_size(WIDTHS[width])
    too_wide = {}
    for name, path in pages(site).items():
        page.goto(site.url + path)
        settle(page)
        shot(page, f"{name}-{width}")
        found = wider(page)
        if found:
            too_wide[name] = found
    page.goto(site.locked + "/tags")  # the login page
    shot(page, f"login-{width}")
    if wider(page):
        too_wide["login"] = wider(page)
    assert too_wide == {}
    assert not visit.problems(allow_status={401, 404})


def test_the_check_for_a_page_wider_than_the_screen_can_fail(site, visit):
    page = visit.page
    page.set_viewport_size(PHONE)
    page.goto(site.url + "/tags")
    assert wider(page) is None
    page.evaluate("() => { const d = document.createElement('div');"
                  " d.style.width = '600px'; d.textContent = 'x'; document.body.append(d); }")
    assert wider(page)["scrollWidth"] >= 600


# -- a phone ------------------------------------------------------------------------------------

def test_on_a_phone_the_review_buttons_are_on_screen_and_big_enough_for_a_thumb(site, visit,
                                                                                  made):
    page = visit.page
    page.set_viewport_size(PHONE)
    red = clip_ids(site)["red.webm"]
    page.goto(f"{site.url}/clips/{red}")
    buttons = page.locator("table.tags button")
    assert buttons.count() >= 6  # ✓ and ✗ on each of three tags
    for button in buttons.all():
        button.scroll_into_view_if_needed()
        box = button.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], box
        assert box["width"] >= THUMB and box["height"] >= THUMB, box
    sidecar = Path(f"{made['clips'] / 'red.webm'}.autotag.json")
    try:
        with page.expect_navigation():
            page.locator('tr[data-label="red"]').get_by_role("button", name="Reject red").click()
        assert json.loads(sidecar.read_text())["reviews"]["rejected"] == ["red"]
        # back on the page, the row reviewed has the focus (keys go on from there)
        assert page.evaluate("document.activeElement.dataset.label") == "red"
    finally:
        review_by_api(page, site, red, {"clear": ["red"]})
    assert not visit.problems()


def test_on_a_phone_the_plot_fits_and_reaches_the_end_of_a_long_clip(site, visit):
    page = visit.page
    page.set_viewport_size(PHONE)
    page.goto(f"{site.url}/clips/{clip_ids(site)[LONG]}")
    svg = page.locator(".plot svg.narrow")
    assert svg.is_visible() and not page.locator(".plot svg.wide").is_visible()
    box = svg.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    labels = svg.locator(".axis.time .tick-label")
    last = labels.nth(labels.count() - 1)
    assert last.inner_html() in ("1:30", "1:31"), last.inner_html()  # the clip's end, m:ss
    end = last.bounding_box()
    assert end["x"] + end["width"] <= PHONE["width"]
    # its text is drawn at a size that reads (not shrunk to half)
    assert labels.first.bounding_box()["height"] >= 9
    page.set_viewport_size(DESKTOP)
    assert page.locator(".plot svg.wide").is_visible() and not svg.is_visible()
    assert not visit.problems()


def test_on_a_phone_the_library_shows_two_cards_a_row_and_titles_wrap_between_words(site,
                                                                                     visit):
    page = visit.page
    page.set_viewport_size(PHONE)
    page.goto(site.url + "/library?sort=name")
    tops = [c.bounding_box()["y"] for c in page.locator("ol#results > li.card").all()[:4]]
    assert tops[0] == tops[1] and tops[2] == tops[3] and tops[2] > tops[0], tops
    page.goto(f"{site.url}/clips/{clip_ids(site)[LONG]}")
    heading = page.get_by_role("heading", level=1)
    lines = page.evaluate(
        "(h) => { const r = document.createRange(); r.selectNodeContents(h);"
        " const seen = new Map(); for (const rect of r.getClientRects())"
        " seen.set(Math.round(rect.top), 1); return seen.size; }", heading.element_handle())
    assert lines >= 2  # it wraps...
    words = page.evaluate(
        "(h) => { const t = h.firstChild; const r = document.createRange(); const out = [];"
        " let top = null, line = '';"
        " for (let i = 0; i < t.length; i++) { r.setStart(t, i); r.setEnd(t, i + 1);"
        " const y = Math.round(r.getBoundingClientRect().top);"
        " if (top !== null && y !== top) { out.push(line); line = ''; } top = y;"
        " line += t.data[i]; } out.push(line); return out; }", heading.element_handle())
    assert all(w.endswith(" ") for w in words[:-1]), words  # ...between words
    assert not visit.problems()


@pytest.mark.parametrize("name", ["portrait red.webm", "turned green.mp4"])
def test_a_portrait_or_rotated_clip_s_thumbnail_keeps_its_shape(site, visit, name):
    page = visit.page
    page.goto(site.url + "/library?sort=name")
    img = card(page, name).locator("img")
    img.scroll_into_view_if_needed()
    page.wait_for_function("(i) => i.complete && i.naturalWidth > 0", arg=img.element_handle())
    natural = img.evaluate("i => i.naturalWidth / i.naturalHeight")
    assert natural < 0.75  # stored upright and narrow (48×96; 96×64 turned)
    assert img.evaluate("i => getComputedStyle(i).objectFit") == "contain"  # shown whole
    shown = img.bounding_box()
    assert shown["width"] / shown["height"] == pytest.approx(16 / 9, rel=0.02)  # in its box
    assert not visit.problems()


# -- the library: browse and act ----------------------------------------------------------------

def test_the_library_pages_through_every_clip_and_the_url_keeps_the_page(site, visit):
    page = visit.page
    page.goto(site.url + "/library?per=4&sort=name")
    total = len(clip_ids(site))
    assert page.locator("#found").inner_text().startswith(f"{total} of {total} clips")
    seen: list[str] = []
    while True:
        names = [n.strip() for n in page.locator("ol#results .name").all_inner_texts()]
        assert 1 <= len(names) <= 4
        seen += names
        following = page.get_by_role("link", name="Next →")
        if not following.count():
            break
        with page.expect_navigation():
            following.click()
        assert re.search(r"[?&]page=\d+", page.url)
    assert len(seen) == total and sorted(seen, key=str.lower) == seen  # every clip once, by name
    page.goto(page.url)  # a bookmark of the last page is the last page
    assert [n.strip() for n in page.locator("ol#results .name").all_inner_texts()] == \
        seen[-len(names):]
    assert not visit.problems()


def test_the_library_filters_from_its_form_and_the_url_can_be_bookmarked(site, visit):
    page = visit.page
    page.goto(site.url + "/library")
    page.locator("details.filter-box summary").click()
    page.locator("form.filters select[name=tag]").select_option("red")
    page.locator("form.filters select[name=sort]").select_option("longest")
    with page.expect_navigation():
        page.get_by_role("button", name="Show").click()
    assert "tag=red" in page.url and "sort=longest" in page.url
    cards = page.locator("ol#results > li.card")
    assert cards.count() >= 3
    for c in cards.all():
        assert "red" in chips(c)
    shown = [n.strip() for n in page.locator("ol#results .name").all_inner_texts()]
    assert shown[0] == "late red.webm"  # the longest clip with red in it (32 s)
    assert "folder=" not in page.url  # the URL says what is filtered, no empty fields
    again = visit.page.context.new_page()
    again.goto(page.url)
    assert [n.strip() for n in again.locator("ol#results .name").all_inner_texts()] == shown
    again.close()
    page.goto(site.url + "/library?untagged=1")
    for c in page.locator("ol#results > li.card").all():
        assert not chips(c)
    assert not visit.problems()


def test_selected_clips_are_rejected_then_restored_in_bulk(site, visit, made):
    page = visit.page
    page.set_viewport_size(PHONE)
    page.goto(site.url + "/library?tag=red&sort=name")
    url = page.url
    names = ["late red.webm", "red.webm"]
    for name in names:
        card(page, name).locator('input[name="clip"]').check()
    assert page.locator("#selected-count").inner_text().startswith("2 selected")
    bar = page.locator("form#bulk")
    assert "active" in bar.get_attribute("class").split()  # kept under the thumb
    bar.get_by_label("The tag to act on").select_option("red")
    try:
        with page.expect_navigation():
            bar.get_by_role("button", name="✗ Remove / reject").click()
        assert page.url.startswith(url)  # back on the same view
        assert "Rejected red on 2 clips" in page.get_by_role("status").inner_text()
        for name in names:
            sidecar = json.loads(Path(f"{made['clips'] / name}.autotag.json").read_text())
            assert sidecar["reviews"]["rejected"] == ["red"] and sidecar["tags"] == []
        shot(page, "library-bulk-rejected-phone")
        page.goto(site.url + "/library?sort=name")
        for name in names:
            assert chips(card(page, name)).get("red") == "rejected"
        for name in names:
            card(page, name).locator('input[name="clip"]').check()
        page.locator("form#bulk").get_by_label("The tag to act on").select_option("red")
        with page.expect_navigation():
            page.locator("form#bulk").get_by_role("button", name="Undo").click()
        for name in names:
            assert chips(card(page, name)) == {"red": "given"}
    finally:
        ids = clip_ids(site)
        for name in names:
            review_by_api(page, site, ids[name], {"clear": ["red"]})
    assert not visit.problems()


def test_the_keyboard_moves_through_the_library_and_reviews_without_losing_the_focus(site,
                                                                                     visit):
    page = visit.page
    page.goto(site.url + "/library?tag=red&sort=name")
    first, second = (n.strip() for n in page.locator("ol#results .name").all_inner_texts()[:2])
    ids = clip_ids(site)
    try:
        page.keyboard.press("j")  # from nothing focused: the first card
        focused = "document.activeElement.querySelector('.name')?.textContent.trim()"
        assert page.evaluate(focused) == first
        page.keyboard.press("r")  # reject red (the filter's tag), in place
        page.wait_for_function("(n) => document.activeElement.dataset.reviewed === n",
                               arg="reject red")
        assert page.evaluate(focused) == first  # the focus stayed
        assert chips(card(page, first)) == {"red": "rejected"}
        page.keyboard.press("j")
        assert page.evaluate(focused) == second
        page.keyboard.press("c")
        page.wait_for_function("() => document.activeElement.dataset.reviewed === 'confirm red'")
        assert chips(card(page, second)) == {"red": "confirmed"}
        page.keyboard.press("k")
        page.keyboard.press("u")
        page.wait_for_function("() => document.activeElement.dataset.reviewed === 'clear red'")
        assert chips(card(page, first)) == {"red": "given"} and page.evaluate(focused) == first
        page.keyboard.press("x")  # select from the keyboard
        assert card(page, first).locator('input[name="clip"]').is_checked()
        page.reload()  # what the keys did is stored
        assert chips(card(page, second)) == {"red": "confirmed"}
    finally:
        for name in (first, second):
            review_by_api(page, site, ids[name], {"clear": ["red"]})
    assert not visit.problems()


def test_on_a_clip_page_the_keys_move_between_tags_and_the_focus_comes_back(site, visit):
    page = visit.page
    red = clip_ids(site)["red.webm"]
    page.goto(f"{site.url}/clips/{red}")
    rows = page.locator("tr[data-label]")
    rows.first.focus()
    page.keyboard.press("j")
    second = rows.nth(1).get_attribute("data-label")
    assert page.evaluate("document.activeElement.dataset.label") == second
    try:
        with page.expect_navigation():
            page.keyboard.press("c")
        assert page.evaluate("document.activeElement.dataset.label") == second
        assert "confirmed" in page.locator(f'tr[data-label="{second}"]').get_attribute("class")
    finally:
        review_by_api(page, site, red, {"clear": [second]})
    assert not visit.problems()


# -- search: paging, where matches end, the taught tag's label kept ---------------------------

def test_search_results_page_on_and_mark_where_matches_end(site, visit):
    page = visit.page
    page.goto(site.url + "/?q=red&top=4")
    first = [n.strip() for n in page.locator("ol#results .name").all_inner_texts()]
    assert len(first) == 4
    with page.expect_navigation():
        page.get_by_role("link", name="Next →").click()
    assert "page=2" in page.url and "q=red" in page.url
    second = [n.strip() for n in page.locator("ol#results .name").all_inner_texts()]
    assert second and not set(first) & set(second)
    page.goto(site.url + "/?q=red&top=50")
    marker = page.locator("ol#results > li.ends")
    assert marker.count() == 1 and "Matches end here" in marker.inner_text()
    before = page.locator("ol#results > li").evaluate_all(
        "(items) => items.slice(0, items.findIndex(i => i.classList.contains('ends')))"
        ".map(i => i.classList.contains('weak'))")
    after = page.locator("li.ends ~ li.card").evaluate_all(
        "(items) => items.map(i => i.classList.contains('weak'))")
    assert before and not all(before) and after and all(after)
    assert not visit.problems()


@pytest.mark.parametrize("script", [True, False], ids=["with-js", "without-js"])
def test_make_the_tag_with_nothing_selected_keeps_the_typed_label(site, browser, script):
    context = browser.new_context(viewport=DESKTOP, java_script_enabled=script)
    try:
        page = context.new_page()
        page.goto(site.url + "/?q=red")
        page.get_by_label("Teach a tag from the selected clips").fill("our red thing")
        page.get_by_role("button", name="Make the tag").click()
        page.wait_for_selector("[role=alert]")
        assert "Select the clips" in page.get_by_role("alert").inner_text()
        assert page.get_by_label("Teach a tag from the selected clips").input_value() == \
            "our red thing"
        assert "q=red" in page.url  # the same results
        assert page.locator("ol#results > li.card").count() > 0
    finally:
        context.close()
