(function () {
  'use strict';

  // The server renders the whole page (it works without this script). The script keeps it
  // fresh: it fetches the page again every 15 seconds, swaps the new header and main content
  // in (parsed with DOMParser: nothing is ever assigned as markup), ticks the countdowns
  // every second, and copies summaries to the clipboard.

  var TOKEN_KEY = 'ttp-agent-admin-token';
  var REFRESH_MS = 15000;

  // A token handed over in the address (?token=…) moves into this tab's sessionStorage and out
  // of the address bar, so it stays out of the history and of links copied from the page.
  var here = new URL(window.location.href);
  var handed = here.searchParams.get('token');
  if (handed) {
    try { sessionStorage.setItem(TOKEN_KEY, handed); } catch (e) { /* storage off: this page only */ }
    here.searchParams.delete('token');
    history.replaceState(null, '', here.pathname + here.search + here.hash);
  }
  var token = handed || stored();

  function stored() {
    try { return sessionStorage.getItem(TOKEN_KEY); } catch (e) { return null; }
  }

  var lastLoaded = Date.now();  // the server rendered this view just now
  var clockOffset = 0;          // the agent's clock minus this browser's, for honest countdowns
  var stopped = false;

  function byTestId(id) { return document.querySelector('[data-testid="' + id + '"]'); }

  function syncClock() {
    var updated = byTestId('updated');
    var generated = updated && Date.parse(updated.getAttribute('data-generated'));
    if (generated) { clockOffset = generated - Date.now(); }
  }

  function plural(n, one, many) { return n + ' ' + (n === 1 ? one : many); }

  // The same words as the server's (admin/view.rs), so a tick changes numbers, not wording.
  function timeLeft(ms) {
    if (ms <= 0) { return 'deadline passed'; }
    var s = Math.floor(ms / 1000);
    var d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600);
    var m = Math.floor(s % 3600 / 60), sec = s % 60;
    if (d > 0) { return d + ' d ' + h + ' h ' + m + ' min'; }
    if (h > 0) { return h + ' h ' + m + ' min ' + sec + ' s'; }
    return m > 0 ? m + ' min ' + sec + ' s' : sec + ' s';
  }

  function ago(ms) {
    var s = Math.max(0, Math.floor(ms / 1000));
    if (s < 60) { return 'just now'; }
    if (s < 3600) { return plural(Math.floor(s / 60), 'minute', 'minutes') + ' ago'; }
    if (s < 172800) { return plural(Math.floor(s / 3600), 'hour', 'hours') + ' ago'; }
    return plural(Math.floor(s / 86400), 'day', 'days') + ' ago';
  }

  // Deadlines keep the colour the server chose for their window; only red in the last 12
  // hours is added as time passes.
  function tick() {
    var t = Date.now() + clockOffset;
    document.querySelectorAll('[data-until]').forEach(function (node) {
      var ms = Date.parse(node.getAttribute('data-until')) - t;
      if (node.getAttribute('data-deadline') === 'yes') {
        node.textContent = timeLeft(ms);
        if (ms < 12 * 3600 * 1000) { node.className = 'countdown red'; }
      } else {
        node.textContent = ms <= 0 ? 'any moment' : 'in ' + timeLeft(ms);
      }
    });
    var updated = byTestId('updated');
    var age = Date.now() - lastLoaded;
    if (updated && age > 3 * REFRESH_MS) {
      updated.className = 'updated stale';
      updated.textContent = 'Cannot reach the agent: the numbers below are from ' + ago(age) + '.';
    }
  }

  function swap(text) {
    var doc = new DOMParser().parseFromString(text, 'text/html');
    ['header.top', 'main'].forEach(function (selector) {
      var fresh = doc.querySelector(selector);
      var old = document.querySelector(selector);
      if (fresh && old) { old.replaceWith(document.adoptNode(fresh)); }
    });
    lastLoaded = Date.now();
    syncClock();
    tick();
    document.body.setAttribute('data-state', 'loaded');
  }

  function unauthorized() {
    stopped = true;
    try { sessionStorage.removeItem(TOKEN_KEY); } catch (e) { /* nothing stored */ }
    var banners = document.getElementById('banners');
    if (banners) {
      var b = document.createElement('div');
      b.className = 'banner red';
      b.setAttribute('role', 'alert');
      b.textContent = 'This page needs the access token of the agent\'s admin page. Open the link you were given (it ends in #token=…) again, or ask your IT team for it.';
      banners.appendChild(b);
    }
    document.body.setAttribute('data-state', 'unauthorized');
  }

  function refresh() {
    if (stopped) { return; }
    var headers = { Accept: 'text/html' };
    if (token) { headers.Authorization = 'Bearer ' + token; }
    fetch(window.location.pathname, { headers: headers, cache: 'no-store', credentials: 'omit' })
      .then(function (resp) {
        if (resp.status === 401) { unauthorized(); return null; }
        // A 503 page still carries the agent's explanation: show it.
        return resp.text();
      })
      .then(function (text) { if (text) { swap(text); } })
      .catch(function () { tick(); });
  }

  // "Copy summary": the text of the task's summary box.
  document.addEventListener('click', function (event) {
    var button = event.target.closest && event.target.closest('button[data-copy]');
    if (!button) { return; }
    var box = button.parentNode.querySelector('textarea.copy');
    if (!box) { return; }
    var done = function () { button.textContent = 'Copied'; };
    if (navigator.clipboard && navigator.clipboard.writeText) {
      navigator.clipboard.writeText(box.value).then(done, function () { box.select(); });
    } else {
      box.select();
    }
  });

  syncClock();
  tick();
  setInterval(refresh, REFRESH_MS);
  setInterval(tick, 1000);
})();
