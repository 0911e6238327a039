"""The forms that change things: a review on a clip's page, thresholds calibrated from reviews,
a tag taught from selected clips → the store or the config file (analysis.config_editor) →
a reload, so tagging and the pages use what was written → a redirect back.

A form's fields come through params (bounded, parsed with the standard library); the config
is edited only through the config editor, which keeps the user's comments and layout.
"""

from __future__ import annotations

import hashlib
import logging
from urllib.parse import quote, urlencode

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from autotag.reviews import Verdicts
from autotag.web import params
from autotag.web.library import Library, library_of
from autotag.web.pages import render

log = logging.getLogger(__name__)


async def page_review(request: Request) -> Response:
    """The clip page's buttons: a form with label and verdict (confirm, reject, clear)."""
    form = await params.form(request)
    label, verdict = form.get("label", ""), form.get("verdict", "")
    if verdict not in ("confirm", "reject", "clear"):
        raise HTTPException(400, "verdict must be confirm, reject or clear")
    verdicts = Verdicts(**{verdict: (label,)})
    file_id = request.path_params["id"]
    await run_in_threadpool(library_of(request).review, file_id, verdicts)
    back = {k: form[k] for k in ("q", "t") if form.get(k)}
    return RedirectResponse(f"{params.prefix(request)}/clips/{file_id}"
                            + (f"?{urlencode(back)}" if back else "")
                            + f"#tag-{quote(label, safe='')}", 303)  # app.js focuses its row


def _proposal(lib: Library):
    """The thresholds the stored reviews ask for (analysis.calibration.from_reviews)."""
    from autotag.analysis.calibration import from_reviews

    return from_reviews(lib.store, lib.model, lib.vocabulary, lib.config.tagging)


def _config_version(lib: Library) -> str:
    """A digest of the config file: the form that writes thresholds must have been shown
    the file as it is now (another edit in between is not overwritten blindly)."""
    source = lib.config.source
    try:
        return hashlib.sha256(source.read_bytes()).hexdigest()[:16] if source else ""
    except OSError:
        return ""


def page_calibrate(request: Request) -> Response:
    """Thresholds from reviews: what the reviews ask for, beside the config's, to write."""
    lib = library_of(request)
    return render(request, "calibrate.html", {
        "proposal": _proposal(lib), "version": _config_version(lib),
        "config": lib.config.source, "written": request.query_params.get("written")})


async def calibrate_write(request: Request) -> Response:
    """Write the thresholds the reviews ask for into the config (the config editor, as
    `autotag calibrate --from-reviews` does), then reload so tagging and pages use them."""
    from autotag.analysis.config_editor import CannotEdit, write_tagging

    form = await params.form(request)
    lib = library_of(request)
    _editable(lib)
    if form.get("version") != _config_version(lib):
        raise HTTPException(409, "the config file changed since this page was shown; reload "
                                 "the page and look again")
    proposal = await run_in_threadpool(_proposal, lib)
    if not proposal.changed:
        return RedirectResponse(f"{params.prefix(request)}/calibrate?written=0", 303)
    try:
        await run_in_threadpool(write_tagging, lib.config.source, proposal.merged)
    except (CannotEdit, OSError) as exc:
        raise HTTPException(409, f"cannot edit {lib.config.source}: {exc}") from None
    log.info("calibrated from reviews in the web app: %s", ", ".join(
        f"{t.label} {t.old:g} → {t.new:g}" for t in proposal.tags
        if t.new is not None and t.new != t.old))
    await _reload(request)
    return RedirectResponse(f"{params.prefix(request)}/calibrate?written=1", 303)


async def teach_tag(request: Request) -> Response:
    """The search page's "teach a tag from the selected clips": a vocabulary entry
    `- LABEL: {examples: [...]}` added to the config with the config editor, then a reload
    (the tag's vector comes from the clips' stored embeddings)."""
    from autotag.analysis.config_editor import (
        CannotEdit,
        added_tag,
        snippet_tag,
        write_config,
        write_tagging,
    )

    form = await params.form_lists(request)
    lib = library_of(request)
    label = params.plain_name((form.get("label") or [""])[0])
    ids = sorted({params.clip_id(v) for v in form.get("clip", [])})
    if not ids:  # back to the page it came from, the label kept in its box
        back = params.safe_next((form.get("back") or ["/"])[0])
        joiner = "&" if "?" in back else "?"
        return RedirectResponse(f"{params.prefix(request)}{back}{joiner}"
                                + urlencode({"label": label, "teach": "select"}) + "#teach", 303)
    threshold = params.teach_threshold((form.get("threshold") or [""])[0])
    examples = [lib.clip(i).path for i in ids]
    _editable(lib)
    try:
        text = await run_in_threadpool(added_tag, lib.config.source, label, examples)
        await run_in_threadpool(write_config, lib.config.source, text)
        if threshold is not None and threshold != lib.config.tagging.min_score:
            # the threshold the preview was moved to: the tag's own, in tagging.thresholds
            await run_in_threadpool(write_tagging, lib.config.source,
                                    {**lib.config.tagging.thresholds, label: threshold})
    except (CannotEdit, OSError) as exc:
        raise HTTPException(409, f"cannot add the tag to {lib.config.source} ({exc}); add this "
                                 f"line to its vocabulary: {snippet_tag(label, examples)}") \
            from None
    log.info("taught the tag %r from %d example clip(s) in the web app", label, len(examples))
    await _reload(request)
    return RedirectResponse(f"{params.prefix(request)}/?{urlencode({'tag': label})}", 303)


def _editable(lib: Library) -> None:
    """409 unless a config file was read (the one a form writes)."""
    if lib.config.source is None:
        raise HTTPException(409, "autotag runs on its defaults, with no config file to write")


async def _reload(request: Request) -> None:
    """Apply the config just written (app.state.reload: the daemon's SIGHUP path, or
    `autotag serve`'s own); nothing when the app was built without one."""
    reload = request.app.state.reload
    if reload is not None:
        await run_in_threadpool(reload)
