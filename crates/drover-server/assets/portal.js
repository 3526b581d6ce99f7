// Drover portal: live updates of the deployment page and the client-secret download. Every page
// works without this script (reload to see changes; copy the secret's file by hand); with it,
// the log follows over server-sent events and the status, tasks and actions are fetched again
// whenever the deployment changes.
"use strict";
// The client- and agent-secret pages' download: the file is made here from the page's text (a Blob URL,
// so no secret ends up in the browser's download history as a data: URL would).
(function () {
  var b = document.getElementById("download");
  if (!b || !window.Blob) return;
  b.addEventListener("click", function () {
    var text = document.getElementById(b.dataset.from).textContent;
    var url = URL.createObjectURL(new Blob([text], { type: b.dataset.type || "application/json" }));
    var a = document.createElement("a");
    a.href = url;
    a.download = b.dataset.filename;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(function () { URL.revokeObjectURL(url); }, 10000);
  });
})();
(function () {
  var live = document.getElementById("live");
  if (!live || !live.dataset.events || !window.EventSource) return;
  var log = document.getElementById("log");
  var note = document.getElementById("live-note");
  if (note) note.textContent = "Following live.";
  var pending = false;
  // What the page shows: the deployment's last change and its waiting sentence. The server
  // sends the current deployment first; an event that shows nothing new fetches nothing.
  function keyOf(d) {
    return d.updated_at + "|" + (d.waiting_for ? d.waiting_for.sentence : "");
  }
  // Never replace a form someone is filling in: try again shortly.
  function busy() {
    var inputs = live.querySelectorAll("input:not([type=hidden])");
    for (var i = 0; i < inputs.length; i++) {
      if (inputs[i].value !== "" || inputs[i] === document.activeElement) return true;
    }
    return false;
  }
  function refresh(key) {
    if (pending) return;
    if (busy()) { setTimeout(function () { refresh(key); }, 2000); return; }
    pending = true;
    // A redirect means the session has ended (to sign-in): that page is not put in this one.
    fetch(live.dataset.fragment, { credentials: "same-origin", redirect: "manual", headers: { "Accept": "text/html" } })
      .then(function (r) {
        if (r.type === "opaqueredirect" || !r.ok) {
          if (note) note.textContent = "Live updates stopped; reload the page.";
          return null;
        }
        return r.text();
      })
      .then(function (html) {
        pending = false;
        // Server-rendered and escaped by the template (never text from the event itself).
        if (html !== null && !busy()) {
          live.innerHTML = html;
          if (key) live.dataset.key = key;
          live.dataset.updates = String(Number(live.dataset.updates || "0") + 1);
        }
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
  es.addEventListener("deployment", function (ev) {
    var key = null;
    try { key = keyOf(JSON.parse(ev.data)); } catch (e) { /* fetch anyway */ }
    if (key !== null && key === live.dataset.key) return;
    refresh(key);
  });
  es.addEventListener("end", function () {
    es.close();
    refresh(null);
    if (note) note.textContent = "The deployment has ended.";
  });
  es.onerror = function () {
    if (note) note.textContent = "Live updates paused; reload the page if this lasts.";
  };
})();
