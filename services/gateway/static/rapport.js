// Live updates for pages that ask for them: an element with data-live-source (a Server-Sent Events
// URL on this origin) and data-live-refresh (the URL of its own fresh fragment) is fetched again,
// through htmx, whenever an event arrives. Without scripts the page still works: reload it.
(function () {
  "use strict";
  function watch(element) {
    var source = new EventSource(element.getAttribute("data-live-source"));
    var status = document.getElementById(element.getAttribute("data-live-status") || "");
    var pending = null;
    function refresh() {
      pending = null;
      if (document.querySelector(".alert form[data-busy]")) { pending = setTimeout(refresh, 500); return; }
      window.htmx.ajax("GET", element.getAttribute("data-live-refresh"), {target: element, swap: "innerHTML"});
    }
    function changed() { if (pending === null) { pending = setTimeout(refresh, 150); } }
    source.onmessage = changed;
    ["alert.raised", "alert.updated", "alert.acknowledged", "alert.resolved", "alert.escalated", "changed"]
      .forEach(function (name) { source.addEventListener(name, changed); });
    source.onopen = function () { if (status) { status.textContent = "Live: updates appear here as they happen."; } };
    source.onerror = function () { if (status) { status.textContent = "Live updates paused; reconnecting."; } };
    element.setAttribute("data-live-connected", "true");
  }
  function start() {
    document.querySelectorAll("[data-live-source]").forEach(function (element) {
      if (!element.hasAttribute("data-live-connected")) { watch(element); }
    });
  }
  document.addEventListener("DOMContentLoaded", start);
})();
