"""The web app in a real browser, as a person uses it: Debian's Chromium driven by Playwright types
a search, clicks a result, watches the clip start at the matching moment, seeks from the tags
table and the plot, logs in with a token; every page under the app's Content-Security-Policy.

A full-page screenshot of each page goes to tests/artifacts/browser/NAME.png, to look at.
One library, one server (and one with a token) and one browser for the whole module.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from autotag.app import open_app
from autotag.config import load_config
from autotag.web.library import open_library
from autotag.web.routes import create_app
from autotag.web.server import WebServer
from tests.library import module_library

sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
ARTIFACTS = Path(__file__).parent / "artifacts" / "browser"
TOKEN = "browser-" + "k" * 24
VIEWPORT = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
TIMEOUT = 10_000  # ms for anything the browser waits for (a preview is encoded on demand)
SEEK_SLACK = 0.6  # s between where a video is asked to start and where it is
# Records every Content-Security-Policy violation of every document the page loads (the
# binding outlives navigations; window.__csp is the current document's own list).
CSP_LISTENER = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  const v = {directive: e.violatedDirective, blocked: e.blockedURI, source: e.sourceFile,
             line: e.lineNumber, sample: e.sample, page: location.href};
  window.__csp.push(v);
  if (window.__reportCsp) window.__reportCsp(v);
});
"""
# A video's state, and the colour of the frame it shows (the test model's clips are one colour
# at a time: the frame says where in the clip the player is)
VIDEO_STATE = """
(sel) => {
  const v = document.querySelector(sel);
  const state = {readyState: v.readyState, currentTime: v.currentTime, duration: v.duration,
                 width: v.videoWidth, height: v.videoHeight, paused: v.paused,
                 error: v.error && {code: v.error.code, message: v.error.message}, rgb: null};
  if (v.readyState >= 2 && v.videoWidth) {
    const c = document.createElement("canvas");
    c.width = v.videoWidth; c.height = v.videoHeight;
    const g = c.getContext("2d");
    g.drawImage(v, 0, 0);
    state.rgb = Array.from(g.getImageData(c.width >> 1, c.height >> 1, 1, 1).data.slice(0, 3));
  }
  return state;
}
"""
READY = ("([sel, n]) => { const v = document.querySelector(sel);"
         " return v && (v.readyState >= n || v.error); }")


# -- the served library and the browser -------------------------------------------------------

@dataclass
class Site:
    url: str  # the app without a token
    locked: str  # the same library behind a token


@pytest.fixture(scope="module")
def made(tmp_path_factory, model_dir, embedder):
    yield from module_library(tmp_path_factory, "web-browser", model_dir, embedder)


@pytest.fixture(scope="module")
def site(made, embedder):
    app = open_app(load_config(made["config"]), embedder)
    libraries = [open_library(app) for _ in range(2)]
    servers = [WebServer(create_app(library, token=token), "127.0.0.1", 0)
               for library, token in zip(libraries, (None, TOKEN))]
    try:
        for server in servers:
            server.start()
        yield Site(*(f"http://127.0.0.1:{s.port_bound}" for s in servers))
    finally:
        for server in servers:
            server.stop()
        for library in libraries:
            library.close()
        app.close()
    left = [t for t in threading.enumerate() if _server_thread(t)]
    for t in left:  # AnyIO's workers are told to end as uvicorn's loop does: a moment later
        t.join(timeout=5)
    left = [t.name for t in left if t.is_alive()]
    assert not left, f"the web servers left threads running: {left}"


def _server_thread(thread: threading.Thread) -> bool:
    """uvicorn's thread, or a thread of AnyIO's pool running the app's endpoints: they live
    as long as the server (the module), which stops them."""
    return thread.name == "autotag-web" or thread.name.startswith("AnyIO worker thread")


@pytest.fixture(autouse=True)
def _no_thread_leaks():
    """conftest's check, less the module's servers' own threads (checked when they stop)."""
    before = set(threading.enumerate())
    yield
    leaked = [t for t in threading.enumerate()
              if t not in before and t.is_alive() and not _server_thread(t)]
    for t in leaked:
        t.join(timeout=5)
    leaked = [t.name for t in leaked if t.is_alive()]
    assert not leaked, f"threads left running: {leaked}"


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


@dataclass
class Visit:
    """A fresh browser context (no cookies) and its page, with what went wrong on any page."""

    page: object
    console: list = field(default_factory=list)  # console errors and warnings
    errors: list = field(default_factory=list)  # uncaught exceptions
    csp: list = field(default_factory=list)  # Content-Security-Policy violations
    failed: list = field(default_factory=list)  # responses of 400 and up

    def problems(self, allow_status: set[int] = frozenset()) -> dict:
        found = {"csp": self.csp, "errors": self.errors,
                 "console": [m for m in self.console if not _expected(m, allow_status)],
                 "failed": [f for f in self.failed if f[0] not in allow_status]}
        return {k: v for k, v in found.items() if v}

    def shot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        # bytes, not path=: Playwright writes a path from a thread of its own loop's pool
        path.write_bytes(self.page.screenshot(full_page=True))
        return path


def _expected(message: str, allow_status: set[int]) -> bool:
    """Chromium logs a document answered with 401 or 404 as a console error; a test says
    which statuses it asked for."""
    found = re.search(r"Failed to load resource: the server responded with a status of (\d+)",
                      message)
    return bool(found) and int(found[1]) in allow_status


@pytest.fixture
def visit(browser):
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(TIMEOUT)
    seen = Visit(context.new_page())
    context.expose_binding("__reportCsp", lambda source, v: seen.csp.append(v))
    context.add_init_script(CSP_LISTENER)
    page = seen.page
    page.on("console", lambda m: seen.console.append(f"{m.type}: {m.text} ({m.location})")
            if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda exc: seen.errors.append(str(exc)))
    page.on("response", lambda r: seen.failed.append((r.status, r.url)) if r.status >= 400
            else None)
    yield seen
    context.close()


# -- helpers ------------------------------------------------------------------------------------

def search(page, base: str, text: str):
    """Type into the search box and press Enter, as a person does; the result cards."""
    page.goto(base + "/")
    box = page.get_by_role("searchbox")
    box.fill(text)
    with page.expect_navigation():
        box.press("Enter")
    return page.locator("ol#results > li.card")


def card_names(cards) -> list[str]:
    return [n.strip() for n in cards.locator(".name").all_inner_texts()]


def seconds(text: str) -> float:
    """'12.3 s' or '1:02.5' (the pages' time format) → seconds."""
    text = text.strip()
    if ":" in text:
        minutes, rest = text.split(":")
        return int(minutes) * 60 + float(rest)
    return float(text.removesuffix("s").strip())


def video(page, selector: str = "video#player", ready: int = 1) -> dict:
    page.wait_for_function(READY, arg=[selector, ready])
    return page.evaluate(VIDEO_STATE, selector)


def play_a_little(page, beyond: float) -> dict:
    """Play the page's video until it passes `beyond` s, then pause it (which also ends the
    loading spinner the controls show until then)."""
    page.evaluate("document.querySelector('#player').play()")
    page.wait_for_function("(t) => document.querySelector('#player').currentTime > t",
                           arg=beyond)
    page.evaluate("document.querySelector('#player').pause()")
    return page.evaluate(VIDEO_STATE, "#player")


def wait_at(page, seconds_: float, selector: str = "video#player",
            timeout: float = TIMEOUT) -> dict:
    """Wait until the video is at this time (± SEEK_SLACK) with the frame there decoded."""
    page.wait_for_function(
        "([sel, t, slack]) => { const v = document.querySelector(sel);"
        " return v && !v.seeking && v.readyState >= 2 && Math.abs(v.currentTime - t) <= slack; }",
        arg=[selector, seconds_, SEEK_SLACK], timeout=timeout)
    return page.evaluate(VIDEO_STATE, selector)


def colour(rgb) -> str:
    """The dominant channel of a frame's pixel: 'red', 'green' or 'blue'."""
    assert rgb is not None, "no frame decoded"
    return ("red", "green", "blue")[max(range(3), key=lambda i: rgb[i])]


def open_card(page, cards, name: str):
    with page.expect_navigation():
        cards.filter(has=page.locator(".name", has_text=re.compile(f"^{re.escape(name)}$"))) \
            .locator("a.card-link").click()


# -- search -------------------------------------------------------------------------------------

def test_typing_red_ranks_both_red_clips_first_each_with_the_time_it_matches(site, visit):
    page = visit.page
    cards = search(page, site.url, "red")
    names = card_names(cards)
    assert sorted(names[:2]) == ["late red.webm", "red.webm"], names
    assert set(names[2:]) == {"blue.avi", "green.mp4", "spin.gif"}, names
    assert page.get_by_role("searchbox").input_value() == "red"  # the query stays in the box
    for card in cards.all()[:2]:
        when = card.locator(".when").inner_text()
        start, end = (seconds(t) for t in re.split(r"\s*[–-]\s*", when))
        assert 0 <= start < end, when
        assert card.locator("svg.scorebar").is_visible()  # the score against the threshold
    late = cards.filter(has_text="late red.webm").locator(".when").inner_text()
    assert 9 <= seconds(re.split(r"\s*–\s*", late)[0]) <= 14, late  # red from ~12 s
    # every thumbnail loaded (not a broken image)
    page.wait_for_function("() => [...document.querySelectorAll('#results img')]"
                           ".every(i => i.complete && i.naturalWidth > 0)")
    visit.shot("search-red")
    assert not visit.problems()


def test_the_first_keystroke_in_the_search_box_asks_to_start_the_text_model(site, visit):
    """app.js posts /api/search/warm on the box's first input, with the page's CSRF token and
    origin, so the app may start the text model while the query is typed; once a page."""
    page = visit.page
    page.goto(site.url + "/")
    sent = []
    page.on("request", lambda r: sent.append(r.url) if r.url.endswith("/api/search/warm")
            else None)
    with page.expect_response(lambda r: r.url.endswith("/api/search/warm")) as answer:
        page.get_by_role("searchbox").press_sequentially("red")
    warm = answer.value  # 200 "not needed" (this app embeds text itself); 403 without the
    assert warm.request.method == "POST" and warm.status == 200  # page's token and origin
    page.get_by_role("searchbox").press_sequentially(" ball")
    page.wait_for_timeout(300)
    assert len(sent) == 1  # once a page, not a request a keystroke
    assert not visit.problems()


def test_the_empty_search_page_lists_the_clips_tagged_lately(site, visit):
    page = visit.page
    page.goto(site.url + "/")
    assert page.get_by_role("heading", name="Tagged lately").is_visible()
    assert len(card_names(page.locator("ol#results > li.card"))) == 5
    visit.shot("search-empty")
    assert not visit.problems()


def _sideways(page) -> list[str]:
    """Nothing when the page fits the window's width; else what sticks out past its right edge
    (the page scrolls sideways)."""
    return page.evaluate(
        "() => { const root = document.documentElement;"
        " if (root.scrollWidth <= root.clientWidth) return [];"
        " return [...document.querySelectorAll('body *')]"
        ".filter(e => e.getBoundingClientRect().right > root.clientWidth + 0.5)"
        ".map(e => e.tagName.toLowerCase() + '.' + (e.getAttribute('class') || '')); }")


def test_on_a_phone_the_search_results_fit_the_width_of_the_screen(site, visit):
    page = visit.page
    page.set_viewport_size(PHONE)
    search(page, site.url, "red")
    visit.shot("search-red-phone")
    assert _sideways(page) == []
    assert not visit.problems()


def test_on_a_phone_a_clip_page_fits_the_width_of_the_screen(site, visit):
    page = visit.page
    page.set_viewport_size(PHONE)
    open_card(page, search(page, site.url, "red"), "late red.webm")
    visit.shot("clip-late-red-phone")
    assert _sideways(page) == []


@pytest.mark.parametrize("size", ["desktop", "phone"])
def test_every_main_page_fits_the_width_of_a_desktop_and_of_a_phone(site, visit, size):
    """The library, a clip, the tags, the teach preview, status and calibrate, each drawn
    (a screenshot to look at) with nothing past the window's right edge and no error."""
    page = visit.page
    page.set_viewport_size(PHONE if size == "phone" else VIEWPORT)
    wide = {}
    for name, route in (("library", "/library"), ("tags", "/tags"), ("status", "/status"),
                        ("calibrate", "/calibrate")):
        page.goto(site.url + route)
        visit.shot(f"{name}-{size}")
        wide[name] = _sideways(page)
    open_card(page, search(page, site.url, "red"), "late red.webm")
    visit.shot(f"clip-{size}")
    wide["clip"] = _sideways(page)
    cards = search(page, site.url, "red")
    cards.locator("input[name=clip]").first.check()
    page.locator("#teach input[name=label]").fill("crimson thing")
    page.locator("#teach-preview").click()
    page.wait_for_function("() => document.querySelector('#teach-count').textContent !== ''")
    visit.shot(f"teach-{size}")
    wide["teach"] = _sideways(page)
    assert {k: v for k, v in wide.items() if v} == {}
    assert not visit.problems()


# -- a clip's page ------------------------------------------------------------------------------

def test_a_clicked_result_plays_from_the_segment_shown_on_its_card(site, visit):
    page = visit.page
    cards = search(page, site.url, "red")
    when = cards.filter(has_text="late red.webm").locator(".when").inner_text()
    start = seconds(re.split(r"\s*–\s*", when)[0])
    assert start >= 9  # the green part is not the match
    open_card(page, cards, "late red.webm")
    assert page.get_by_role("heading", level=1).inner_text() == "late red.webm"
    state = video(page)
    assert state["error"] is None, state
    assert abs(state["currentTime"] - start) <= SEEK_SLACK, (state, start)
    state = wait_at(page, start)  # decoded there: really playable, and the frame is red
    assert state["width"] > 0 and state["error"] is None, state
    assert colour(state["rgb"]) == "red", state
    assert 31 <= state["duration"] <= 33, state
    state = play_a_little(page, start + 0.5)
    assert state["error"] is None and colour(state["rgb"]) == "red", state
    visit.shot("clip-late-red")
    assert not visit.problems()


def test_a_clip_browsers_cannot_play_shows_its_webm_preview_and_says_why(site, visit):
    page = visit.page
    cards = search(page, site.url, "blue")
    open_card(page, cards, "blue.avi")
    player = page.locator("video#player.preview")
    assert player.is_visible()
    assert "/preview?" in player.get_attribute("src")
    state = video(page, "video#player.preview", ready=2)
    assert state["error"] is None, state
    assert state["readyState"] >= 2 and state["width"] > 0, state
    assert 2 <= state["duration"] <= 12.5, state  # a preview of the segment, not the clip
    assert colour(state["rgb"]) == "blue", state
    note = page.locator(".player .note")
    assert note.is_visible()
    assert "browsers cannot play the original" in note.inner_text()
    assert note.get_by_role("link", name="Download the original").is_visible()
    state = play_a_little(page, 0.5)  # it plays
    assert state["error"] is None and colour(state["rgb"]) == "blue", state
    visit.shot("clip-blue-preview")
    assert not visit.problems()


def test_a_gif_is_shown_as_its_image(site, visit):
    page = visit.page
    open_card(page, search(page, site.url, "blue"), "spin.gif")
    page.wait_for_function("() => { const i = document.querySelector('img#player');"
                           " return i && i.complete && i.naturalWidth > 0; }")
    visit.shot("clip-gif")
    assert not visit.problems()


def test_a_segment_link_in_the_tags_table_seeks_the_video_there(site, visit):
    page = visit.page
    open_card(page, search(page, site.url, "red"), "late red.webm")
    wait_at(page, float(page.locator("#player").get_attribute("data-start")))
    row = page.locator("table.tags tbody tr", has=page.locator("td", has_text=re.compile(
        "^green$")))
    link = row.locator("a.seek").first
    target = float(link.get_attribute("data-time"))
    assert target < 2  # green is the clip's first 12 s
    link.click()
    state = wait_at(page, target)
    assert colour(state["rgb"]) == "green", state
    # and back to the match, from the sentence above the timeline
    match = page.locator("p.match a.seek")
    back = float(match.get_attribute("data-time"))
    match.click()
    state = wait_at(page, back)
    assert back >= 9 and colour(state["rgb"]) == "red", state
    assert not visit.problems()


def test_a_click_on_the_plot_seeks_the_video_to_the_time_under_the_pointer(site, visit):
    page = visit.page
    open_card(page, search(page, site.url, "red"), "late red.webm")
    wait_at(page, float(page.locator("#player").get_attribute("data-start")))
    svg = page.locator(".plot svg.wide")  # the desktop's plot (a phone has its own)
    area = svg.locator("rect.plot-area")
    box, view = area.bounding_box(), svg.bounding_box()
    duration = float(page.locator(".plot").get_attribute("data-duration"))
    target = 4.0  # s: in the green part
    svg.click(position={"x": box["x"] - view["x"] + box["width"] * target / duration,
                        "y": box["y"] - view["y"] + box["height"] / 2})
    state = wait_at(page, target)
    assert colour(state["rgb"]) == "green", state
    assert not visit.problems()


# -- the other pages ----------------------------------------------------------------------------

def test_the_tags_page_counts_the_clips_of_each_tag(site, visit):
    page = visit.page
    page.goto(site.url + "/")
    with page.expect_navigation():
        page.get_by_role("link", name="Tags", exact=True).click()
    rows = page.locator("table.tags tbody tr")
    counts = {r.locator("td").nth(0).inner_text(): int(r.locator("td").nth(1).inner_text())
              for r in rows.all()}
    assert counts == {"red": 2, "green": 1, "sea": 2}
    assert "blue water, blue sky" in rows.filter(has_text="sea").inner_text()
    visit.shot("tags")
    with page.expect_navigation():  # a tag's name lists its clips
        rows.filter(has_text="red").get_by_role("link", name="red").click()
    assert sorted(card_names(page.locator("ol#results > li.card"))) == ["late red.webm",
                                                                        "red.webm"]
    visit.shot("search-tag-red")
    assert not visit.problems()


def test_the_status_page_shows_the_store_and_the_clips_tagged_lately(site, visit):
    page = visit.page
    page.goto(site.url + "/status")
    facts = dict(zip(page.locator("dl.facts dt").all_inner_texts(),
                     page.locator("dl.facts dd").all_inner_texts()))
    assert "state.sqlite3" in facts["store"] and "5 tagged" in facts["store"], facts
    assert "5 in the search index" in facts["store"], facts
    assert facts["daemon"] == "not running", facts
    assert page.locator("ul.recent li a").count() == 5
    assert page.locator("table.failures tbody").inner_text().strip() == "none"
    visit.shot("status")
    assert not visit.problems()


# -- a token ------------------------------------------------------------------------------------

def test_with_a_token_the_login_form_refuses_a_wrong_one_and_the_right_one_lets_you_search(
        site, visit):
    page = visit.page
    first = page.goto(site.locked + "/?q=red")
    assert first.status == 401
    field_ = page.get_by_label("Token")
    assert field_.is_visible() and page.locator("ol#results").count() == 0
    visit.shot("login")
    field_.fill("not-the-token")
    with page.expect_navigation() as wrong:
        field_.press("Enter")
    assert wrong.value.status == 401
    assert page.get_by_role("alert").inner_text() == "That is not the token."
    visit.shot("login-wrong")
    page.get_by_label("Token").fill(TOKEN)
    with page.expect_navigation():
        page.get_by_role("button", name="Log in").click()
    assert page.url == site.locked + "/?q=red"  # back where the login was asked for
    assert card_names(page.locator("ol#results > li.card"))[:2] in (
        ["red.webm", "late red.webm"], ["late red.webm", "red.webm"])
    assert page.get_by_role("button", name="Log out").is_visible()
    cards = search(page, site.locked, "blue")
    assert sorted(card_names(cards)[:2]) == ["blue.avi", "spin.gif"]
    assert not visit.problems(allow_status={401})


# -- the Content-Security-Policy --------------------------------------------------------------

def test_rejecting_a_tag_on_its_page_takes_it_off_the_page_the_sidecar_and_the_xmp(
        site, visit, made):
    clip = made["clips"] / "red.webm"
    xmp = made["clips"] / "red.webm.xmp"
    sidecar = Path(f"{clip}.autotag.json")
    assert "Activity|red" in xmp.read_text()
    page = visit.page
    open_card(page, search(page, site.url, "red"), "red.webm")
    row = page.locator('tr[data-label="red"]')
    assert "given" in row.get_attribute("class")
    with page.expect_navigation():
        row.get_by_role("button", name="Reject red").click()
    row = page.locator('tr[data-label="red"]')
    assert "rejected" in row.get_attribute("class") and "not-given" in row.get_attribute("class")
    assert row.locator(".badge").inner_text() == "rejected"
    visit.shot("clip-red-rejected")
    data = json.loads(sidecar.read_text())
    assert data["tags"] == [] and data["reviews"]["rejected"] == ["red"]
    assert "Activity|red" not in xmp.read_text()
    row.focus()
    with page.expect_navigation():
        page.keyboard.press("u")  # undo, from the keyboard
    assert "given" in page.locator('tr[data-label="red"]').get_attribute("class").split()
    assert [t["label"] for t in json.loads(sidecar.read_text())["tags"]] == ["red"]
    assert "Activity|red" in xmp.read_text()
    assert not visit.problems()


def test_no_page_breaks_the_content_security_policy_or_throws(site, visit):
    """Every test asserts visit.problems() on the pages it visits; this one visits the rest
    (a played clip seeking from its links and its plot, a second preview, a tag's clips, a
    message, an error page, the login page), then checks that the check itself can fail."""
    page = visit.page
    open_card(page, search(page, site.url, "red"), "red.webm")
    video(page)
    for link in page.locator("a.seek").all():
        link.click()
    page.locator(".plot svg.wide").click()
    open_card(page, search(page, site.url, "green"), "green.mp4")
    video(page, ready=2)
    page.goto(site.url + "/?tag=sea")
    page.goto(site.url + "/?q=zzzz")
    assert "knows none of the words" in page.get_by_role("status").inner_text()
    visit.shot("search-unknown-words")
    assert page.goto(site.url + "/clips/999999").status == 404
    visit.shot("error-404")
    assert page.goto(site.locked + "/tags").status == 401  # the login page
    assert not visit.problems(allow_status={401, 404})
    # an inline script is refused, and the refusal recorded
    page.goto(site.url + "/tags")
    page.evaluate("() => { const s = document.createElement('script');"
                  " s.textContent = 'window.__ran = 1'; document.body.append(s); }")
    page.wait_for_function("() => window.__csp.length > 0")
    assert page.evaluate("window.__ran") is None
    assert [v["directive"] for v in visit.csp] == ["script-src-elem"]


def test_on_a_phone_the_teach_preview_shows_what_the_tag_would_take_before_it_writes(
        site, visit, made):
    page = visit.page
    page.set_viewport_size(PHONE)
    before = made["config"].read_text()
    cards = search(page, site.url, "red")
    for name in ("red.webm", "late red.webm"):
        cards.filter(has=page.locator(".name", has_text=re.compile(f"^{re.escape(name)}$"))) \
            .locator("input[name=clip]").check()
    page.locator("#teach input[name=label]").fill("crimson thing")
    page.locator("#teach-preview").click()
    count = page.locator("#teach-count")
    count.wait_for(state="visible")
    page.wait_for_function("() => document.querySelector('#teach-count').textContent !== ''")
    assert re.match(r"The tag would go on \d+ clips?", count.inner_text()), count.inner_text()
    assert page.locator("#teach-taken li").count() >= 1
    assert page.locator("#teach-slider").is_visible()
    visit.shot("teach-preview-phone")
    assert _sideways(page) == []
    assert made["config"].read_text() == before  # a preview writes nothing
    assert not visit.problems()
