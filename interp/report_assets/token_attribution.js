/* interp token-attribution viewer: standard DOM only, no network, no innerHTML with data.
   Every .interp-tattr element holds its data in a JSON script element of class interp-tattr-data:
   {methods: [name, ...], signed: [name, ...], examples: [{prompt, tokens, predict, target,
   scores: {method: [value or null per token]}}]}. One method is shown at a time: each token is coloured
   by its score divided by the largest |score| of that method on that prompt (red supports the target,
   blue opposes it; unsigned methods are red only); null (special tokens) is left uncoloured. */
(function () {
  "use strict";
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }
  function shown(t) {
    if (t === "") return "\u2205";
    if (t.trim() === "") t = t.replace(/ /g, "\u2423");
    return t.replace(/\r/g, "\u240d").replace(/\n/g, "\u21b5").replace(/\t/g, "\u21e5");
  }
  function label(text, control) {
    var l = el("label", "ta-label");
    l.appendChild(document.createTextNode(text + " "));
    l.appendChild(control);
    return l;
  }
  function mount(root) {
    if (root._interpTattr) return;
    root._interpTattr = true;
    var D = JSON.parse(root.querySelector("script.interp-tattr-data").textContent);
    var body = root.querySelector(".ta-body") || root;
    var controls = el("div", "ta-controls");
    var exSel = el("select", "ta-example");
    D.examples.forEach(function (e, i) {
      var text = e.prompt.length > 70 ? e.prompt.slice(0, 70) + "\u2026" : e.prompt;
      var o = el("option", null, (i + 1) + ": " + text.replace(/\s+/g, " "));
      o.value = String(i);
      exSel.appendChild(o);
    });
    var mSel = el("select", "ta-method");
    D.methods.forEach(function (m) { var o = el("option", null, m); o.value = m; mSel.appendChild(o); });
    controls.appendChild(label("Prompt", exSel));
    controls.appendChild(label("Method", mSel));
    body.appendChild(controls);
    var caption = el("div", "ta-caption");
    body.appendChild(caption);
    var tokens = el("div", "ta-tokens");
    body.appendChild(tokens);

    function draw() {
      var ex = D.examples[Number(exSel.value)];
      var method = mSel.value;
      var values = ex.scores[method] || [];
      var signed = D.signed.indexOf(method) >= 0;
      var top = 0;
      values.forEach(function (v) { if (v !== null && Math.abs(v) > top) top = Math.abs(v); });
      caption.textContent = "explaining " + JSON.stringify(ex.target) + " at position " + ex.predict +
        " \u2014 " + method + (signed ? " (signed: red supports, blue opposes)" : " (unsigned)") +
        ", largest |score| " + top.toPrecision(3);
      while (tokens.firstChild) tokens.removeChild(tokens.firstChild);
      ex.tokens.forEach(function (t, i) {
        var v = values[i];
        var span = el("span", "ta-tok");
        span.appendChild(el("span", "ta-text", shown(t)));
        var w = el("span", "ta-w", v === null || v === undefined ? "\u2014" : Number(v).toPrecision(2));
        span.appendChild(w);
        if (v === null || v === undefined) {
          span.classList.add("ta-special");
        } else if (top > 0) {
          var a = Math.sqrt(Math.min(1, Math.abs(v) / top)).toFixed(3);
          span.style.backgroundColor = v >= 0 ? "rgba(214,39,40," + a + ")" : "rgba(31,119,180," + a + ")";
          if (a > 0.6) span.classList.add("ta-dark");
        }
        if (i === ex.predict) span.classList.add("ta-predict");
        span.title = "position " + i + ": " + (v === null || v === undefined ? "not scored" : String(v));
        tokens.appendChild(span);
      });
    }
    exSel.addEventListener("change", draw);
    mSel.addEventListener("change", draw);
    draw();
  }
  function mountAll() {
    Array.prototype.forEach.call(document.querySelectorAll(".interp-tattr"), mount);
  }
  window.InterpTattr = { mount: mount, mountAll: mountAll };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", mountAll);
  else mountAll();
})();
