(function () {
  'use strict';
  // The token never goes into an address the browser sends: the form POSTs it, and this tab
  // keeps it in sessionStorage for the status page's own requests. A link may carry it after
  // '#' (never sent by browsers); it is taken from there and removed from the address.
  // Reloading the status page shows this form again: submit this tab's token once. A token the
  // agent just rejected is forgotten instead, so a changed token cannot send the browser round
  // in circles.
  var KEY = 'ttp-agent-admin-token';
  var form = document.getElementById('login');
  var input = document.getElementById('token');
  try {
    var handed = /^#token=(.+)$/.exec(window.location.hash);
    if (handed) {
      sessionStorage.setItem(KEY, decodeURIComponent(handed[1]));
      history.replaceState(null, '', window.location.pathname);
    }
    if (document.body.getAttribute('data-rejected') === 'true') {
      sessionStorage.removeItem(KEY);
    } else {
      var t = sessionStorage.getItem(KEY);
      if (t) {
        input.value = t;
        form.submit();
        return;
      }
    }
  } catch (e) { /* storage disabled: the form still works, for this page view */ }
  form.addEventListener('submit', function () {
    try { sessionStorage.setItem(KEY, input.value); } catch (e) { /* see above */ }
  });
})();
