// Swagger UI for /docs. In a file, not inline: the Content-Security-Policy allows no inline script.
(function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapi,
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,  // the default validator is a third-party site
  });
})();
