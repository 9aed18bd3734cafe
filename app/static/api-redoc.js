// Starts Redoc on /redoc from a file of this service (no inline script: the CSP forbids it).
(function () {
  "use strict";
  var root = document.getElementById("redoc");
  Redoc.init(root.getAttribute("data-openapi-url"), { hideDownloadButton: false }, root);
})();
