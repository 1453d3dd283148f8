// The web UI's only script (the Content-Security-Policy allows no inline script or handler):
// the CSRF token on every htmx request, live countdowns to a grant's end, copy buttons, select-all boxes,
// refusals shown where a form asks for them (data-swap-errors), and dropdown menus closing on Escape or elsewhere.
(function () {
  "use strict";

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  // htmx sends the token as a header; plain forms carry it as their hidden csrf_token field.
  document.addEventListener("htmx:configRequest", function (event) {
    var token = csrfToken();
    if (token) {
      event.detail.headers["X-CSRF-Token"] = token;
    }
  });

  function spell(seconds) {
    var d = Math.floor(seconds / 86400);
    var h = Math.floor((seconds % 86400) / 3600);
    var m = Math.floor((seconds % 3600) / 60);
    var s = seconds % 60;
    var parts = [];
    if (d) parts.push(d + "d");
    if (d || h) parts.push(h + "h");
    if (d || h || m) parts.push(m + "m");
    parts.push(s + "s");
    return parts.join(" ");
  }

  function tick() {
    var now = Date.now();
    document.querySelectorAll("[data-countdown]").forEach(function (element) {
      var end = Date.parse(element.getAttribute("data-countdown"));
      if (isNaN(end)) return;
      var left = Math.round((end - now) / 1000);
      element.textContent = left > 0 ? "(" + spell(left) + " left)" : "(time is up)";
    });
  }

  document.addEventListener("DOMContentLoaded", tick);
  document.addEventListener("htmx:afterSettle", tick);
  setInterval(tick, 1000);

  // A "select every row" box (the permissions table): ticks or clears the rows' boxes of that name.
  document.addEventListener("change", function (event) {
    var all = event.target.closest ? event.target.closest("input[data-select-all]") : null;
    if (!all) return;
    var name = all.getAttribute("data-select-all");
    document.querySelectorAll('input[type="checkbox"][name="' + name + '"]').forEach(function (box) {
      box.checked = all.checked;
    });
  });

  // htmx drops an error answer (4xx, 5xx); a form marked data-swap-errors shows it instead, since there the
  // answer says why its action was not done (a connection test the target refused, a discovery that failed).
  document.addEventListener("htmx:beforeSwap", function (event) {
    var source = event.detail.requestConfig && event.detail.requestConfig.elt;
    if (event.detail.isError && source && source.closest && source.closest("[data-swap-errors]")) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });

  // A dropdown menu (the admin pages) closes on Escape, giving the focus back to its summary, and on a click
  // anywhere else.
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape") return;
    var open = document.querySelector("details.dropdown[open]");
    if (!open) return;
    open.removeAttribute("open");
    open.querySelector("summary").focus();
  });

  document.addEventListener("click", function (event) {
    var inside = event.target.closest ? event.target.closest("details.dropdown") : null;
    document.querySelectorAll("details.dropdown[open]").forEach(function (menu) {
      if (menu !== inside) menu.removeAttribute("open");
    });
  });

  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest("button[data-copy]") : null;
    if (!button) return;
    var source = document.getElementById(button.getAttribute("data-copy"));
    if (!source || !navigator.clipboard) return;
    navigator.clipboard.writeText(source.textContent).then(function () {
      button.textContent = "Copied";
    });
  });
})();
