// autotag's one script: start playback at the matching moment and seek from the timeline.
// The pages work without it (a media fragment #t= starts the video where the match is).
"use strict";
(function () {
  // keys on a focused tag row: c confirm, r reject, u undo (the row's own buttons, submitted)
  document.querySelectorAll("tr[data-label]").forEach(function (row) {
    row.addEventListener("keydown", function (event) {
      const verdict = {c: "confirm", r: "reject", u: "clear"}[event.key];
      const button = verdict && row.querySelector('button[data-verdict="' + verdict + '"]');
      if (button) { event.preventDefault(); button.click(); }
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
  // a click on the plot seeks to the time under the pointer
  const plot = document.querySelector(".plot");
  const svg = plot && plot.querySelector("svg");
  const area = svg && svg.querySelector("rect.plot-area");
  if (area) {
    svg.addEventListener("click", function (event) {
      const box = svg.getBoundingClientRect();
      const view = svg.viewBox.baseVal;
      const x = (event.clientX - box.left) * view.width / box.width;
      const x0 = area.x.baseVal.value, x1 = x0 + area.width.baseVal.value;
      const duration = parseFloat(plot.dataset.duration);
      if (x < x0 || x > x1) return;
      seek((x - x0) / (x1 - x0) * duration);
    });
  }
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
