// autotag's one script: keys that keep focus (j/k move, c/r/u review), the library's selection,
// playback from the matching moment and seeking from the timeline. Every page works without it
// (forms post, links go, a media fragment #t= starts the video where the match is).
"use strict";

function typing(event) {
  // keys typed into a field, or with a modifier, are not shortcuts
  const t = event.target;
  return event.ctrlKey || event.metaKey || event.altKey ||
    (t && (t.tagName === "INPUT" || t.tagName === "SELECT" || t.tagName === "TEXTAREA") &&
     t.type !== "checkbox");
}

function step(items, current, by) {
  // the item `by` places from `current` (or the first), focused and scrolled into view
  const list = Array.from(items);
  if (!list.length) return null;
  const at = list.indexOf(current);
  const next = list[Math.min(Math.max(at < 0 ? 0 : at + by, 0), list.length - 1)];
  next.focus();
  next.scrollIntoView({block: "nearest"});
  return next;
}

(function () {
  // a clip's tag rows: j/k move, c confirm, r reject, u undo (the row's own button, submitted);
  // the page comes back with #tag-LABEL, and that row gets the focus again
  const rows = document.querySelectorAll("tr[data-label]");
  if (!rows.length) return;
  rows.forEach(function (row) {
    row.addEventListener("keydown", function (event) {
      if (typing(event)) return;
      if (event.key === "j" || event.key === "k") {
        event.preventDefault();
        step(rows, row, event.key === "j" ? 1 : -1);
        return;
      }
      const verdict = {c: "confirm", r: "reject", u: "clear"}[event.key];
      const button = verdict && row.querySelector('button[data-verdict="' + verdict + '"]');
      if (button) { event.preventDefault(); button.click(); }
    });
  });
  if (location.hash.startsWith("#tag-")) {
    const row = document.getElementById(location.hash.slice(1));
    if (row) { row.focus(); row.scrollIntoView({block: "center"}); }
  }
})();

(function () {
  // the library: cards j/k, x select, o or Enter open, c/r/u review the chosen tag (in place,
  // through the JSON API: the focus stays on the card)
  const grid = document.querySelector("ol.grid.library");
  if (!grid) return;
  const cards = grid.querySelectorAll("li.card");
  const form = document.getElementById("bulk");
  const count = document.getElementById("selected-count");
  const chosen = document.getElementById("bulk-tag");
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const labels = chosen ? Array.from(chosen.options).map(function (o) { return o.value; }) : [];
  const hint = count ? count.innerHTML : "";

  function boxes() { return grid.querySelectorAll('input[type="checkbox"][name="clip"]'); }
  function update() {
    const picked = Array.from(boxes()).filter(function (b) { return b.checked; });
    cards.forEach(function (card) {
      card.classList.toggle("selected", card.querySelector('input[name="clip"]').checked);
    });
    if (form) form.classList.toggle("active", picked.length > 0);
    if (count) {
      if (picked.length) {
        count.textContent = picked.length + " selected: ";
      } else {
        count.innerHTML = hint;
        bindAll();
      }
    }
  }
  function bindAll() {
    const all = document.getElementById("select-all");
    if (all) all.addEventListener("click", function () {
      boxes().forEach(function (b) { b.checked = true; });
      update();
    });
  }
  bindAll();
  grid.addEventListener("change", update);

  function chip(label, review) {
    const span = document.createElement("span");
    const at = labels.indexOf(label);
    span.className = "chip" + (at >= 0 ? " c" + (at % 10) : "") + (review ? " " + review : "");
    span.textContent = label;
    return span;
  }
  function review(card, verdict) {
    const label = chosen && chosen.value;
    if (!label) return;
    const body = {};
    body[verdict] = [label];
    card.setAttribute("aria-busy", "true");
    fetch(card.dataset.url.replace("/clips/", "/api/clips/") + "/reviews", {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
      body: JSON.stringify(body),
    }).then(function (response) {
      if (!response.ok) throw new Error("the review was refused (" + response.status + ")");
      return response.json();
    }).then(function (detail) {
      const chips = card.querySelector(".chips");
      chips.replaceChildren();
      detail.tags.forEach(function (t) { chips.append(chip(t.label, t.review)); });
      detail.ranking.forEach(function (t) {
        if (t.review === "rejected") chips.append(chip(t.label, "rejected"));
      });
      if (!chips.children.length) {
        const none = chip("no tag", null);
        none.classList.add("none");
        chips.append(none);
      }
      card.dataset.reviewed = verdict + " " + label;
    }).catch(function (error) {
      card.dataset.reviewed = "error";
      const note = document.createElement("span");
      note.className = "reviewed";
      note.setAttribute("role", "alert");
      note.textContent = String(error.message || error);
      card.append(note);
    }).finally(function () {
      card.removeAttribute("aria-busy");
      card.focus();
    });
  }

  cards.forEach(function (card) {
    card.addEventListener("keydown", function (event) {
      if (typing(event)) return;
      const key = event.key;
      if (key === "j" || key === "k" || key === "ArrowRight" || key === "ArrowLeft") {
        event.preventDefault();
        step(cards, card, key === "j" || key === "ArrowRight" ? 1 : -1);
      } else if (key === "x" || key === " ") {
        event.preventDefault();
        const box = card.querySelector('input[name="clip"]');
        box.checked = !box.checked;
        update();
      } else if (key === "o" || key === "Enter") {
        if (event.target !== card) return;
        event.preventDefault();
        location.assign(card.dataset.url);
      } else if (key === "c" || key === "r" || key === "u") {
        event.preventDefault();
        review(card, {c: "confirm", r: "reject", u: "clear"}[key]);
      }
    });
  });
  // j from anywhere on the page (nothing focused yet) starts at the first card
  document.addEventListener("keydown", function (event) {
    if (typing(event) || event.defaultPrevented) return;
    if ((event.key === "j" || event.key === "k") && !grid.contains(document.activeElement)) {
      event.preventDefault();
      step(cards, null, 0);
    }
  });
  if (form) update();
})();

(function () {
  // a teach form sent with nothing selected: say so here, the typed name kept
  document.querySelectorAll('form#teach, form#bulk').forEach(function (form) {
    form.addEventListener("submit", function (event) {
      const target = event.submitter && event.submitter.getAttribute("formaction");
      const teaching = form.id === "teach" || (target && target.endsWith("/tags"));
      const picked = document.querySelectorAll('input[name="clip"][form="' + form.id + '"]:checked');
      if (picked.length) return;
      event.preventDefault();
      let note = form.querySelector(".need-selection");
      if (!note) {
        note = document.createElement("p");
        note.className = "message need-selection";
        note.setAttribute("role", "alert");
        form.prepend(note);
      }
      note.textContent = teaching ? "Select the clips that show it first (tick their boxes)."
        : "Select clips first (tick their boxes, or press x on a card).";
    });
  });
})();

(function () {
  const player = document.getElementById("player");
  if (!player || player.tagName !== "VIDEO") return;
  // a preview starts at the segment itself: its time 0 is the clip's data-offset
  const offset = parseFloat(player.dataset.offset || "0");
  const start = parseFloat(player.dataset.start || "0");
  function seek(clipTime) {
    const t = clipTime - offset;
    if (player.classList.contains("preview") && (t < 0 || t > player.duration)) {
      const url = new URL(location.href);  // outside this preview: a preview from there
      url.searchParams.set("t", clipTime.toFixed(1));
      location.assign(url);
      return;
    }
    player.currentTime = t;
    player.play().catch(function () { /* autoplay refused: the user presses play */ });
  }
  // "More like this moment" follows the playhead
  const moment = document.getElementById("like-moment");
  if (moment) {
    player.addEventListener("timeupdate", function () {
      moment.href = moment.dataset.base.replace(/&amp;/g, "&") + (offset + player.currentTime).toFixed(1);
    });
  }
  if (player.readyState >= 1) {
    if (Math.abs(player.currentTime - start) > 0.5) player.currentTime = start;
  } else {
    player.addEventListener("loadedmetadata", function () {
      if (Math.abs(player.currentTime - start) > 0.5) player.currentTime = start;
    }, { once: true });
  }
  document.querySelectorAll(".seek").forEach(function (link) {
    link.addEventListener("click", function (event) {
      event.preventDefault();
      seek(parseFloat(link.dataset.time));
    });
  });
  // a click on the plot (the wide one or the phone's) seeks to the time under the pointer
  const plot = document.querySelector(".plot");
  const duration = plot && parseFloat(plot.dataset.duration);
  (plot ? plot.querySelectorAll("svg") : []).forEach(function (svg) {
    const area = svg.querySelector("rect.plot-area");
    if (!area) return;
    svg.addEventListener("click", function (event) {
      const box = svg.getBoundingClientRect();
      const view = svg.viewBox.baseVal;
      const x = (event.clientX - box.left) * view.width / box.width;
      const x0 = area.x.baseVal.value, x1 = x0 + area.width.baseVal.value;
      if (x < x0 || x > x1) return;
      seek((x - x0) / (x1 - x0) * duration);
    });
  });
})();
(function () {
  // the teach form's preview: what the new tag would take, before the config is written
  const form = document.getElementById("teach");
  const button = document.getElementById("teach-preview");
  if (!form || !button || !window.fetch) return;
  const base = form.getAttribute("action").replace(/\/tags$/, "");
  const result = document.getElementById("teach-result");
  const slider = document.getElementById("teach-slider");
  const hidden = document.getElementById("teach-threshold");
  button.hidden = false;
  function clips() {
    return Array.from(document.querySelectorAll('input[name="clip"][form="teach"]:checked'))
      .map(function (box) { return box.value; });
  }
  function list(id, items) {
    const ol = document.getElementById(id);
    ol.textContent = "";
    items.forEach(function (item) {
      const li = document.createElement("li");
      const a = document.createElement("a");
      a.href = base + "/clips/" + item.id;
      a.textContent = item.name;
      li.append(a, " " + item.score.toFixed(2) + (item.example ? " (example)" : ""));
      ol.append(li);
    });
    if (!items.length) ol.textContent = "none";
  }
  function show(threshold) {
    const ids = clips();
    if (!ids.length) { result.hidden = false; document.getElementById("teach-count").textContent = "Select the clips that show it first."; return; }
    const query = new URLSearchParams(ids.map(function (id) { return ["clip", id]; }));
    if (threshold !== undefined) query.set("threshold", threshold);
    fetch(base + "/api/teach/preview?" + query, { credentials: "same-origin" })
      .then(function (r) { return r.json().then(function (body) { return [r.ok, body]; }); })
      .then(function ([ok, body]) {
        result.hidden = false;
        const count = document.getElementById("teach-count");
        if (!ok) { count.textContent = body.error || "no preview"; return; }
        count.textContent = "The tag would go on " + body.count + " clip" + (body.count === 1 ? "" : "s") +
          (body.fitted ? " (against the library's " + body.background + " clips)." : " (the library is too small for a background: scored from the origin).");
        slider.max = Math.max(10, Math.ceil(body.threshold * 2));
        slider.value = body.threshold;
        document.getElementById("teach-value").textContent = body.threshold.toFixed(1);
        hidden.value = body.threshold === body.default_threshold ? "" : body.threshold;
        list("teach-taken", body.farthest_taken);
        list("teach-left", body.closest_left_out);
      });
  }
  button.addEventListener("click", function () { show(); });
  slider.addEventListener("input", function () { document.getElementById("teach-value").textContent = parseFloat(slider.value).toFixed(1); });
  slider.addEventListener("change", function () { show(slider.value); });
})();

(function () {
  // the search box's first keystroke starts the text model a new query needs: TensorFlow takes
  // seconds to start, about as long as typing a query does; nothing waits for the answer
  const box = document.querySelector('form.search input[name="q"]');
  const meta = document.querySelector('meta[name="csrf-token"]');
  if (!box || !meta) return;
  const base = box.form.getAttribute("action").replace(/\/$/, "");
  box.addEventListener("input", function () {
    fetch(base + "/api/search/warm", {
      method: "POST", credentials: "same-origin", headers: {"X-CSRF-Token": meta.content},
    }).catch(function () {});
  }, {once: true});
})();
