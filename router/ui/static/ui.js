// The admin UI works without this file; it only adds conveniences. Loaded as a file because the
// Content-Security-Policy forbids inline script.
"use strict";
document.addEventListener("submit", function (event) {
  var form = event.target;
  var question = form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});
document.addEventListener("change", function (event) {
  var field = event.target;
  if (field.hasAttribute && field.hasAttribute("data-autosubmit") && field.form) {
    field.form.submit();
  }
});
document.addEventListener("focusin", function (event) {
  if (event.target.hasAttribute && event.target.hasAttribute("data-select-on-focus")) {
    event.target.select();
  }
});
// The overview asks to be reloaded now and then, unless the operator is typing in a form.
(function () {
  var seconds = Number(document.body.getAttribute("data-refresh"));
  if (seconds > 0) {
    window.setInterval(function () {
      var active = document.activeElement;
      if (!active || !active.form) {
        window.location.reload();
      }
    }, seconds * 1000);
  }
})();
