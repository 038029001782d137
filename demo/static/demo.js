// The demo page: one NotifyClient (the SDK's browser build, global
// NotifyWorkerClient) connected to /ws on this page's host, its state,
// cursor and last welcome, each notification as a card (newest first), and
// the nats commands that reach this page. Settings come from config.json.
//
// Elements a test reads: #state[data-state], #cursor[data-cursor],
// #recovered[data-recovered][data-reason], #replayed[data-replayed],
// #count[data-count], #cards > .card[data-kind][data-seq] with
// .card-body, #errors > li[data-code], .command[data-command] code, and
// body[data-ready="true"] once config.json is loaded.
'use strict';

(function () {
  const NAME_RULE = /^[A-Za-z0-9_-]{1,128}$/;
  const MAX_CARDS = 200;
  const MAX_ERRORS = 50;
  const CURSOR_REFRESH_MS = 1000;

  const $ = (id) => document.getElementById(id);
  const el = (tag, className, text) => {
    const e = document.createElement(tag);
    if (className) e.className = className;
    if (text !== undefined) e.textContent = text;
    return e;
  };

  let config = null;
  let client = null;
  let cursorTimer = 0;
  let received = 0;

  function wsURL() {
    return (location.protocol === 'https:' ? 'wss:' : 'ws:') + '//' + location.host + '/ws';
  }

  function clock() {
    return new Date().toLocaleTimeString([], { hour12: false });
  }

  // --- identity -----------------------------------------------------------

  // tokenSubject reads the sub claim of a JWT, for display only: the
  // worker verifies the token, the page does not.
  function tokenSubject(token) {
    const part = token.trim().split('.')[1];
    if (!part) return '';
    try {
      const b64 = part.replace(/-/g, '+').replace(/_/g, '/');
      const json = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
      const sub = JSON.parse(json).sub;
      return typeof sub === 'string' ? sub : '';
    } catch (_) {
      return '';
    }
  }

  function jwtMode() {
    return config && config.auth === 'jwt';
  }

  // currentName is the name the commands address: the one typed in, or
  // the token's sub.
  function currentName() {
    return jwtMode() ? tokenSubject($('token').value) : $('name').value.trim();
  }

  // formProblem says what keeps the form from connecting, or ''.
  function formProblem() {
    if (jwtMode()) {
      const token = $('token').value.trim();
      if (!token) return 'Paste a token.';
      if (token.split('.').length !== 3) return 'A JWT has three dot-separated parts.';
      return '';
    }
    const name = $('name').value.trim();
    if (!name) return 'Type a name.';
    if (!NAME_RULE.test(name)) return 'A name is 1 to 128 characters of A-Z a-z 0-9 _ -.';
    return '';
  }

  // --- commands -----------------------------------------------------------

  function commandLines(name) {
    const p = config.subject_prefix;
    const server = config.nats_url ? ' --server ' + config.nats_url : '';
    const n = NAME_RULE.test(name) ? name : '<name>';
    return {
      'user-core': `nats pub${server} ${p}.user.${n} '{"title":"hello-${n}"}'`,
      'user-durable': `nats request${server} durable.${p}.user.${n} '{"title":"stored-for-${n}"}'`,
      'all-core': `nats pub${server} ${p}.all '{"title":"hello-everyone"}'`,
      'all-durable': `nats request${server} durable.${p}.all '{"title":"stored-for-everyone"}'`,
    };
  }

  function renderCommands() {
    const name = currentName();
    const lines = commandLines(name);
    const named = NAME_RULE.test(name);
    for (const box of document.querySelectorAll('.command')) {
      const kind = box.dataset.command;
      box.hidden = box.hasAttribute('data-durable') && !config.durable;
      box.querySelector('code').textContent = lines[kind];
      // The broadcast commands work for any name; the others need one.
      box.querySelector('.copy').disabled = kind.startsWith('user-') && !named;
    }
    $('durable-off').hidden = config.durable;
  }

  async function copy(button) {
    const text = button.parentElement.querySelector('code').textContent;
    let ok = false;
    try {
      await navigator.clipboard.writeText(text);
      ok = true;
    } catch (_) {
      // The Clipboard API needs a secure context (https, or localhost);
      // elsewhere, copy through a selection.
      const area = el('textarea');
      area.value = text;
      area.setAttribute('readonly', '');
      area.className = 'offscreen';
      document.body.appendChild(area);
      area.select();
      try { ok = document.execCommand('copy'); } catch (_) { ok = false; }
      area.remove();
    }
    button.textContent = ok ? 'Copied' : 'Select and copy';
    button.classList.toggle('copied', ok);
    setTimeout(() => { button.textContent = 'Copy'; button.classList.remove('copied'); }, 1500);
  }

  // --- status -------------------------------------------------------------

  function showState(state) {
    const badge = $('state');
    badge.dataset.state = state;
    badge.textContent = state;
    const live = client !== null && state !== 'closed';
    $('connect').disabled = live;
    $('disconnect').disabled = !live;
    $('name').disabled = live;
    $('token').disabled = live;
  }

  // readCursor returns the client's cursor (the highest sequence it has
  // seen, which it resumes from), or null before it has one.
  function readCursor(c) {
    const v = typeof c.cursor === 'function' ? c.cursor() : c.cursor;
    return v === undefined || v === null ? null : v;
  }

  function showCursor() {
    if (!client) return;
    const v = readCursor(client);
    const node = $('cursor');
    const text = v === null ? 'none yet' : String(v);
    if (node.dataset.cursor !== (v === null ? '' : String(v))) {
      node.dataset.cursor = v === null ? '' : String(v);
      node.textContent = text;
    }
  }

  function showWelcome(w) {
    const rec = $('recovered');
    rec.dataset.recovered = String(Boolean(w.recovered));
    rec.dataset.reason = w.reason || '';
    rec.textContent = w.recovered ? 'yes' : 'no' + (w.reason ? ' (' + w.reason + ')' : '');
    const replayed = $('replayed');
    replayed.dataset.replayed = String(w.replayed ?? 0);
    replayed.textContent = String(w.replayed ?? 0);
    if (w.name) $('session-name').textContent = w.name;
    showCursor();
  }

  function resetFacts() {
    for (const [id, attrs] of [['cursor', ['cursor']], ['recovered', ['recovered', 'reason']], ['replayed', ['replayed']]]) {
      for (const a of attrs) $(id).dataset[a] = '';
      $(id).textContent = '–';
    }
    $('session-name').textContent = '–';
  }

  function showError(code, reason) {
    $('errors-panel').hidden = false;
    const list = $('errors');
    const item = el('li');
    item.dataset.code = String(code);
    item.append(el('span', 'when', clock()), el('strong', '', String(code)), document.createTextNode(reason ? ': ' + reason : ''));
    list.prepend(item);
    while (list.children.length > MAX_ERRORS) list.lastElementChild.remove();
  }

  // --- cards --------------------------------------------------------------

  function toHex(bytes) {
    const shown = bytes.subarray(0, 256);
    const hex = Array.from(shown, (b) => b.toString(16).padStart(2, '0')).join(' ');
    return bytes.length > shown.length ? hex + ' …' : hex;
  }

  function toBase64(bytes) {
    let s = '';
    for (let i = 0; i < bytes.length; i += 0x8000) {
      s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    }
    return btoa(s);
  }

  // describe returns the card's type label and body text for a payload:
  // JSON pretty-printed, bytes as hex and base64, text as it is.
  function describe(data) {
    if (data instanceof Uint8Array) {
      return { type: 'bytes · ' + data.length, body: 'hex    ' + toHex(data) + '\nbase64 ' + toBase64(data) };
    }
    if (typeof data === 'string') return { type: 'text', body: data };
    return { type: 'json', body: JSON.stringify(data, null, 2) };
  }

  function addCard(data, meta) {
    const durable = meta && meta.seq !== undefined && meta.seq !== null;
    const { type, body } = describe(data);
    const card = el('li', 'card');
    card.dataset.kind = durable ? 'durable' : 'ephemeral';
    if (durable) card.dataset.seq = String(meta.seq);
    const head = el('div', 'card-head');
    head.append(durable ? el('span', 'tag seq', 'seq ' + meta.seq) : el('span', 'tag ephemeral', 'ephemeral'));
    // A replayed message was published while this page was away.
    if (meta && meta.replay) head.append(el('span', 'tag replay', 'replayed'));
    head.append(el('span', 'tag type', type), el('span', 'when', clock()));
    if (meta && meta.replay) card.dataset.replay = 'true';
    card.append(head, el('pre', 'card-body', body));
    const cards = $('cards');
    cards.prepend(card);
    while (cards.children.length > MAX_CARDS) cards.lastElementChild.remove();
    received++;
    showCount();
    showCursor();
  }

  function showCount() {
    const n = $('cards').children.length;
    $('count').dataset.count = String(n);
    $('count').textContent = String(n);
    $('count').title = received + ' received since the page loaded (at most ' + MAX_CARDS + ' kept)';
    $('empty').hidden = n > 0;
  }

  // --- connection ---------------------------------------------------------

  function connect() {
    const problem = formProblem();
    $('form-problem').hidden = !problem;
    $('form-problem').textContent = problem;
    if (problem) return;
    resetFacts();
    const opts = { url: wsURL() };
    if (jwtMode()) {
      const token = $('token').value.trim();
      opts.token = async () => token;
    } else {
      opts.name = $('name').value.trim();
    }
    $('session-name').textContent = currentName() || '(from the token)';
    const c = new NotifyWorkerClient.NotifyClient(opts);
    client = c;
    c.on('state', (s) => { if (client === c) showState(s); });
    c.on('welcome', (w) => { if (client === c) showWelcome(w); });
    c.on('message', (data, meta) => { if (client === c) addCard(data, meta); });
    c.on('error', (e) => {
      if (client !== c) return;
      const code = e && e.code !== undefined ? e.code : 'error';
      showError(code, (e && (e.reason || e.message)) || '');
    });
    clearInterval(cursorTimer);
    // Pings move the cursor without any message; show it as it moves.
    cursorTimer = setInterval(showCursor, CURSOR_REFRESH_MS);
    showState('connecting');
    c.connect();
  }

  function disconnect() {
    if (!client) return;
    const c = client;
    c.close();
    showCursor();
    clearInterval(cursorTimer);
    showState('closed');
  }

  // --- start --------------------------------------------------------------

  async function loadConfig() {
    const resp = await fetch('config.json', { cache: 'no-store' });
    if (!resp.ok) throw new Error('config.json: HTTP ' + resp.status);
    return resp.json();
  }

  async function start() {
    $('endpoint').textContent = wsURL();
    if (typeof NotifyWorkerClient === 'undefined') {
      showError('page', 'the SDK (notify-worker-client.min.js) did not load');
      return;
    }
    try {
      config = await loadConfig();
    } catch (e) {
      showError('page', 'could not load the settings: ' + e.message);
      return;
    }
    $('name-field').hidden = jwtMode();
    $('token-field').hidden = !jwtMode();
    const prefill = new URLSearchParams(location.search).get('name');
    if (prefill && NAME_RULE.test(prefill)) $('name').value = prefill;
    $('endpoint').textContent = wsURL() + ' · app ping ' + Math.round(config.app_ping_ms / 1000) + ' s';

    $('connect-form').addEventListener('submit', (ev) => { ev.preventDefault(); connect(); });
    $('disconnect').addEventListener('click', disconnect);
    $('clear').addEventListener('click', () => { $('cards').replaceChildren(); showCount(); });
    $('name').addEventListener('input', renderCommands);
    $('token').addEventListener('input', renderCommands);
    $('commands').addEventListener('click', (ev) => {
      const b = ev.target.closest('button.copy');
      if (b && !b.disabled) copy(b);
    });
    window.addEventListener('pagehide', () => { if (client) client.close(); });

    renderCommands();
    showCount();
    showState('idle');
    $('connect').disabled = false;
    document.body.dataset.ready = 'true';
  }

  start();
})();
