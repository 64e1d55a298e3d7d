// Live run page: poll status.json, update counters, refresh plots when the run changed.
(function () {
  "use strict";
  var root = document.getElementById("live-run");
  if (!root) { return; }
  var url = root.getAttribute("data-status-url");
  var period = 1000 * (parseFloat(root.getAttribute("data-refresh-s")) || 5);
  var stamp = root.getAttribute("data-stamp");

  function setText(selector, value) {
    var nodes = root.querySelectorAll(selector);
    for (var i = 0; i < nodes.length; i++) { nodes[i].textContent = value; }
  }

  function apply(status) {
    root.setAttribute("data-state", status.state);
    var state = root.querySelector("[data-field=state]");
    if (state) {
      state.textContent = status.state;
      state.className = "live-state live-state-" + String(status.state).replace(/ /g, "-");
    }
    if (!status.has_run) { return; }
    if (status.has_run && !root.querySelector("[data-display]")) {
      window.location.reload();  // the run just started: render the full page
      return;
    }
    Object.keys(status.display).forEach(function (key) {
      setText("[data-display=" + key + "]", status.display[key]);
    });
    var pace = root.querySelector("[data-field=keeping_up]");
    if (pace) {
      pace.textContent = status.display.keeping_up;
      pace.className = "live-pace live-pace-" + String(status.keeping_up).toLowerCase();
      pace.setAttribute("data-pace", String(status.keeping_up).toLowerCase());
    }
    var warnings = root.querySelector("[data-field=warnings]");
    if (warnings && status.warnings) {
      warnings.replaceChildren.apply(warnings, status.warnings.map(function (text) {
        var p = document.createElement("p");
        p.textContent = text;
        return p;
      }));
      warnings.hidden = status.warnings.length === 0;
    }
    var recon = root.querySelector("[data-field=reconstruction]");
    if (recon) {
      recon.hidden = !status.reconstruction;
      var bar = root.querySelector("[data-field=reconstruction_fraction]");
      if (bar && status.reconstruction) { bar.value = status.reconstruction.fraction; }
    }
    if (status.updated_at) { setText("[data-field=updated_at]", status.display.updated_at); }
    if (status.latest_movie) { setText("[data-field=latest_movie]", status.latest_movie); }
    if (String(status.stamp) !== String(stamp)) {
      stamp = String(status.stamp);
      root.setAttribute("data-stamp", stamp);
      var images = root.querySelectorAll("img[data-plot]");
      for (var i = 0; i < images.length; i++) {
        images[i].src = images[i].src.replace(/\?v=\d+$/, "") + "?v=" + stamp;
      }
    }
  }

  function poll() {
    fetch(url, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (status) { if (status) { apply(status); } })
      .catch(function () { /* offline for a moment: try again next period */ })
      .then(function () {
        var state = root.getAttribute("data-state");
        if (state !== "complete" && state !== "failed") { window.setTimeout(poll, period); }
      });
  }
  window.setTimeout(poll, period);
})();
