// Inlined into the report and allowed to run by its hash in the page's CSP.
// Upstream values reach the page only as text: the data island is read with JSON.parse and every
// value is set with textContent or setAttribute, never innerHTML. This file must never contain a
// closing-tag or comment-open sequence: html.py refuses it, since it would end the element.
(function () {
  "use strict";
  var SVG_NS = "http://www.w3.org/2000/svg"; // a namespace name, not something fetched
  var THEME_KEY = "threatintel-report-theme";
  var root = document.documentElement;
  root.classList.add("js");

  function readData() {
    var island = document.getElementById("data");
    try {
      return JSON.parse(island ? island.textContent : "{}");
    } catch (err) {
      return {};
    }
  }
  var DATA = readData();

  // --- theme: system preference by default, a toggle that wins, remembered when storage works.
  // Browsers may throw on localStorage for file:// pages or in private modes: never let that
  // stop the rest of the page.
  function storedTheme() {
    try {
      return window.localStorage.getItem(THEME_KEY);
    } catch (err) {
      return null;
    }
  }
  function storeTheme(value) {
    try {
      window.localStorage.setItem(THEME_KEY, value);
    } catch (err) {
      /* not remembered; the toggle still works for this view */
    }
  }
  function systemDark() {
    return !!(window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches);
  }
  function currentTheme() {
    var explicit = root.getAttribute("data-theme");
    if (explicit === "dark" || explicit === "light") {
      return explicit;
    }
    return systemDark() ? "dark" : "light";
  }
  var themeButton = document.getElementById("theme-toggle");
  function labelThemeButton() {
    if (themeButton) {
      themeButton.textContent = currentTheme() === "dark" ? "Light theme" : "Dark theme";
    }
  }
  var saved = storedTheme();
  if (saved === "dark" || saved === "light") {
    root.setAttribute("data-theme", saved);
  }
  labelThemeButton();
  if (themeButton) {
    themeButton.addEventListener("click", function () {
      var next = currentTheme() === "dark" ? "light" : "dark";
      root.setAttribute("data-theme", next);
      storeTheme(next);
      labelThemeButton();
    });
  }

  // --- table: sort, filter, details.
  var table = document.getElementById("indicator-table");
  var groups = table ? Array.prototype.slice.call(table.querySelectorAll("tbody.ind")) : [];
  var filterBox = document.getElementById("filter");
  var verdictBox = document.getElementById("verdict-filter");
  var shownCount = document.getElementById("shown-count");
  var noMatch = document.getElementById("no-match");

  var SORT_KEYS = {
    indicator: function (g) { return g.getAttribute("data-indicator"); },
    type: function (g) { return g.getAttribute("data-type"); },
    verdict: function (g) { return Number(g.getAttribute("data-rank")); },
    score: function (g) { return Number(g.getAttribute("data-score")); },
    confidence: function (g) { return Number(g.getAttribute("data-confidence")); }
  };
  function compare(a, b) {
    if (typeof a === "number" && typeof b === "number") {
      return a - b;
    }
    return String(a).localeCompare(String(b));
  }
  function sortBy(key, direction) {
    var keyOf = SORT_KEYS[key];
    var sign = direction === "descending" ? -1 : 1;
    var sorted = groups.slice().sort(function (a, b) {
      // Ties keep input order in both directions, so repeated clicks are predictable.
      return sign * compare(keyOf(a), keyOf(b)) ||
        Number(a.getAttribute("data-index")) - Number(b.getAttribute("data-index"));
    });
    sorted.forEach(function (g) { table.appendChild(g); });
    Array.prototype.forEach.call(table.querySelectorAll("thead th[aria-sort]"), function (th) {
      var button = th.querySelector("button");
      th.setAttribute("aria-sort", button && button.getAttribute("data-sort") === key ? direction : "none");
    });
  }
  if (table) {
    Array.prototype.forEach.call(table.querySelectorAll("thead button[data-sort]"), function (button) {
      button.addEventListener("click", function () {
        var th = button.parentNode;
        var next = th.getAttribute("aria-sort") === "ascending" ? "descending" : "ascending";
        sortBy(button.getAttribute("data-sort"), next);
      });
    });
  }

  function applyFilter() {
    var needle = filterBox ? filterBox.value.trim().toLowerCase() : "";
    var verdict = verdictBox ? verdictBox.value : "";
    var shown = 0;
    groups.forEach(function (g) {
      var ok = (!verdict || g.getAttribute("data-verdict") === verdict) &&
        (!needle || g.getAttribute("data-search").indexOf(needle) !== -1);
      g.classList.toggle("filtered", !ok);
      if (ok) {
        shown += 1;
      }
    });
    if (shownCount) {
      shownCount.textContent = shown + " of " + groups.length + " shown";
    }
    if (noMatch) {
      noMatch.hidden = shown !== 0 || groups.length === 0;
    }
    Array.prototype.forEach.call(document.querySelectorAll(".card[data-verdict]"), function (card) {
      card.classList.toggle("active", !!verdict && card.getAttribute("data-verdict") === verdict);
    });
  }
  if (filterBox) {
    filterBox.addEventListener("input", applyFilter);
  }
  if (verdictBox) {
    verdictBox.addEventListener("change", applyFilter);
  }
  Array.prototype.forEach.call(document.querySelectorAll("button.card[data-verdict]"), function (card) {
    card.addEventListener("click", function () {
      if (verdictBox) {
        var wanted = card.getAttribute("data-verdict");
        verdictBox.value = verdictBox.value === wanted ? "" : wanted;
        applyFilter();
        document.getElementById("indicators").scrollIntoView({ behavior: "smooth" });
      }
    });
  });

  function setOpen(g, open) {
    g.classList.toggle("open", open);
    var toggle = g.querySelector("button.toggle");
    if (toggle) {
      toggle.setAttribute("aria-expanded", open ? "true" : "false");
      toggle.setAttribute("aria-label", open ? "Hide details" : "Show details");
    }
  }
  groups.forEach(function (g) {
    var toggle = g.querySelector("button.toggle");
    if (toggle) {
      toggle.addEventListener("click", function () { setOpen(g, !g.classList.contains("open")); });
    }
  });
  var expandAll = document.getElementById("expand-all");
  if (expandAll) {
    expandAll.addEventListener("click", function () {
      var open = !groups.every(function (g) { return g.classList.contains("open"); });
      groups.forEach(function (g) { setOpen(g, open); });
      expandAll.textContent = open ? "Collapse all" : "Expand all";
    });
  }

  // Jumping to an indicator (from attribution or the graph) shows it even if filtered out.
  function reveal(anchor) {
    var g = document.getElementById(anchor);
    if (!g || !g.classList.contains("ind")) {
      return;
    }
    if (g.classList.contains("filtered")) {
      if (filterBox) { filterBox.value = ""; }
      if (verdictBox) { verdictBox.value = ""; }
      applyFilter();
    }
    setOpen(g, true);
    g.scrollIntoView({ behavior: "smooth", block: "center" });
    g.classList.remove("flash");
    void g.offsetWidth; // restart the animation
    g.classList.add("flash");
  }
  Array.prototype.forEach.call(document.querySelectorAll("a.jump"), function (a) {
    a.addEventListener("click", function (event) {
      event.preventDefault();
      reveal(a.getAttribute("href").slice(1));
    });
  });

  // --- relationship graph: a small force-directed layout on SVG, no library.
  var KIND_LABELS = {
    indicator: "indicator (coloured by verdict)",
    asn: "ASN",
    country: "country",
    malware: "malware / software",
    adversary: "adversary (as named upstream)",
    technique: "ATT&CK technique",
    group: "ATT&CK group"
  };
  var svg = document.getElementById("graph-svg");
  var graph = DATA.graph || { nodes: [], edges: [], total: 0 };
  var W = 960;
  var H = 600;

  function el(name, attrs) {
    var node = document.createElementNS(SVG_NS, name);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    return node;
  }
  function shorten(text, max) {
    return text.length > max ? text.slice(0, max - 1) + "…" : text;
  }

  function drawGraph() {
    var nodes = graph.nodes.map(function (n, i) {
      // A golden-angle spiral: deterministic, evenly spread, no two nodes start together.
      var angle = i * 2.39996;
      var radius = 12 * Math.sqrt(i + 1);
      return {
        data: n, x: W / 2 + radius * Math.cos(angle), y: H / 2 + radius * Math.sin(angle),
        vx: 0, vy: 0, fixed: false, neighbours: [], lines: []
      };
    });
    var edges = graph.edges.map(function (pair) {
      var a = nodes[pair[0]];
      var b = nodes[pair[1]];
      a.neighbours.push(b);
      b.neighbours.push(a);
      return { a: a, b: b, line: null };
    });

    var note = document.getElementById("graph-note");
    if (note && graph.total > nodes.length) {
      note.hidden = false;
      note.textContent = "Showing " + nodes.length + " of " + graph.total +
        " nodes: indicators first, then attribution groups, then the best-connected rest.";
    }
    var legend = document.getElementById("graph-legend");
    var kinds = {};
    nodes.forEach(function (n) { kinds[n.data.kind] = (kinds[n.data.kind] || 0) + 1; });
    Object.keys(KIND_LABELS).forEach(function (kind) {
      if (legend && kinds[kind]) {
        var item = document.createElement("span");
        item.className = "k-" + kind;
        item.textContent = KIND_LABELS[kind] + " (" + kinds[kind] + ")";
        legend.appendChild(item);
      }
    });
    if (!nodes.length) {
      var empty = el("text", { x: W / 2, y: H / 2, "text-anchor": "middle" });
      empty.textContent = "No relationships to show.";
      svg.appendChild(empty);
      return;
    }

    var edgeLayer = el("g", {});
    var nodeLayer = el("g", {});
    svg.appendChild(edgeLayer);
    svg.appendChild(nodeLayer);
    edges.forEach(function (e) {
      e.line = el("line", {});
      e.a.lines.push(e.line);
      e.b.lines.push(e.line);
      edgeLayer.appendChild(e.line);
    });
    nodes.forEach(function (n) {
      var kind = n.data.kind;
      var g = el("g", { "class": "node k-" + kind + (n.data.verdict ? " v-" + n.data.verdict : "") });
      var r = kind === "indicator" ? 7 : Math.min(14, 5 + Math.sqrt(n.neighbours.length) * 1.6);
      var title = el("title", {});
      title.textContent = (KIND_LABELS[kind] || kind) + ": " + n.data.label;
      var circle = el("circle", { r: r.toFixed(1) });
      circle.appendChild(title);
      var label = el("text", { x: (r + 3).toFixed(1), y: "3.5" });
      label.textContent = shorten(n.data.label, 30);
      g.appendChild(circle);
      g.appendChild(label);
      nodeLayer.appendChild(g);
      n.g = g;
      n.r = r;
      bindNode(n);
    });

    var alpha = 1;
    var running = false;
    function tick() {
      var i, j, a, b, dx, dy, d2, d, f;
      for (i = 0; i < nodes.length; i++) {
        a = nodes[i];
        for (j = i + 1; j < nodes.length; j++) {
          b = nodes[j];
          dx = a.x - b.x;
          dy = a.y - b.y;
          d2 = dx * dx + dy * dy;
          if (d2 < 1) { dx = Math.random() - 0.5; dy = Math.random() - 0.5; d2 = 1; }
          if (d2 > 160000) { continue; } // far apart: not worth the force
          f = 700 * alpha / d2;
          a.vx += dx * f; a.vy += dy * f;
          b.vx -= dx * f; b.vy -= dy * f;
        }
      }
      edges.forEach(function (e) {
        dx = e.b.x - e.a.x;
        dy = e.b.y - e.a.y;
        d = Math.sqrt(dx * dx + dy * dy) || 1;
        f = (d - 60) * 0.08 * alpha / d;
        e.a.vx += dx * f; e.a.vy += dy * f;
        e.b.vx -= dx * f; e.b.vy -= dy * f;
      });
      nodes.forEach(function (n) {
        // Gravity strong enough to keep unconnected indicators near the rest; wider than tall
        // because the view is.
        n.vx += (W / 2 - n.x) * 0.04 * alpha;
        n.vy += (H / 2 - n.y) * 0.07 * alpha;
        if (n.fixed) { n.vx = 0; n.vy = 0; return; }
        n.vx *= 0.6;
        n.vy *= 0.6;
        n.x += n.vx;
        n.y += n.vy;
      });
      alpha *= 0.985;
    }
    function paint() {
      edges.forEach(function (e) {
        e.line.setAttribute("x1", e.a.x.toFixed(1));
        e.line.setAttribute("y1", e.a.y.toFixed(1));
        e.line.setAttribute("x2", e.b.x.toFixed(1));
        e.line.setAttribute("y2", e.b.y.toFixed(1));
      });
      nodes.forEach(function (n) {
        n.g.setAttribute("transform", "translate(" + n.x.toFixed(1) + "," + n.y.toFixed(1) + ")");
      });
    }
    function animate() {
      tick();
      paint();
      if (alpha > 0.01) {
        window.requestAnimationFrame(animate);
      } else {
        running = false;
        svg.setAttribute("data-settled", "true");
      }
    }
    function reheat(level) {
      alpha = Math.max(alpha, level);
      svg.removeAttribute("data-settled");
      if (!running) {
        running = true;
        window.requestAnimationFrame(animate);
      }
    }
    // Frame the whole layout, labels included, and never zoom in past 1:1.
    var view = { x: 0, y: 0, w: W, h: H };
    function fitView() {
      var minX = Infinity, minY = Infinity, maxX = -Infinity, maxY = -Infinity;
      nodes.forEach(function (n) {
        var labelWidth = Math.min(n.data.label.length, 30) * 6.2;
        minX = Math.min(minX, n.x - n.r);
        maxX = Math.max(maxX, n.x + n.r + 4 + labelWidth);
        minY = Math.min(minY, n.y - n.r - 6);
        maxY = Math.max(maxY, n.y + n.r + 6);
      });
      var pad = 16;
      var w = Math.max(W, maxX - minX + 2 * pad);
      var h = Math.max(H * 0.6, maxY - minY + 2 * pad);
      view = { x: (minX + maxX) / 2 - w / 2, y: (minY + maxY) / 2 - h / 2, w: w, h: h };
      svg.setAttribute("viewBox", [view.x, view.y, view.w, view.h].map(function (v) {
        return v.toFixed(1);
      }).join(" "));
    }
    // Settle most of the way before the first paint, so the page opens on a calm picture.
    while (alpha > 0.02) { tick(); }
    fitView();
    paint();
    reheat(0.02);

    function toSvgPoint(event) {
      var m = svg.getScreenCTM();
      if (!m) { return { x: 0, y: 0 }; }
      var p = svg.createSVGPoint();
      p.x = event.clientX;
      p.y = event.clientY;
      p = p.matrixTransform(m.inverse());
      return { x: p.x, y: p.y };
    }
    function highlight(n, on) {
      svg.classList.toggle("focus", on);
      n.g.classList.toggle("hl", on);
      n.neighbours.forEach(function (m) { m.g.classList.toggle("hl", on); });
      n.lines.forEach(function (line) { line.classList.toggle("hl", on); });
    }
    function bindNode(n) {
      var dragging = false;
      var moved = false;
      n.g.addEventListener("pointerenter", function () { highlight(n, true); });
      n.g.addEventListener("pointerleave", function () { if (!dragging) { highlight(n, false); } });
      n.g.addEventListener("pointerdown", function (event) {
        dragging = true;
        moved = false;
        n.fixed = true;
        n.g.setPointerCapture(event.pointerId);
        event.preventDefault();
      });
      n.g.addEventListener("pointermove", function (event) {
        if (!dragging) { return; }
        var p = toSvgPoint(event);
        // Dragging stays inside the frame so a node cannot be lost off-screen.
        n.x = Math.max(view.x + n.r, Math.min(view.x + view.w - n.r, p.x));
        n.y = Math.max(view.y + n.r, Math.min(view.y + view.h - n.r, p.y));
        moved = true;
        paint();
        reheat(0.3);
      });
      n.g.addEventListener("pointerup", function (event) {
        dragging = false;
        n.fixed = false;
        n.g.releasePointerCapture(event.pointerId);
        highlight(n, false);
        if (!moved && n.data.anchor) {
          reveal(n.data.anchor);
        }
      });
    }
  }
  if (svg) {
    drawGraph();
  }
})();
