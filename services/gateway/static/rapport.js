// Progressive enhancement for Rapport's pages; every page works without it.
//
// Live updates: an element with data-live-source (a Server-Sent Events URL on this origin) and
// data-live-refresh (the URL of its own contents) has its contents fetched again, through htmx,
// whenever an event arrives; not while someone is typing in one of its fields (a refresh that was
// already on its way when they started is not swapped in: what they typed stays, and the status line
// says changes are waiting).
// After a form is answered in place, focus moves to what the answer said, so a keyboard or screen
// reader user is not left on a button that is gone.
(function () {
  "use strict";
  var LIVE = "Live: changes appear here as they happen.";
  var WAITING = "Changes are waiting until you finish typing.";
  function typing(element) {
    var active = document.activeElement;
    return active && element.contains(active) && active.tagName === "INPUT" && active.value !== "";
  }
  function watch(element) {
    var source = new EventSource(element.getAttribute("data-live-source"));
    var status = document.getElementById(element.getAttribute("data-live-status") || "");
    var pending = null;
    function refresh() {
      pending = null;
      if (typing(element)) { pending = setTimeout(refresh, 1000); return; }
      window.htmx.ajax("GET", element.getAttribute("data-live-refresh"), {target: element, swap: "innerHTML"});
    }
    function changed() { if (pending === null) { pending = setTimeout(refresh, 150); } }
    element.addEventListener("htmx:beforeSwap", function (event) {
      if (event.detail.target !== element || !typing(element)) { return; }
      event.detail.shouldSwap = false;
      if (status) { status.textContent = WAITING; }
      if (pending === null) { pending = setTimeout(refresh, 1000); }
    });
    element.addEventListener("htmx:afterSwap", function (event) {
      if (event.detail.target === element && status && status.textContent === WAITING) { status.textContent = LIVE; }
    });
    source.addEventListener("changed", changed);
    source.onmessage = changed;
    source.onopen = function () {
      element.setAttribute("data-live", "open");
      if (status) { status.textContent = LIVE; }
    };
    source.onerror = function () {
      element.setAttribute("data-live", "reconnecting");
      if (status) { status.textContent = "Live updates paused; reconnecting."; }
    };
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-live-source]").forEach(watch);
  });
  document.addEventListener("htmx:afterSwap", function (event) {
    var id = event.detail.target && event.detail.target.id;
    var swapped = id ? document.getElementById(id) : null;
    var said = swapped ? swapped.querySelector(".said, .problem") : null;
    if (said) {
      said.setAttribute("tabindex", "-1");
      said.focus();
      // the card may go at the next live refresh (a resolved alert leaves the list): the page's
      // status line keeps what was said
      var status = document.getElementById("live-status");
      if (status) { status.textContent = said.textContent; }
    }
  });
})();
