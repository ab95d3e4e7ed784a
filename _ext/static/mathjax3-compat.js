/* The ipywidgets embed manager (@jupyter-widgets/html-manager 1.x) typesets
 * widget labels with the MathJax 2 call MathJax.Hub.Queue(["Typeset", ...]).
 * The book loads MathJax 3, which has no MathJax.Hub: provide that one call,
 * forwarding it to MathJax 3's typesetPromise. Loaded before embed.js. */
(function () {
  "use strict";
  function install() {
    var MJ = window.MathJax;
    if (!MJ || MJ.Hub || typeof MJ.typesetPromise !== "function") return;
    MJ.Hub = {
      Queue: function () {
        var elements = [];
        for (var i = 0; i < arguments.length; i++) {
          var call = arguments[i];
          if (Array.isArray(call) && call[0] === "Typeset" && call[2]) elements.push(call[2]);
        }
        if (!elements.length) return;
        var ready = MJ.startup && MJ.startup.promise ? MJ.startup.promise : Promise.resolve();
        ready.then(function () { return MJ.typesetPromise(elements); })
             .catch(function (err) { console.warn("MathJax could not typeset a widget label:", err); });
      }
    };
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", install);
  } else {
    install();
  }
})();
