// Interactive figures on the static website (noisegeom.widgets.explore, book build).
//
// Each .ng-explorer block carries, in data-ng-explorer, its controls (name, kind, the labels
// of the values the website offers, the default's index) and a map from a setting (one
// index per control, joined by commas) to the file of the figure computed there. The
// controls are plain HTML inputs whose steps are exactly those values. Moving one shows the
// frame for the setting the controls now show; when the exact combination was not computed
// (a control varied one at a time), the other controls move to the nearest computed setting:
// the fewest changes to the current one, then the fewest departures from the defaults.
// A widget's frames are fetched only once the reader reaches for its controls.
(function () {
  "use strict";

  function frameBase() {
    // Sphinx writes the relative path to the site's root on <html data-content_root>.
    const root = document.documentElement.dataset.content_root || "./";
    return root + "_static/frames/";
  }

  function setup(box) {
    const config = JSON.parse(box.dataset.ngExplorer);
    const controls = config.controls;
    const inputs = controls.map((_, i) => box.querySelector('[data-control="' + i + '"]'));
    const img = box.querySelector("img.ng-explorer-figure");
    const base = frameBase();
    const settings = Object.keys(config.frames).map(k => k.split(",").map(Number));
    const defaults = controls.map(c => c.default);
    let current = defaults.slice();
    let preloaded = null;   // the fetched frames, kept (decoded) so that a swap only paints

    function read(i) {
      const el = inputs[i];
      return controls[i].kind === "checkbox" ? (el.checked ? 1 : 0) : Number(el.value);
    }

    function show(setting) {
      setting.forEach((k, i) => {
        const el = inputs[i], c = controls[i];
        if (c.kind === "checkbox") el.checked = k === 1; else el.value = String(k);
        if (c.kind === "slider") {
          el.setAttribute("aria-valuetext", c.labels[k]);
          const out = el.parentElement.querySelector("output");
          if (out) out.textContent = c.labels[k];
        }
      });
      current = setting.slice();
      const name = config.frames[setting.join(",")];
      if (img.dataset.frame === name) return;
      const t0 = performance.now();
      img.dataset.frame = name;
      img.src = base + name;
      img.decode().then(() => {
        if (img.dataset.frame === name) box.dataset.swapMs = (performance.now() - t0).toFixed(1);
      }, () => {});
    }

    function nearest(i, k) {
      let best = null, bestScore = null;
      for (const s of settings) {
        if (s[i] !== k) continue;
        let moved = 0, off = 0;
        s.forEach((v, j) => { if (j !== i) { moved += v !== current[j]; off += v !== defaults[j]; } });
        const score = moved * 1000 + off;
        if (bestScore === null || score < bestScore) { best = s; bestScore = score; }
      }
      return best;
    }

    function preload() {
      if (preloaded) return;
      preloaded = [];
      const ready = [];
      for (const name of new Set(Object.values(config.frames))) {
        const im = new Image();
        im.src = base + name;
        ready.push(im.decode().catch(() => {}));
        preloaded.push(im);
      }
      Promise.all(ready).then(() => { box.dataset.preloaded = "true"; });
    }

    inputs.forEach((el, i) => {
      el.addEventListener("input", () => {
        const s = nearest(i, read(i));
        if (s) show(s);
      });
    });
    const panel = box.querySelector(".ng-explorer-controls");
    panel.addEventListener("pointerenter", preload);
    panel.addEventListener("focusin", preload);
    panel.addEventListener("touchstart", preload, {passive: true});
    box.classList.add("ng-ready");
  }

  function init() {
    document.querySelectorAll(".ng-explorer[data-ng-explorer]").forEach(setup);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
