(function () {
  'use strict';

  var TOKEN_KEY = 'ttp-agent-admin-token';
  var REFRESH_MS = 15000;
  var DAYS = 14;
  var SVG = 'http://www.w3.org/2000/svg';

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

  var TYPES = {
    send_idat: 'Send patient data',
    dic_psn_available: 'Pseudonym ready',
    repeat_request: 'Repeat registration'
  };
  var STATES = {
    'needs-attention': 'Needs a person',
    'retry-wait': 'Retrying',
    'in-doubt': 'Checking delivery',
    running: 'Being answered',
    received: 'Waiting'
  };
  var STATE_ORDER = ['needs-attention', 'retry-wait', 'in-doubt', 'running', 'received'];
  var STATE_WORDS = {
    'needs-attention': 'Needs a person',
    'retry-wait': 'Retrying after an error',
    'in-doubt': 'Checking whether the fTTP received the answer',
    running: 'Being answered right now',
    received: 'Waiting to be answered'
  };

  var clockOffset = 0;    // the agent's clock minus this browser's, for honest countdowns
  var warnMs = 48 * 3600 * 1000;
  var lastLoaded = null;  // when the last report arrived (browser clock)
  var stopped = false;

  function now() { return Date.now() + clockOffset; }

  function typeName(t) { return TYPES[t] || ('Unknown task type "' + t + '"'); }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    setAttrs(node, attrs);
    append(node, children);
    return node;
  }

  function svg(tag, attrs, children) {
    var node = document.createElementNS(SVG, tag);
    setAttrs(node, attrs);
    append(node, children);
    return node;
  }

  function setAttrs(node, attrs) {
    Object.keys(attrs || {}).forEach(function (k) {
      if (attrs[k] !== null && attrs[k] !== undefined) { node.setAttribute(k, String(attrs[k])); }
    });
  }

  function append(node, children) {
    (children === undefined ? [] : [].concat(children)).forEach(function (c) {
      if (c === null || c === undefined) { return; }
      node.appendChild(typeof c === 'object' ? c : document.createTextNode(String(c)));
    });
  }

  function byTestId(id) { return document.querySelector('[data-testid="' + id + '"]'); }
  function setText(id, value) { byTestId(id).textContent = String(value); }

  function clear(node) { while (node.firstChild) { node.removeChild(node.firstChild); } }

  function plural(n, one, many) { return n + ' ' + (n === 1 ? one : many); }

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

  function localTime(iso) {
    return new Date(iso).toLocaleString(undefined, {
      weekday: 'short', day: '2-digit', month: '2-digit', hour: '2-digit', minute: '2-digit'
    });
  }

  // A live countdown: tick() rewrites every element carrying data-until. Deadlines turn amber
  // inside the warning window and red in their last 12 hours; other moments stay neutral.
  function countdown(iso, isDeadline) {
    if (!iso) { return el('span', { 'class': 'when' }, 'no deadline'); }
    return el('span', {}, [
      el('span', { 'class': 'countdown', 'data-until': iso, 'data-deadline': isDeadline ? 'yes' : 'no' }, ''),
      el('span', { 'class': 'when' }, localTime(iso))
    ]);
  }

  function tick() {
    var t = now();
    document.querySelectorAll('[data-until]').forEach(function (node) {
      var ms = Date.parse(node.getAttribute('data-until')) - t;
      if (node.getAttribute('data-deadline') === 'yes') {
        node.textContent = timeLeft(ms);
        node.className = 'countdown' + (ms < 12 * 3600 * 1000 ? ' red' : ms <= warnMs ? ' amber' : '');
      } else {
        node.textContent = ms <= 0 ? 'any moment' : 'in ' + timeLeft(ms);
      }
    });
    var updated = byTestId('updated');
    if (lastLoaded !== null) {
      var age = Date.now() - lastLoaded;
      var stale = age > 3 * REFRESH_MS;
      updated.className = 'updated' + (stale ? ' stale' : '');
      updated.textContent = stale
        ? 'Cannot reach the agent: the numbers below are from ' + ago(age) + '.'
        : 'Updated ' + ago(age) + ' · refreshes every 15 seconds';
    }
  }

  function taskCell(line) {
    return el('td', {}, [typeName(line.task_type), el('span', { 'class': 'key' }, line.key)]);
  }

  // Reasons read "what happened; a hint" (domain::Attention); the advice comes separately.
  function whyAndWhat(line) {
    var text = line.reason || 'unknown';
    var cut = text.indexOf('; ');
    var why = cut < 0 ? text : text.slice(0, cut);
    var rest = cut < 0 ? '' : text.slice(cut + 2);
    var what = line.advice || (rest ? rest.charAt(0).toUpperCase() + rest.slice(1)
      : 'Ask your IT team to look at this task with `ttp-agent status`.');
    return [why.charAt(0).toUpperCase() + why.slice(1), what];
  }

  function banner(kind, title, detail) {
    return el('div', { 'class': 'banner ' + kind, role: 'alert', 'data-testid': 'banner' },
      [title, detail ? el('span', {}, detail) : null]);
  }

  function tile(id, value, level) {
    setText(id, value);
    document.getElementById(id).className = 'tile' + (level ? ' ' + level : '');
  }

  function fillRows(sectionId, bodyId, lines, row) {
    var body = document.getElementById(bodyId);
    clear(body);
    lines.forEach(function (line) { body.appendChild(row(line)); });
    document.getElementById(sectionId).hidden = lines.length === 0;
  }

  function render(r) {
    clockOffset = Date.parse(r.generated_at) - Date.now();
    warnMs = (r.warn_window_seconds || 172800) * 1000;
    var d = r.daemon;
    setText('site', d ? 'Study ' + d.study + ' · site ' + d.target + ' · agent version ' + d.version
                      : 'Status from the agent\'s store');

    var banners = document.getElementById('banners');
    clear(banners);
    if (d && !d.ready) {
      banners.appendChild(banner('red', 'The agent is not working properly. Tell your IT team.', d.not_ready_reason));
    } else if (d && d.last_cycle_error) {
      banners.appendChild(banner('amber', 'The last contact with the fTTP failed. The agent tries again by itself.', d.last_cycle_error));
    }
    var w = r.webhook || {};
    if (w.failing > 0) {
      banners.appendChild(banner('amber', plural(w.pending, 'alert', 'alerts') + ' could not be sent to the alert webhook yet; the agent keeps trying.', w.last_error));
    }
    if (w.dropped > 0) {
      banners.appendChild(banner('amber', plural(w.dropped, 'alert was', 'alerts were') + ' never delivered to the alert webhook.', 'This page still shows every task that needs a person.'));
    }

    var s = r.summary;
    var warnHours = Math.round(warnMs / 3600000);
    document.getElementById('expiring-label').textContent = 'expire within ' + warnHours + ' hours';
    tile('tile-attention', s.needs_attention, s.needs_attention > 0 ? 'red' : 'green');
    tile('tile-expiring', s.expiring_soon, s.expiring_soon > 0 ? 'amber' : 'green');
    tile('tile-failing', s.failing, s.failing > 0 ? 'amber' : '');
    tile('tile-open', s.open, '');
    var rec = r.records;
    tile('tile-pseudonyms', rec.pseudonymised, '');
    document.getElementById('pseudonyms-label').textContent = 'pseudonyms obtained, of ' + rec.total + ' records';
    var poll = byTestId('last-poll');
    poll.textContent = r.last_successful_poll ? ago(now() - Date.parse(r.last_successful_poll)) : 'never';
    poll.title = r.last_successful_poll ? localTime(r.last_successful_poll) : '';
    document.getElementById('tile-poll').className = 'tile' + (d && !d.ready ? ' red' : r.last_successful_poll ? ' green' : ' amber');

    fillRows('attention', 'attention-rows', r.needs_attention, function (t) {
      var parts = whyAndWhat(t);
      return el('tr', { 'data-testid': 'attention-row', 'data-task-key': t.key }, [
        taskCell(t), el('td', {}, parts[0]), el('td', {}, parts[1]), el('td', {}, countdown(t.expires, true))
      ]);
    });
    var expiring = r.open.concat(r.needs_attention).filter(function (t) { return t.urgent; });
    expiring.sort(function (a, b) { return Date.parse(a.expires) - Date.parse(b.expires); });
    fillRows('expiring', 'expiring-rows', expiring, function (t) {
      return el('tr', { 'data-testid': 'expiring-row', 'data-task-key': t.key }, [
        taskCell(t), el('td', {}, STATE_WORDS[t.state] || t.state), el('td', {}, countdown(t.expires, true))
      ]);
    });
    fillRows('failing', 'failing-rows', r.failing, function (t) {
      return el('tr', { 'data-testid': 'failing-row', 'data-task-key': t.key }, [
        taskCell(t), el('td', { 'class': 'n' }, t.attempts),
        el('td', { 'class': 'err' }, t.last_error || ''),
        el('td', {}, t.next_attempt ? countdown(t.next_attempt, false) : 'soon')
      ]);
    });

    renderOpen(r.open_by_type);
    setText('records-total', rec.total);
    setText('records-pseudonymised', rec.pseudonymised);
    setText('records-awaiting', rec.awaiting_clearing);
    setText('records-pending', rec.pending_registration);
    setText('records-rejected', rec.rejected);
    renderChart(r.history);

    lastLoaded = Date.now();
    tick();
    document.body.setAttribute('data-state', 'loaded');
  }

  function renderOpen(byType) {
    var table = document.getElementById('open-table');
    clear(table);
    var types = Object.keys(byType).sort();
    document.getElementById('open-none').hidden = types.length > 0;
    table.hidden = types.length === 0;
    if (types.length === 0) { return; }
    table.appendChild(el('thead', {}, el('tr', {}, [el('th', {}, 'Task type')]
      .concat(STATE_ORDER.map(function (st) { return el('th', { 'class': 'n' }, STATES[st]); }))
      .concat([el('th', { 'class': 'n' }, 'All')]))));
    var body = el('tbody', {});
    types.forEach(function (t) {
      var total = 0;
      var cells = STATE_ORDER.map(function (st) {
        var n = byType[t][st] || 0;
        total += n;
        return el('td', {
          'class': 'n' + (n === 0 ? ' zero' : ''), 'data-testid': 'open-count', 'data-type': t, 'data-state': st
        }, n);
      });
      body.appendChild(el('tr', {}, [el('th', {}, typeName(t))].concat(cells)
        .concat([el('td', { 'class': 'n', 'data-testid': 'open-total', 'data-type': t }, total)])));
    });
    table.appendChild(body);
  }

  // The smallest of 2, 4, 6, 8, 10, 20, 40, … that is at least v: even, so the middle
  // gridline falls on a whole number.
  function niceCeil(v) {
    if (!(v < 1e12)) { return v; }
    for (var m = 1; ; m *= 10) {
      var steps = [2, 4, 6, 8, 10];
      for (var i = 0; i < steps.length; i++) { if (steps[i] * m >= v) { return steps[i] * m; } }
    }
  }

  function sum(obj) {
    return Object.keys(obj || {}).reduce(function (acc, k) { return acc + obj[k]; }, 0);
  }

  function renderChart(history) {
    var days = history.map(function (h) { return { day: h.day, done: sum(h.done), expired: sum(h.expired) }; });
    var totalDone = days.reduce(function (a, x) { return a + x.done; }, 0);
    var totalExpired = days.reduce(function (a, x) { return a + x.expired; }, 0);
    setText('history-done-total', totalDone);
    setText('history-expired-total', totalExpired);
    document.getElementById('history-days').textContent = days.length;

    var W = 1100, H = 240, left = 40, right = 10, top = 28, bottom = 34;
    var plotW = W - left - right, plotH = H - top - bottom;
    var max = niceCeil(days.reduce(function (a, x) { return Math.max(a, x.done, x.expired); }, 0));
    var chart = svg('svg', { viewBox: '0 0 ' + W + ' ' + H, 'data-testid': 'history-chart' });
    [0, 0.5, 1].forEach(function (f) {
      var y = top + plotH - f * plotH;
      chart.appendChild(svg('line', { x1: left, x2: W - right, y1: y, y2: y, 'class': 'axis' }));
      chart.appendChild(svg('text', { x: left - 6, y: y + 4, 'text-anchor': 'end' }, String(f * max)));
    });
    var group = days.length ? plotW / days.length : plotW;
    var barW = Math.max(2, Math.min(28, group * 0.34));
    days.forEach(function (x, i) {
      var cx = left + group * i + group / 2;
      var g = svg('g', { 'data-testid': 'history-day', 'data-day': x.day, 'data-done': x.done, 'data-expired': x.expired });
      [['done', x.done, cx - barW - 1], ['expired', x.expired, cx + 1]].forEach(function (b) {
        var h = b[1] / max * plotH;
        g.appendChild(svg('rect', { x: b[2], y: top + plotH - h, width: barW, height: Math.max(h, 0), 'class': 'bar-' + b[0] },
          svg('title', {}, b[1] + (b[0] === 'done' ? ' answered' : ' expired') + ' on ' + x.day)));
        if (b[1] > 0) {
          g.appendChild(svg('text', { x: b[2] + barW / 2, y: top + plotH - h - 3, 'text-anchor': 'middle', 'class': 'value' }, String(b[1])));
        }
      });
      var parts = x.day.split('-');
      g.appendChild(svg('text', { x: cx, y: H - bottom + 16, 'text-anchor': 'middle' }, parts[2] + '.' + parts[1] + '.'));
      chart.appendChild(g);
    });
    var legend = svg('g', {}, [
      svg('rect', { x: W - 210, y: 6, width: 12, height: 12, 'class': 'bar-done' }),
      svg('text', { x: W - 193, y: 16 }, 'answered'),
      svg('rect', { x: W - 120, y: 6, width: 12, height: 12, 'class': 'bar-expired' }),
      svg('text', { x: W - 103, y: 16 }, 'expired (lost)')
    ]);
    chart.appendChild(legend);
    var box = document.getElementById('chart');
    clear(box);
    box.appendChild(chart);
  }

  function refresh() {
    if (stopped) { return; }
    var headers = { Accept: 'application/json' };
    if (token) { headers.Authorization = 'Bearer ' + token; }
    fetch('api/status?days=' + DAYS, { headers: headers, cache: 'no-store', credentials: 'omit' })
      .then(function (resp) {
        if (resp.status === 401) {
          stopped = true;
          try { sessionStorage.removeItem(TOKEN_KEY); } catch (e) { /* nothing stored */ }
          var banners = document.getElementById('banners');
          clear(banners);
          banners.appendChild(banner('red', 'This page needs the access token of the agent\'s admin page.',
            'Open the link you were given (it ends in ?token=…) again, or ask your IT team for it.'));
          document.body.setAttribute('data-state', 'unauthorized');
          return null;
        }
        if (!resp.ok) { throw new Error('HTTP ' + resp.status); }
        return resp.json();
      })
      .then(function (report) { if (report) { render(report); } })
      .catch(function () {
        if (lastLoaded === null) {
          byTestId('updated').textContent = 'Cannot reach the agent. Retrying every 15 seconds…';
          byTestId('updated').className = 'updated stale';
          document.body.setAttribute('data-state', 'error');
        }
        tick();
      });
  }

  refresh();
  setInterval(refresh, REFRESH_MS);
  setInterval(tick, 1000);
})();
