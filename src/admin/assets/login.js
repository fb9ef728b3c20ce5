(function () {
  'use strict';
  // Reloading the status page drops the token from the address (the page removed it); bring
  // the one this tab keeps back once. A token the agent just rejected is forgotten instead,
  // so a changed token cannot send the browser round in circles.
  var KEY = 'ttp-agent-admin-token';
  try {
    if (document.body.getAttribute('data-rejected') === 'true') {
      sessionStorage.removeItem(KEY);
      return;
    }
    var t = sessionStorage.getItem(KEY);
    if (t) {
      var u = new URL(window.location.href);
      u.searchParams.set('token', t);
      window.location.replace(u.toString());
    }
  } catch (e) { /* storage disabled: the form still works */ }
})();
