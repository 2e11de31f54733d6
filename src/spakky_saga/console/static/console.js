// The list's live refresh: while "live" is checked, fetch this same page every few seconds
// and swap in its counts and rows. The server escapes everything it renders; the new nodes
// come from a parsed document, never from a string assigned to innerHTML.
"use strict";
(function () {
  const live = document.getElementById("live");
  if (!live) {
    return;
  }
  const seconds = Math.max(1, Number(live.dataset.seconds) || 5);
  async function refresh() {
    if (!live.checked || document.hidden) {
      return;
    }
    try {
      const response = await fetch(window.location.href, {
        credentials: "same-origin",
        headers: { "X-Requested-With": "console-refresh" },
      });
      if (!response.ok) {
        return;
      }
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
      for (const selector of ["section.counts", "#rows"]) {
        const now = document.querySelector(selector);
        const next = fresh.querySelector(selector);
        if (now && next) {
          now.replaceWith(document.importNode(next, true));
        }
      }
      document.body.dataset.refreshed = String(Date.now());
    } catch (error) {
      // the console may be restarting: try again at the next tick
    }
  }
  window.setInterval(refresh, seconds * 1000);
})();
