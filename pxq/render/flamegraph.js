// pxq flamegraph: click a frame to zoom, "Reset Zoom" (or Esc) to go back, "Search" (or Ctrl-F)
// for a regular expression (a plain substring when it is not one); matched frames turn magenta and
// the share of samples under them is shown. Needs the constants C = {inv, fh, y0, xpad, width,
// total, font, hl} from the writer, and the SVG it builds: <g id="frames"> of
// <g><title>NAME (N samples, P%)</title><rect/><text/>?</g>, the first one being the root.
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg", EPS = 0.02, TITLE = /^([\s\S]*) \(([\d,]+) samples?, [\d.]+%[^()]*\)$/;
  var $ = function (id) { return document.getElementById(id); };
  var details = $("details"), matched = $("matched"), unzoomBtn = $("unzoom"), searchBtn = $("search");
  var nodes = [], gs = $("frames").getElementsByTagName("g"), zoomed = null;
  for (var i = 0; i < gs.length; i++) {
    var g = gs[i], r = g.getElementsByTagName("rect")[0], tip = g.getElementsByTagName("title")[0].textContent;
    var m = TITLE.exec(tip), y = +r.getAttribute("y");
    g._i = i;
    nodes.push({g: g, r: r, t: g.getElementsByTagName("text")[0] || null, tip: tip, y: y,
      name: m ? m[1] : tip, n: m ? +m[2].replace(/,/g, "") : 0, fill: r.getAttribute("fill"),
      x: +r.getAttribute("x"), w: +r.getAttribute("width"),
      d: Math.round(C.inv ? (y - C.y0) / C.fh : (C.y0 - y) / C.fh)});
  }

  function label(name, w) {
    var chars = Math.floor((w - 6) / (C.font * 0.59));
    if (chars < 3) return "";
    return name.length <= chars ? name : name.slice(0, chars - 2) + "..";
  }
  function place(n, x, w, show, parent) {
    n.g.style.display = show ? "" : "none";
    if (!show) return;
    n.g.setAttribute("class", parent ? "parent" : "");
    n.r.setAttribute("x", x.toFixed(2));
    n.r.setAttribute("width", w.toFixed(2));
    var s = label(n.name, w);
    if (!n.t && s) {
      n.t = document.createElementNS(NS, "text");
      n.t.setAttribute("y", (n.y + C.fh - 4).toFixed(1));
      n.g.appendChild(n.t);
    }
    if (n.t) { n.t.setAttribute("x", (x + 3).toFixed(2)); n.t.textContent = s; }
  }
  function zoom(z) {
    var scale = (C.width - 2 * C.xpad) / z.w, full = C.width - 2 * C.xpad;
    nodes.forEach(function (n) {
      if (n.d < z.d) {
        var ancestor = n.x <= z.x + EPS && n.x + n.w >= z.x + z.w - EPS;
        place(n, C.xpad, full, ancestor, true);
      } else {
        var inside = n.x >= z.x - EPS && n.x + n.w <= z.x + z.w + EPS;
        place(n, C.xpad + (n.x - z.x) * scale, n.w * scale, inside, false);
      }
    });
    zoomed = z;
    unzoomBtn.setAttribute("class", "btn");
  }
  function unzoom() {
    nodes.forEach(function (n) { place(n, n.x, n.w, true, false); });
    zoomed = null;
    unzoomBtn.setAttribute("class", "btn hide");
  }
  function search(term) {
    nodes.forEach(function (n) { n.r.setAttribute("fill", n.fill); });
    matched.textContent = " ";
    searchBtn.textContent = "Search";
    if (!term) return;
    var re = null;
    try { re = new RegExp(term); } catch (e) { re = null; }
    var hits = nodes.slice(1).filter(function (n) { return re ? re.test(n.name) : n.name.indexOf(term) >= 0; });
    hits.forEach(function (n) { n.r.setAttribute("fill", C.hl); });
    // Matches nest (a frame inside a matched frame): count each sample once, outermost match only.
    hits.sort(function (a, b) { return a.x - b.x || b.w - a.w; });
    var total = 0, end = -Infinity;
    hits.forEach(function (n) { if (n.x >= end - EPS) { total += n.n; end = n.x + n.w; } });
    matched.textContent = "Matched: " + (100 * total / C.total).toFixed(2) + "% (" + hits.length + " frames)";
    searchBtn.textContent = "Clear search";
  }
  function prompted() {
    if (searchBtn.textContent !== "Search") return search("");
    var term = window.prompt("Search frames (regular expression or text):", "");
    if (term !== null) search(term);
  }
  function nodeOf(e) {
    var g = e.target && e.target.closest ? e.target.closest("g") : null;
    return g && g._i !== undefined ? nodes[g._i] : null;
  }
  var frames = $("frames");
  frames.addEventListener("click", function (e) {
    var n = nodeOf(e);
    if (n) { if (n.d === 0) unzoom(); else zoom(n); }
  });
  frames.addEventListener("mouseover", function (e) {
    var n = nodeOf(e);
    if (n) details.textContent = n.tip + (zoomed && n.d >= zoomed.d && zoomed.n ? ", " +
      (100 * n.n / zoomed.n).toFixed(2) + "% of the zoomed frame" : "");
  });
  frames.addEventListener("mouseout", function () { details.textContent = " "; });
  unzoomBtn.addEventListener("click", unzoom);
  searchBtn.addEventListener("click", prompted);
  window.addEventListener("keydown", function (e) {
    if ((e.ctrlKey || e.metaKey) && e.key === "f" || e.key === "F3") { e.preventDefault(); prompted(); }
    else if (e.key === "Escape") { search(""); unzoom(); }
  });
  window.pxqFlamegraph = {zoom: function (i) { zoom(nodes[i]); }, unzoom: unzoom, search: search, nodes: nodes};
})();
