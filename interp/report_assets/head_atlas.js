/* interp head atlas: a layer x head grid coloured by role or by a score, a profile card for the head under
   the cursor (or the selected one), and the token-level attention viewer following the selected head.
   Standard DOM only, no network; data from the JSON script element of class interp-atlas-data. */
(function () {
  "use strict";

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }
  function fmt(v) {
    if (v === null || v === undefined || (typeof v === "number" && !isFinite(v))) return "\u2014";
    if (typeof v !== "number") return String(v);
    return String(Number(v.toPrecision(4)));  // 4 significant digits; exponents only below 1e-6
  }
  function at(grid, l, h) {
    if (!grid || !grid[l]) return null;
    var v = grid[l][h];
    return v === undefined ? null : v;
  }
  function mixHex(a, b, t) {
    var pa = [1, 3, 5].map(function (i) { return parseInt(a.slice(i, i + 2), 16); });
    var pb = [1, 3, 5].map(function (i) { return parseInt(b.slice(i, i + 2), 16); });
    return "rgb(" + pa.map(function (x, i) { return Math.round(x + (pb[i] - x) * t); }).join(",") + ")";
  }
  function dark(rgb) {
    var m = /(\d+),\s*(\d+),\s*(\d+)/.exec(rgb) || [0, 255, 255, 255];
    var hex = /^#([0-9a-f]{6})$/i.exec(rgb);
    var r = +m[1], g = +m[2], b = +m[3];
    if (hex) { r = parseInt(hex[1].slice(0, 2), 16); g = parseInt(hex[1].slice(2, 4), 16); b = parseInt(hex[1].slice(4, 6), 16); }
    return 0.299 * r + 0.587 * g + 0.114 * b < 140;
  }

  function mountAtlas(root) {
    if (root._interpAtlas) return root._interpAtlas;
    var A = JSON.parse(root.querySelector("script.interp-atlas-data").textContent);
    var L = A.n_layers, H = A.n_heads;
    var viewerRoot = root.querySelector(".interp-attn");
    var viewer = viewerRoot && window.InterpAttn ? window.InterpAttn.mount(viewerRoot) : null;
    var st = { sel: [0, 0], cursor: null, colour: "role" };
    var gridBox = root.querySelector(".ha-grid-box"), card = root.querySelector(".ha-card");
    var controls = root.querySelector(".ha-controls"), legend = root.querySelector(".ha-legend");

    function labelsOf(l, h) { return (A.labels[l] && A.labels[l][h]) || []; }
    function conf(label, l, h) { return A.confidence && A.confidence[label] ? at(A.confidence[label], l, h) : null; }
    function primary(l, h) {
      var ls = labelsOf(l, h);
      if (!ls.length) return null;
      var best = ls[0], bc = conf(best, l, h);
      ls.forEach(function (x) { var c = conf(x, l, h); if (c !== null && (bc === null || c > bc)) { best = x; bc = c; } });
      return best;
    }
    function colourOf(label) { return (A.palette && A.palette[label]) || "#888888"; }

    // -- the colour control ----------------------------------------------------------------------------
    var choices = [["role", "role (labels)"]];
    A.metrics.forEach(function (m) { choices.push(["score:" + m, m]); });
    if (A.importance) choices.push(["importance", "importance"]);
    if (A.ships) choices.push(["ships", "Ships score"]);
    var sel = el("select", "ha-colour");
    choices.forEach(function (c) { var o = el("option", null, c[1]); o.value = c[0]; sel.appendChild(o); });
    var lab = el("label", null, "Colour the grid by ");
    lab.appendChild(sel);
    controls.appendChild(lab);
    sel.addEventListener("change", function () { st.colour = sel.value; paint(); });

    function valuesFor(key) {
      if (key === "importance") return A.importance;
      if (key === "ships") return A.ships;
      if (key.indexOf("score:") === 0) return A.scores[key.slice(6)];
      return null;
    }

    // -- the grid --------------------------------------------------------------------------------------
    var table = el("table", "ha-grid");
    table.setAttribute("role", "grid");
    table.setAttribute("aria-label", "layers (rows) by heads (columns); arrow keys move, Enter selects");
    var thead = el("thead"), hr = el("tr");
    hr.appendChild(el("th", "ha-corner", "layer \\ head"));
    for (var h = 0; h < H; h++) hr.appendChild(el("th", null, String(h)));
    thead.appendChild(hr);
    table.appendChild(thead);
    var tbody = el("tbody"), cells = [];
    for (var l = 0; l < L; l++) {
      var tr = el("tr");
      tr.setAttribute("role", "row");
      tr.appendChild(el("th", null, String(l)));
      cells.push([]);
      for (var hh = 0; hh < H; hh++) {
        var td = el("td", "ha-cell");
        td.setAttribute("role", "gridcell");
        td.tabIndex = -1;
        td.dataset.layer = String(l);
        td.dataset.head = String(hh);
        tr.appendChild(td);
        cells[l].push(td);
      }
      tbody.appendChild(tr);
    }
    table.appendChild(tbody);
    gridBox.appendChild(table);
    cells[0][0].tabIndex = 0;

    function abbrev(label) {
      if (A.abbreviations && A.abbreviations[label]) return A.abbreviations[label];
      var parts = label.split(/[-_/ ]+/).filter(Boolean);
      if (parts.length > 1) return parts.map(function (p) { return p[0]; }).join("").toUpperCase();
      return label.slice(0, 3).toUpperCase();
    }

    function paint() {
      var key = st.colour, vals = key === "role" ? null : valuesFor(key), lo = Infinity, hi = -Infinity;
      if (vals) {
        for (var l = 0; l < L; l++) for (var h = 0; h < H; h++) {
          var v = at(vals, l, h);
          if (typeof v === "number" && isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
        }
      }
      var diverging = lo < 0 && hi > 0, span = diverging ? Math.max(-lo, hi) : hi - lo;
      for (var ll = 0; ll < L; ll++) for (var hh = 0; hh < H; hh++) {
        var td = cells[ll][hh], ls = labelsOf(ll, hh), colour, text;
        if (!vals) {
          var p = primary(ll, hh);
          colour = p ? colourOf(p) : "#f4f4f6";
          text = ls.map(abbrev).join(" ");
        } else {
          var x = at(vals, ll, hh);
          if (typeof x !== "number" || !isFinite(x)) { colour = "#f4f4f6"; text = "\u2014"; }
          else {
            if (diverging) colour = x >= 0 ? mixHex("#ffffff", "#b2182b", span ? x / span : 0)
              : mixHex("#ffffff", "#2166ac", span ? -x / span : 0);
            else colour = mixHex("#f7fbff", "#08306b", span ? (x - lo) / span : 0.5);
            text = fmt(x);
          }
        }
        td.style.backgroundColor = colour;
        td.classList.toggle("ha-dark", dark(colour));
        td.textContent = text;
        td.title = "head " + ll + "." + hh + ": " + (ls.length ? ls.join(", ") : "no label") +
          (vals ? " \u2014 " + sel.options[sel.selectedIndex].text + " " + fmt(at(vals, ll, hh)) : "");
        td.setAttribute("aria-label", td.title);
      }
      drawLegend(vals, lo, hi, diverging);
    }

    function drawLegend(vals, lo, hi, diverging) {
      while (legend.firstChild) legend.removeChild(legend.firstChild);
      if (!vals) {
        var counts = {};
        for (var l = 0; l < L; l++) for (var h = 0; h < H; h++) {
          var ls = labelsOf(l, h);
          if (!ls.length) counts[""] = (counts[""] || 0) + 1;
          ls.forEach(function (x) { counts[x] = (counts[x] || 0) + 1; });
        }
        (A.roles || []).concat(Object.keys(counts).filter(function (k) { return k && (A.roles || []).indexOf(k) < 0; }))
          .forEach(function (label) {
            if (!counts[label]) return;
            var chip = el("span", "ha-chip", label + " (" + counts[label] + ")");
            chip.style.backgroundColor = colourOf(label);
            chip.classList.toggle("ha-dark", dark(colourOf(label)));
            legend.appendChild(chip);
          });
        if (counts[""]) legend.appendChild(el("span", "ha-chip ha-none", "no label (" + counts[""] + ")"));
        legend.appendChild(el("span", "ha-small", " cell colour: the most confident label; text: every label"));
      } else if (lo <= hi) {
        legend.appendChild(el("span", "ha-small", (diverging ? "blue negative, red positive; " : "light to dark: ") +
          "from " + fmt(lo) + " to " + fmt(hi)));
      }
    }

    // -- the card --------------------------------------------------------------------------------------
    function selectHead(l, h, fromViewer) {
      cells[st.sel[0]][st.sel[1]].classList.remove("ha-selected");
      cells[st.sel[0]][st.sel[1]].setAttribute("aria-selected", "false");
      st.sel = [l, h];
      cells[l][h].classList.add("ha-selected");
      cells[l][h].setAttribute("aria-selected", "true");
      if (viewer && !fromViewer) viewer.setHead(l, h);
      var vt = root.querySelector(".ha-viewer-title");
      if (vt) vt.textContent = "Attention of head " + l + "." + h + ", token by token";
      renderCard();
    }

    function partnerButton(p) {
      var b = el("button", "ha-partner", p.mode + " " + p.layer + "." + p.head + " (" + fmt(p.score) + ")");
      b.type = "button";
      b.dataset.layer = String(p.layer); b.dataset.head = String(p.head); b.dataset.mode = p.mode;
      b.title = p.mode + "-composition score " + fmt(p.score) + " with head " + p.layer + "." + p.head;
      b.addEventListener("click", function () { moveFocus(p.layer, p.head); selectHead(p.layer, p.head); });
      return b;
    }

    function renderCard() {
      var shown = st.cursor || st.sel, l = shown[0], h = shown[1];
      while (card.firstChild) card.removeChild(card.firstChild);
      card.dataset.layer = String(l); card.dataset.head = String(h);
      var title = el("h3", "ha-card-title", "Head " + l + "." + h);
      var isSel = l === st.sel[0] && h === st.sel[1];
      title.appendChild(el("span", "ha-card-state", isSel ? " selected" : " under the cursor"));
      card.appendChild(title);
      var labels = el("div", "ha-labels"), ls = labelsOf(l, h);
      if (!ls.length) labels.appendChild(el("span", "ha-small", "no role above its null (unexplained)"));
      ls.forEach(function (label) {
        var c = conf(label, l, h);
        var chip = el("span", "ha-chip ha-label", label + (c !== null ? " \u00b7 confidence " + fmt(c) : ""));
        chip.dataset.label = label;
        chip.style.backgroundColor = colourOf(label);
        chip.classList.toggle("ha-dark", dark(colourOf(label)));
        labels.appendChild(chip);
      });
      card.appendChild(labels);

      var t = el("table", "ha-scores"), head = el("tr");
      ["score", "value", "null", "value \u2212 null", "threshold"].forEach(function (x) { head.appendChild(el("th", null, x)); });
      var th = el("thead"); th.appendChild(head); t.appendChild(th);
      var tb = el("tbody");
      A.metrics.forEach(function (m) {
        var v = at(A.scores[m], l, h), n = A.nulls && A.nulls[m] ? at(A.nulls[m], l, h) : null;
        var thr = A.thresholds && m in A.thresholds ? A.thresholds[m] : null;
        var tr = el("tr");
        tr.dataset.metric = m;
        tr.appendChild(el("td", "ha-metric", m));
        var tv = el("td", "ha-value", fmt(v)); tv.dataset.value = v === null ? "" : String(v);
        var tn = el("td", "ha-null", fmt(n)); tn.dataset.value = n === null ? "" : String(n);
        var diff = typeof v === "number" && typeof n === "number" ? v - n : null;
        var td = el("td", "ha-diff", diff === null ? "\u2014" : (diff > 0 ? "+" : "") + fmt(diff));
        tr.appendChild(tv); tr.appendChild(tn); tr.appendChild(td);
        tr.appendChild(el("td", "ha-thr", fmt(thr)));
        tb.appendChild(tr);
      });
      t.appendChild(tb);
      card.appendChild(t);

      var extra = el("dl", "ha-extra");
      function item(name, grid, cls, what) {
        extra.appendChild(el("dt", null, name));
        var v = grid ? at(grid, l, h) : null, dd = el("dd", cls, grid ? fmt(v) : "not computed (" + what + ")");
        if (grid) {
          dd.dataset.value = v === null ? "" : String(v);
          var all = [];
          for (var a = 0; a < L; a++) for (var b = 0; b < H; b++) {
            var x = at(grid, a, b);
            if (typeof x === "number" && isFinite(x)) all.push(x);
          }
          if (typeof v === "number" && isFinite(v)) {
            var rank = 1 + all.filter(function (x) { return x > v; }).length;
            dd.appendChild(el("span", "ha-small", " (rank " + rank + " of " + all.length + ")"));
          }
        }
        extra.appendChild(dd);
      }
      item("importance", A.importance, "ha-importance", "run with the importance join");
      item("Ships score", A.ships, "ha-ships", "the model has no chat template or it was not run");
      card.appendChild(extra);

      var parts = (A.partners && A.partners[l] && A.partners[l][h]) || [];
      var pbox = el("div", "ha-partners");
      pbox.appendChild(el("div", "ha-sub", "composition partners"));
      if (!parts.length) pbox.appendChild(el("span", "ha-small", "none listed"));
      parts.forEach(function (p) { pbox.appendChild(partnerButton(p)); });
      card.appendChild(pbox);
    }

    // -- interaction -----------------------------------------------------------------------------------
    function cellOf(e) { var t = e.target.closest && e.target.closest(".ha-cell"); return t && table.contains(t) ? t : null; }
    function pos(td) { return [parseInt(td.dataset.layer, 10), parseInt(td.dataset.head, 10)]; }
    function moveFocus(l, h) {
      for (var a = 0; a < L; a++) for (var b = 0; b < H; b++) cells[a][b].tabIndex = -1;
      cells[l][h].tabIndex = 0;
      cells[l][h].focus();
    }
    table.addEventListener("mouseover", function (e) {
      var td = cellOf(e);
      if (td) { st.cursor = pos(td); renderCard(); }
    });
    table.addEventListener("mouseleave", function () {
      st.cursor = null;
      var f = document.activeElement;
      if (f && f.classList && f.classList.contains("ha-cell")) st.cursor = pos(f);
      renderCard();
    });
    table.addEventListener("click", function (e) {
      var td = cellOf(e);
      if (td) { var p = pos(td); moveFocus(p[0], p[1]); st.cursor = null; selectHead(p[0], p[1]); }
    });
    table.addEventListener("focusin", function (e) {
      var td = cellOf(e);
      if (td) { st.cursor = pos(td); renderCard(); }
    });
    table.addEventListener("focusout", function () { st.cursor = null; renderCard(); });
    table.addEventListener("keydown", function (e) {
      var td = cellOf(e);
      if (!td) return;
      var p = pos(td), l = p[0], h = p[1];
      switch (e.key) {
        case "ArrowUp": l = Math.max(0, l - 1); break;
        case "ArrowDown": l = Math.min(L - 1, l + 1); break;
        case "ArrowLeft": h = Math.max(0, h - 1); break;
        case "ArrowRight": h = Math.min(H - 1, h + 1); break;
        case "Home": h = 0; break;
        case "End": h = H - 1; break;
        case "PageUp": l = 0; break;
        case "PageDown": l = L - 1; break;
        case "Enter": case " ": selectHead(l, h); e.preventDefault(); return;
        default: return;
      }
      e.preventDefault();
      moveFocus(l, h);
    });
    if (viewerRoot) {
      viewerRoot.addEventListener("interp-attn-head", function (e) {
        var d = e.detail;
        if (d && d.layer < L && d.head < H) selectHead(d.layer, d.head, true);
      });
    }

    var start = A.initial || [0, 0];
    cells[0][0].tabIndex = -1;
    cells[start[0]][start[1]].tabIndex = 0;
    paint();
    selectHead(start[0], start[1]);
    var api = { select: selectHead, selected: function () { return st.sel.slice(); }, viewer: viewer };
    root._interpAtlas = api;
    return api;
  }

  var found = document.querySelectorAll(".interp-atlas");
  for (var i = 0; i < found.length; i++) mountAtlas(found[i]);
})();
