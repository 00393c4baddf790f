/* Sendit: refresh the live part of a page in place (no full-page jump, no framework).
   An element with data-refresh="<url>" gets its content replaced by that URL's HTML every
   data-interval ms. The partial answers with X-Sendit-Partial: 1; anything else (e.g. the
   password form after the session ended) reloads the page so the user sees it. */
(function () {
  "use strict";
  function start(live) {
    var url = live.getAttribute("data-refresh");
    var every = parseInt(live.getAttribute("data-interval") || "5000", 10);
    function schedule() { window.setTimeout(tick, every); }
    function tick() {
      if (document.hidden) { schedule(); return; }
      fetch(url, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" }, cache: "no-store" })
        .then(function (response) {
          if (response.ok && response.headers.get("X-Sendit-Partial") !== "1") {
            window.location.reload();
            return null;
          }
          if (!response.ok) { throw new Error("HTTP " + response.status); }
          return response.text();
        })
        .then(function (html) {
          if (html === null || html === undefined) { return; }
          live.innerHTML = html;
          live.setAttribute("data-updated", String(Date.now()));
          live.classList.remove("stale");
        })
        .catch(function () { live.classList.add("stale"); })
        .then(schedule);
    }
    schedule();
  }
  document.addEventListener("DOMContentLoaded", function () {
    Array.prototype.forEach.call(document.querySelectorAll("[data-refresh]"), start);
  });
})();
