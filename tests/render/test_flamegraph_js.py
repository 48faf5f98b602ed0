"""The flamegraph's embedded script, run by node against a minimal DOM built from the SVG.

The DOM stand-in implements only what flamegraph.js touches (getElementById, getElementsByTagName,
attributes, textContent, style, closest, createElementNS, event listeners), so the zoom, reset and
search logic is exercised without a browser.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest

from pxq.render.flamegraph_svg import flamegraph_svg
from pxq.render.stacks import StackSamples

NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="node runs the flamegraph's script; not installed")
SVG = "{http://www.w3.org/2000/svg}"

HARNESS = r"""
const vm = require("vm");
const spec = JSON.parse(require("fs").readFileSync(0, "utf8"));
class El {
  constructor(tag, attrs, text) {
    this.tagName = tag; this.attrs = Object.assign({}, attrs || {}); this.children = [];
    this.style = {}; this.parent = null; this.listeners = {}; this._text = text || "";
  }
  getAttribute(k) { return k in this.attrs ? String(this.attrs[k]) : null; }
  setAttribute(k, v) { this.attrs[k] = String(v); }
  getElementsByTagName(t) {
    const out = [];
    const walk = (e) => { for (const c of e.children) { if (c.tagName === t) out.push(c); walk(c); } };
    walk(this); return out;
  }
  appendChild(c) { c.parent = this; this.children.push(c); return c; }
  get textContent() { return this._text; }
  set textContent(v) { this._text = String(v); }
  closest(t) { let e = this; while (e) { if (e.tagName === t) return e; e = e.parent; } return null; }
  addEventListener(type, fn) { this.listeners[type] = fn; }
}
const byId = {};
for (const [id, attrs, text] of spec.ids) byId[id] = new El("text", attrs, text);
const frames = byId.frames = new El("g", {id: "frames"});
for (const f of spec.frames) {
  const g = frames.appendChild(new El("g"));
  g.appendChild(new El("title", {}, f.title));
  g.appendChild(new El("rect", f.rect));
  if (f.text) g.appendChild(new El("text", f.text.attrs, f.text.label));
}
const window = {listeners: {}, addEventListener(t, fn) { this.listeners[t] = fn; }, prompt: () => spec.prompt};
const document = {getElementById: (id) => byId[id] || null, createElementNS: (ns, tag) => new El(tag)};
vm.runInNewContext(spec.script, {window, document, Math, RegExp, Infinity});
const api = window.pxqFlamegraph;
const state = () => api.nodes.map((n) => ({
  shown: n.g.style.display !== "none", x: +n.r.getAttribute("x"), w: +n.r.getAttribute("width"),
  cls: n.g.getAttribute("class"), fill: n.r.getAttribute("fill"), label: n.t ? n.t.textContent : null,
  name: n.name, n: n.n, d: n.d}));
const out = {initial: state()};
const click = (i) => frames.listeners.click({target: api.nodes[i].r});
click(spec.zoom);
out.zoomed = state(); out.unzoomClass = byId.unzoom.getAttribute("class");
frames.listeners.mouseover({target: api.nodes[spec.hover].r});
out.details = byId.details.textContent;
byId.unzoom.listeners.click();
out.reset = state(); out.unzoomClassAfter = byId.unzoom.getAttribute("class");
byId.search.listeners.click();
out.searched = state(); out.matched = byId.matched.textContent; out.searchLabel = byId.search.textContent;
api.search("(");  // not a regular expression: a substring search
out.badRegexMatched = byId.matched.textContent;
window.listeners.keydown({key: "Escape", preventDefault() {}});
out.cleared = state(); out.matchedAfter = byId.matched.textContent;
process.stdout.write(JSON.stringify(out));
"""


def run_script(svg: str, *, zoom: str, hover: str, prompt: str) -> dict:
    """Load the SVG's script, click ``zoom`` (first frame of that name), hover ``hover`` (its last
    frame), reset, search for ``prompt``, then press Esc; the frames' state after each step."""
    root = ET.fromstring(svg.encode())
    frames = []
    group = next(g for g in root.iter(f"{SVG}g") if g.get("id") == "frames")
    for g in group.findall(f"{SVG}g"):
        text = g.find(f"{SVG}text")
        frames.append(
            {
                "title": g.find(f"{SVG}title").text,
                "rect": dict(g.find(f"{SVG}rect").attrib),
                "text": None if text is None else {"attrs": dict(text.attrib), "label": text.text},
            }
        )
    names = [f["title"].split(" (")[0] for f in frames]
    ids = [[t.get("id"), dict(t.attrib), t.text] for t in root.iter(f"{SVG}text") if t.get("id")]
    spec = {
        "ids": ids,
        "frames": frames,
        "script": "".join(s.text for s in root.iter(f"{SVG}script")),
        "zoom": names.index(zoom),
        "hover": len(names) - 1 - names[::-1].index(hover),
        "prompt": prompt,
    }
    done = subprocess.run([NODE, "-e", HARNESS], input=json.dumps(spec), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


FOLDED = "main;run;parse 30\nmain;run;parse;memcpy 10\nmain;run;handle 40\nmain;gc 20\nmain;memcpy 5\n"


@pytest.mark.parametrize("inverted", [False, True])
def test_zoom_reset_and_search(inverted):
    svg = flamegraph_svg(StackSamples.from_folded(FOLDED), inverted=inverted)
    out = run_script(svg, zoom="parse", hover="memcpy", prompt="^memcpy$")
    by_name = {}
    for i, n in enumerate(out["initial"]):
        by_name.setdefault(n["name"], i)
    assert [n["d"] for n in out["initial"]][:3] == [0, 1, 2]  # depths recovered from y, both orientations
    assert out["initial"][by_name["parse"]]["n"] == 40

    zoomed = {n["name"]: n for n in out["zoomed"] if n["shown"]}
    # parse fills the width, its ancestors stay (dimmed, full width), unrelated frames go.
    assert set(zoomed) == {"all", "main", "run", "parse", "memcpy"}
    assert zoomed["parse"]["x"] == 10 and zoomed["parse"]["w"] == 1180 and zoomed["parse"]["cls"] == ""
    assert zoomed["run"]["cls"] == "parent" and zoomed["run"]["w"] == 1180
    assert zoomed["memcpy"]["x"] == pytest.approx(10 + 1180 * 30 / 40, abs=0.02)
    assert zoomed["memcpy"]["w"] == pytest.approx(1180 * 10 / 40, abs=0.02)
    assert zoomed["memcpy"]["label"] == "memcpy"  # label refitted to the wider frame
    assert out["unzoomClass"] == "btn"
    assert out["details"] == "memcpy (10 samples, 9.52%), 25.00% of the zoomed frame"

    assert out["reset"] == [dict(n, cls="") for n in out["initial"]]
    assert out["unzoomClassAfter"] == "btn hide"

    hits = [n["name"] for n in out["searched"] if n["fill"] == "#e600e6"]
    assert sorted(hits) == ["memcpy", "memcpy"]
    assert out["matched"] == "Matched: 14.29% (2 frames)" and out["searchLabel"] == "Clear search"
    assert out["badRegexMatched"] == "Matched: 0.00% (0 frames)"
    assert all(n["fill"] != "#e600e6" for n in out["cleared"]) and out["matchedAfter"] == " "


def test_search_counts_nested_matches_once():
    svg = flamegraph_svg(StackSamples.from_folded("a;b;a;b 10\na;c 10\n"))
    out = run_script(svg, zoom="c", hover="c", prompt="a")
    assert out["matched"] == "Matched: 100.00% (2 frames)"
