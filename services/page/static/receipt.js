// The receipt's Print button: shown only where this script runs (without it, the browser's print).
"use strict";
(function () {
  var button = document.getElementById("print");
  if (!button || typeof window.print !== "function") return;
  button.hidden = false;
  button.addEventListener("click", function () { window.print(); });
})();
