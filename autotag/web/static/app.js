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
