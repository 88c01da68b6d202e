/* interp token-level attention viewer: standard DOM only, no network, no innerHTML with data.
   Every .interp-attn element holds its data in a JSON script element of class interp-attn-data:
   {scale, examples: [{prompt, tokens, causal}], heads: [[layer, head], ...], patterns: [example][head] ->
   rows of integer weights (weight * scale, trailing zeros left out), initial: [example, head index]}.
   window.InterpAttn.mount(element) returns a controller {setHead(layer, head), head(), setExample(i), pin(i)}. */
(function () {
  "use strict";
  if (window.InterpAttn) { window.InterpAttn.mountAll(); return; }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }
  function shown(t) {
    if (t === "") return "\u2205";
    if (t.trim() === "") t = t.replace(/ /g, "\u2423");  // a token of spaces only: make them visible
    return t.replace(/\r/g, "\u240d").replace(/\n/g, "\u21b5").replace(/\t/g, "\u21e5");
  }
  // colour intensity: the square root of the weight, so that weights of a few percent stay visible
  function alpha(v) { return Math.sqrt(Math.max(0, Math.min(1, v))).toFixed(3); }
  function label(text, control) {
    var l = el("label", "ia-label");
    l.appendChild(document.createTextNode(text + " "));
    l.appendChild(control);
    return l;
  }
  var uid = 0;

  function mount(root) {
    if (root._interpAttn) return root._interpAttn;
    var D = JSON.parse(root.querySelector("script.interp-attn-data").textContent);
    var S = D.scale;
    var init = D.initial || [0, 0];
    var st = { ex: init[0], hi: init[1], pin: -1, hover: -1, mode: "row" };
    var name = "ia" + (++uid);
    var body = root.querySelector(".ia-body") || root;

    // -- controls -------------------------------------------------------------------------------------
    var controls = el("div", "ia-controls");
    var exSel = el("select", "ia-example");
    D.examples.forEach(function (e, i) {
      var text = e.prompt.length > 70 ? e.prompt.slice(0, 70) + "\u2026" : e.prompt;
      var o = el("option", null, (i + 1) + ": " + text.replace(/\s+/g, " "));
      o.value = String(i);
      exSel.appendChild(o);
    });
    if (D.examples.length > 1) controls.appendChild(label("Prompt", exSel));
    var layers = [];
    D.heads.forEach(function (h) { if (layers.indexOf(h[0]) < 0) layers.push(h[0]); });
    var layerSel = el("select", "ia-layer");
    layers.forEach(function (l) { var o = el("option", null, String(l)); o.value = String(l); layerSel.appendChild(o); });
    var headSel = el("select", "ia-head");
    controls.appendChild(label("Layer", layerSel));
    controls.appendChild(label("Head", headSel));
    var modes = el("span", "ia-modes");
    modes.setAttribute("role", "radiogroup");
    modes.setAttribute("aria-label", "which weights to show");
    [["row", "where it attends (its row)"], ["col", "what attends to it (its column)"]].forEach(function (m) {
      var r = el("input");
      r.type = "radio"; r.name = name + "-mode"; r.value = m[0]; r.checked = m[0] === st.mode;
      r.addEventListener("change", function () { if (r.checked) { st.mode = m[0]; render(); } });
      var l = el("label", "ia-mode");
      l.appendChild(r);
      l.appendChild(document.createTextNode(" " + m[1]));
      modes.appendChild(l);
    });
    controls.appendChild(modes);
    body.appendChild(controls);

    var help = el("p", "ia-help", "Hover or click a token (or Tab to the tokens and use \u2190 \u2192, Home, End; " +
      "Enter pins, Esc clears; [ and ] change the head). Numbers: attention weights; colour: their square root.");
    body.appendChild(help);
    var strip = el("div", "ia-tokens");
    strip.setAttribute("role", "listbox");
    strip.setAttribute("aria-label", "tokens of the prompt");
    body.appendChild(strip);
    var lower = el("div", "ia-lower");
    var info = el("div", "ia-info");
    info.setAttribute("aria-live", "polite");
    var side = el("div", "ia-matrix-box");
    var canvas = el("canvas", "ia-matrix");
    canvas.setAttribute("role", "img");
    var status = el("div", "ia-status", "\u00a0");
    side.appendChild(canvas);
    side.appendChild(status);
    lower.appendChild(info);
    lower.appendChild(side);
    body.appendChild(lower);

    var spans = [];

    function ex() { return D.examples[st.ex]; }
    function rows() { return D.patterns[st.ex][st.hi]; }
    function w(q, k) { var r = rows()[q]; return r && k < r.length ? r[k] / S : 0; }
    function masked(q, k) { return ex().causal && k > q; }

    function fillHeads() {
      var layer = D.heads[st.hi][0];
      layerSel.value = String(layer);
      while (headSel.firstChild) headSel.removeChild(headSel.firstChild);
      D.heads.forEach(function (h, i) {
        if (h[0] !== layer) return;
        var o = el("option", null, String(h[1]));
        o.value = String(i);
        headSel.appendChild(o);
      });
      headSel.value = String(st.hi);
    }

    function buildTokens() {
      while (strip.firstChild) strip.removeChild(strip.firstChild);
      spans = ex().tokens.map(function (t, i) {
        var s = el("span", "ia-tok");
        s.setAttribute("role", "option");
        s.tabIndex = -1;
        s.dataset.pos = String(i);
        var text = el("span", "ia-text", shown(t));
        var num = el("span", "ia-w", "\u00a0");
        s.appendChild(text);
        s.appendChild(num);
        strip.appendChild(s);
        return s;
      });
      var first = spans[Math.max(0, st.pin)];
      if (first) first.tabIndex = 0;
      var n = spans.length;
      var cell = Math.max(3, Math.min(14, Math.floor(336 / Math.max(1, n))));
      canvas.width = cell * n; canvas.height = cell * n;
      canvas._cell = cell;
      canvas.setAttribute("aria-label", "attention matrix, " + n + " queries by " + n + " keys");
    }

    function topList(title, pairs, kind) {
      var box = el("div", "ia-top " + kind);
      box.appendChild(el("div", "ia-top-title", title));
      var table = el("table", "ia-top-table");
      pairs.sort(function (a, b) { return b[1] - a[1]; });
      pairs.slice(0, 8).forEach(function (p) {
        var tr = el("tr");
        tr.appendChild(el("td", "ia-pos", String(p[0])));
        tr.appendChild(el("td", "ia-ttext", shown(ex().tokens[p[0]])));
        var td = el("td", "ia-val", p[1].toFixed(3));
        td.dataset.pos = String(p[0]);
        tr.appendChild(td);
        table.appendChild(tr);
      });
      box.appendChild(table);
      return box;
    }

    function drawMatrix(active) {
      var ctx = canvas.getContext && canvas.getContext("2d");
      if (!ctx) return;
      var n = spans.length, c = canvas._cell;
      ctx.fillStyle = "#ffffff";
      ctx.fillRect(0, 0, canvas.width, canvas.height);
      for (var q = 0; q < n; q++) {
        var r = rows()[q] || [];
        for (var k = 0; k < r.length; k++) {
          if (!r[k]) continue;
          ctx.fillStyle = "rgba(29,94,201," + alpha(r[k] / S) + ")";
          ctx.fillRect(k * c, q * c, c, c);
        }
      }
      if (active >= 0) {
        ctx.lineWidth = 2;
        ctx.strokeStyle = "#1d5ec9";
        ctx.strokeRect(1, active * c + 1, n * c - 2, c - 2);
        ctx.strokeStyle = "#d9731a";
        ctx.strokeRect(active * c + 1, 1, c - 2, n * c - 2);
      }
    }

    function render() {
      var active = st.hover >= 0 ? st.hover : st.pin;
      var toks = ex().tokens;
      spans.forEach(function (s, j) {
        var num = s.lastChild;
        s.classList.toggle("ia-active", j === active);
        s.classList.toggle("ia-pinned", j === st.pin);
        s.setAttribute("aria-selected", j === st.pin ? "true" : "false");
        if (active < 0) {
          s.style.backgroundColor = "";
          num.textContent = "\u00a0";
          s.title = "position " + j;
          s.classList.remove("ia-masked");
          return;
        }
        var q = st.mode === "row" ? active : j, k = st.mode === "row" ? j : active;
        var m = masked(q, k), v = m ? 0 : w(q, k);
        var rgb = st.mode === "row" ? "29,94,201" : "217,115,26";
        s.style.backgroundColor = m ? "" : "rgba(" + rgb + "," + alpha(v) + ")";
        s.classList.toggle("ia-dark", !m && v > 0.3);
        s.classList.toggle("ia-masked", m);
        num.textContent = m ? "\u00a0" : v.toFixed(2);
        s.title = m ? "masked (causal)" : (st.mode === "row" ? "attention from " + active + " to " + j
          : "attention from " + j + " to " + active) + ": " + v.toFixed(3);
      });
      while (info.firstChild) info.removeChild(info.firstChild);
      var h = D.heads[st.hi];
      var head = el("div", "ia-head-title", "Layer " + h[0] + ", head " + h[1]);
      info.appendChild(head);
      if (active < 0) {
        info.appendChild(el("p", "ia-hint", "Choose a token to see its attention."));
      } else {
        info.appendChild(el("div", "ia-current", "token " + active + " \u201c" + shown(toks[active]) + "\u201d"));
        var rowPairs = [], colPairs = [];
        for (var j = 0; j < toks.length; j++) {
          if (!masked(active, j)) rowPairs.push([j, w(active, j)]);
          if (!masked(j, active)) colPairs.push([j, w(j, active)]);
        }
        info.appendChild(topList("attends to (row " + active + ")", rowPairs, "ia-row"));
        info.appendChild(topList("attended to by (column " + active + ")", colPairs, "ia-col"));
      }
      drawMatrix(active);
    }

    function setPin(i, focus) {
      if (i < 0 || i >= spans.length) return;
      spans.forEach(function (s) { s.tabIndex = -1; });
      spans[i].tabIndex = 0;
      st.pin = i;
      if (focus) spans[i].focus();
      render();
    }
    function setHeadIndex(i, notify) {
      if (i < 0 || i >= D.heads.length) return;
      st.hi = i;
      fillHeads();
      render();
      if (notify) {
        root.dispatchEvent(new CustomEvent("interp-attn-head", { bubbles: true,
          detail: { layer: D.heads[i][0], head: D.heads[i][1] } }));
      }
    }
    function setExample(i) {
      if (i < 0 || i >= D.examples.length) return;
      st.ex = i; st.hover = -1;
      st.pin = Math.min(st.pin, D.examples[i].tokens.length - 1);
      exSel.value = String(i);
      buildTokens();
      render();
    }

    exSel.addEventListener("change", function () { setExample(parseInt(exSel.value, 10)); });
    layerSel.addEventListener("change", function () {
      var layer = parseInt(layerSel.value, 10);
      var current = D.heads[st.hi][1], pick = -1;
      D.heads.forEach(function (h, i) {
        if (h[0] === layer && (pick < 0 || h[1] === current)) pick = i;
      });
      setHeadIndex(pick, true);
    });
    headSel.addEventListener("change", function () { setHeadIndex(parseInt(headSel.value, 10), true); });
    strip.addEventListener("mouseover", function (e) {
      var t = e.target.closest(".ia-tok");
      if (t && strip.contains(t)) { st.hover = parseInt(t.dataset.pos, 10); render(); }
    });
    strip.addEventListener("mouseleave", function () { st.hover = -1; render(); });
    strip.addEventListener("click", function (e) {
      var t = e.target.closest(".ia-tok");
      if (t) setPin(parseInt(t.dataset.pos, 10), true);
    });
    strip.addEventListener("focusin", function (e) {
      var t = e.target.closest(".ia-tok");
      if (t) {
        var i = parseInt(t.dataset.pos, 10);
        if (i !== st.pin) setPin(i, false);
      }
    });
    strip.addEventListener("keydown", function (e) {
      var n = spans.length, cur = st.pin < 0 ? 0 : st.pin;
      var key = e.key;
      if (key === "ArrowRight" || key === "ArrowDown") setPin(Math.min(n - 1, st.pin < 0 ? 0 : cur + 1), true);
      else if (key === "ArrowLeft" || key === "ArrowUp") setPin(Math.max(0, cur - 1), true);
      else if (key === "Home") setPin(0, true);
      else if (key === "End") setPin(n - 1, true);
      else if (key === "Enter" || key === " ") {
        var t = document.activeElement && document.activeElement.closest && document.activeElement.closest(".ia-tok");
        var i = t ? parseInt(t.dataset.pos, 10) : cur;
        if (st.pin === i && key === "Enter") { st.pin = -1; render(); } else setPin(i, true);
      } else if (key === "Escape") { st.pin = -1; st.hover = -1; render(); }
      else if (key === "]") setHeadIndex((st.hi + 1) % D.heads.length, true);
      else if (key === "[") setHeadIndex((st.hi - 1 + D.heads.length) % D.heads.length, true);
      else return;
      e.preventDefault();
    });
    function cellAt(e) {
      var r = canvas.getBoundingClientRect(), c = canvas._cell;
      var sx = canvas.width / r.width, sy = canvas.height / r.height;
      return [Math.floor((e.clientY - r.top) * sy / c), Math.floor((e.clientX - r.left) * sx / c)];
    }
    canvas.addEventListener("mousemove", function (e) {
      var qk = cellAt(e), toks = ex().tokens;
      if (qk[0] < 0 || qk[1] < 0 || qk[0] >= toks.length || qk[1] >= toks.length) return;
      status.textContent = "query " + qk[0] + " \u201c" + shown(toks[qk[0]]) + "\u201d \u2192 key " + qk[1] +
        " \u201c" + shown(toks[qk[1]]) + "\u201d: " + (masked(qk[0], qk[1]) ? "masked" : w(qk[0], qk[1]).toFixed(3));
    });
    canvas.addEventListener("mouseleave", function () { status.textContent = "\u00a0"; });
    canvas.addEventListener("click", function (e) { var qk = cellAt(e); setPin(qk[0], false); });

    exSel.value = String(st.ex);
    fillHeads();
    buildTokens();
    render();
    var api = {
      root: root,
      setHead: function (layer, headIndex) {
        for (var i = 0; i < D.heads.length; i++) {
          if (D.heads[i][0] === layer && D.heads[i][1] === headIndex) { setHeadIndex(i, false); return true; }
        }
        return false;
      },
      head: function () { return { layer: D.heads[st.hi][0], head: D.heads[st.hi][1] }; },
      setExample: setExample,
      pin: function (i) { setPin(i, false); }
    };
    root._interpAttn = api;
    return api;
  }

  function mountAll() {
    var found = document.querySelectorAll(".interp-attn");
    for (var i = 0; i < found.length; i++) mount(found[i]);
  }
  window.InterpAttn = { mount: mount, mountAll: mountAll };
  mountAll();
})();
