// Drover portal: live updates of the deployment page, nothing else. The page works without
// this script (reload to see changes); with it, the log follows over server-sent events and
// the status, tasks and actions are fetched again whenever the deployment changes.
"use strict";
(function () {
  var live = document.getElementById("live");
  if (!live || !live.dataset.events || !window.EventSource) return;
  var log = document.getElementById("log");
  var note = document.getElementById("live-note");
  if (note) note.textContent = "Following live.";
  var pending = false;
  function refresh() {
    if (pending) return;
    pending = true;
    fetch(live.dataset.fragment, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        pending = false;
        // Server-rendered and escaped by the template (never text from the event itself).
        if (html !== null) live.innerHTML = html;
      })
      .catch(function () { pending = false; });
  }
  var es = new EventSource(live.dataset.events);
  es.addEventListener("log", function (ev) {
    try {
      var line = JSON.parse(ev.data);
      var atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
      log.appendChild(document.createTextNode(line.line + "\n"));
      if (atBottom) log.scrollTop = log.scrollHeight;
    } catch (e) { /* a malformed frame is skipped */ }
  });
  es.addEventListener("deployment", refresh);
  es.addEventListener("end", function () {
    es.close();
    refresh();
    if (note) note.textContent = "The deployment has ended.";
  });
  es.onerror = function () {
    if (note) note.textContent = "Live updates paused; reload the page if this lasts.";
  };
})();
