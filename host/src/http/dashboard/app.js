// PiCloud trigger host dashboard. Plain ES2020, no framework, CSP-safe:
// every piece of API data goes into the page through textContent/attributes.
'use strict';

// ---- Uncaught errors: first thing, so nothing slips past ----------------
function reportJsError(message) {
  const box = document.getElementById('js-errors');
  if (box) box.append(document.createTextNode(message + '\n'));
  sayError('Script error: ' + message);
}
window.addEventListener('error', (e) => {
  reportJsError(e.message || String(e.error));
});
window.addEventListener('unhandledrejection', (e) => {
  const r = e.reason;
  if (r && r.name === 'AbortError') { e.preventDefault(); return; }
  reportJsError('Unhandled rejection: ' + (r && r.message ? r.message : String(r)));
});

// ---- Small helpers ----------------------------------------------------------
const $ = (id) => document.getElementById(id);
const TOKEN_KEY = 'picloud-token';
const TAIL_MAX = 200;
const RUNS_MAX = 30;

function el(tag, props, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v == null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const kid of kids) if (kid != null) e.append(kid);
  return e;
}

function say(message) {
  const s = document.getElementById('status');
  s.classList.remove('error');
  s.textContent = message;
}
function sayError(message) {
  const s = document.getElementById('status');
  if (!s) return;
  s.classList.add('error');
  s.textContent = message;
}

const pad = (n) => String(n).padStart(2, '0');
function parseTime(s) {
  if (!s) return null;
  // Trim microseconds to milliseconds: the only fraction Date.parse must accept.
  const d = new Date(String(s).replace(/(\.\d{3})\d+/, '$1'));
  return Number.isNaN(d.getTime()) ? null : d;
}
function fmtTime(s) {
  const d = parseTime(s);
  if (!d) return s ? String(s) : '';
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}
function fmtClock(s) {
  const d = parseTime(s);
  return d ? `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}` : '--:--:--';
}
const fmtMs = (us) => (us == null ? '' : `${(Number(us) / 1000).toFixed(1)} ms`);
const shortId = (id) => String(id).slice(0, 8) + '…';
const firstLine = (s) => (s == null ? '' : String(s).split('\n')[0]);
const truncate = (s, n = 80) => (s.length > n ? s.slice(0, n - 1) + '…' : s);
const plural = (n, word) => `${n} ${word}${n === 1 ? '' : 's'}`;
const enc = encodeURIComponent;
const sleep = (ms, signal) => new Promise((resolve) => {
  const t = setTimeout(resolve, ms);
  signal.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
});

// ---- API ----------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, code, detail) {
    super(`${code}: ${detail}`);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.detail = detail;
  }
}

const state = {
  token: null,
  principal: null,
  apps: new Map(),     // id -> { app, button, badge }
  app: null,           // the selected app object
  filter: { unresolved: true, source: '' },
  deadLetters: new Map(),
  next: null,
  detail: null,        // { id, runs }
  triggers: new Map(),
  tail: null,          // AbortController of the live log stream
  bulk: null,          // AbortController of a bulk replay
};

async function api(path, { method = 'GET', body, signal, accept = 'application/json' } = {}) {
  const headers = { Authorization: `Bearer ${state.token}`, Accept: accept };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch('/api/v1' + path, {
      method, headers, signal, cache: 'no-store',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, 'network_error', 'could not reach the server');
  }
  if (!res.ok) {
    let code = `http_${res.status}`;
    let detail = res.statusText || 'request failed';
    try {
      const p = await res.json();
      if (p && p.code) code = p.code;
      if (p && (p.detail || p.title)) detail = p.detail || p.title;
    } catch (_) { /* not a problem document */ }
    throw new ApiError(res.status, code, detail);
  }
  return res;
}
const apiJson = async (path, opts) => (await api(path, opts)).json();

// Reads a streamed body line by line (NDJSON and SSE both are line based).
async function readLines(res, onLine) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  for (;;) {
    let chunk;
    try {
      chunk = await reader.read();
    } catch (e) {
      if (e.name === 'AbortError') throw e;
      throw new ApiError(0, 'network_error', 'the connection dropped');
    }
    const { value, done } = chunk;
    buf += done ? decoder.decode() : decoder.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i).replace(/\r$/, '');
      buf = buf.slice(i + 1);
      onLine(line);
    }
    if (done) {
      // An unterminated last line: complete for NDJSON, an incomplete frame
      // (never dispatched) for SSE.
      if (buf) onLine(buf.replace(/\r$/, ''));
      return;
    }
  }
}

// Every failure of a user action ends here.
function fail(e, prefix = '') {
  if (e && e.name === 'AbortError') return;
  if (e instanceof ApiError) {
    if (e.status === 401 && state.token) {
      signOut();
      sayError(`Signed out: ${e.code}: ${e.detail}`);
      return;
    }
    sayError(`${prefix}${e.code}: ${e.detail}`);
    return;
  }
  reportJsError(e && e.stack ? e.stack : String(e));
}
const act = (fn) => (...args) => fn(...args).catch((e) => fail(e));

// ---- Sign in / out ----------------------------------------------------------
async function signIn(token) {
  state.token = token;
  let who;
  try {
    who = await apiJson('/whoami');
  } catch (e) {
    state.token = null;
    if (!(e instanceof ApiError)) throw e;
    if (e.status === 401 || e.status === 403) forgetToken();
    showSignIn();
    sayError(`Sign-in failed: ${e.code}: ${e.detail}`);
    return;
  }
  try { sessionStorage.setItem(TOKEN_KEY, token); } catch (_) { /* storage off */ }
  state.principal = who.principal;
  $('whoami').textContent = who.principal;
  $('token').value = '';
  $('sign-in').hidden = true;
  $('session').hidden = false;
  $('workspace').hidden = false;
  say(`Signed in as ${who.principal}`);
  await loadApps();
}

function forgetToken() {
  try { sessionStorage.removeItem(TOKEN_KEY); } catch (_) { /* storage off */ }
}

function showSignIn() {
  $('sign-in').hidden = false;
  $('session').hidden = true;
  $('workspace').hidden = true;
  $('token').focus();
}

function signOut() {
  stopTail();
  if (state.bulk) state.bulk.abort();
  forgetToken();
  Object.assign(state, { token: null, principal: null, app: null, detail: null, next: null });
  state.apps.clear();
  state.deadLetters.clear();
  state.triggers.clear();
  $('whoami').textContent = '';
  $('apps').replaceChildren();
  for (const id of ['dead-letters-body', 'runs-body', 'log-tail', 'triggers-body', 'detail-runs']) {
    $(id).replaceChildren();
  }
  $('detail').hidden = true;
  $('panels').hidden = true;
  showSignIn();
}

// ---- Apps -------------------------------------------------------------------------
async function loadApps() {
  const apps = await apiJson('/apps');
  const nav = $('apps');
  nav.replaceChildren();
  state.apps.clear();
  for (const app of apps) {
    const badge = el('span', { class: 'badge', 'data-badge': true });
    const button = el('button', { type: 'button', 'data-app': app.name, 'data-app-id': app.id },
      el('span', { class: 'app-name', text: app.name }), ' ', badge);
    button.addEventListener('click', act(() => selectApp(app, true)));
    state.apps.set(app.id, { app, button, badge });
    setBadge(app.id, app.unresolved_dead_letters ?? 0);
    nav.append(button);
  }
  if (!apps.length) {
    nav.append(el('p', { class: 'muted', text: 'No apps yet.' }));
    say(`Signed in as ${state.principal}; there are no apps yet`);
    return;
  }
  if (!(await selectApp(apps[0], false))) return;
  state.apps.get(apps[0].id).button.focus();
  say(`Signed in as ${state.principal}; showing app ${apps[0].name}`);
}

function setBadge(appId, n) {
  const entry = state.apps.get(appId);
  if (!entry) return;
  entry.app.unresolved_dead_letters = n;
  entry.badge.textContent = String(n);
  entry.badge.setAttribute('aria-label', plural(n, 'unresolved dead letter'));
  entry.badge.classList.toggle('zero', n === 0);
}

async function refreshBadge(app) {
  const { unresolved } = await apiJson(`/apps/${enc(app.id)}/dead-letters/count`);
  setBadge(app.id, unresolved);
  return unresolved;
}

async function selectApp(app, announce) {
  stopTail();
  state.app = app;
  for (const { app: a, button } of state.apps.values()) {
    if (a === app) button.setAttribute('aria-current', 'true');
    else button.removeAttribute('aria-current');
  }
  closeDetail(false);
  $('panels').hidden = false;
  for (const id of ['dead-letters-body', 'runs-body', 'log-tail', 'triggers-body']) $(id).replaceChildren();
  $('dead-letters-more').hidden = true;
  startTail(app);
  try {
    await Promise.all([loadDeadLetters(false), loadRuns(), loadTriggers()]);
  } catch (e) {
    if (state.app === app) fail(e, `Loading ${app.name} failed: `);
    return false;
  }
  if (state.app !== app) return false;
  if (announce) say(`Showing app ${app.name}`);
  return true;
}

// ---- Dead letters -------------------------------------------------------------
async function loadDeadLetters(more) {
  const app = state.app;
  const q = new URLSearchParams({ unresolved: String(state.filter.unresolved), limit: '50' });
  if (state.filter.source) q.set('source', state.filter.source);
  if (more && state.next) q.set('after', state.next);
  const page = await apiJson(`/apps/${enc(app.id)}/dead-letters?${q}`);
  if (state.app !== app) return null;
  const body = $('dead-letters-body');
  if (!more) { body.replaceChildren(); state.deadLetters.clear(); }
  const rows = page.items.map((d) => { state.deadLetters.set(d.id, d); return deadLetterRow(d); });
  body.append(...rows);
  state.next = page.next ?? null;
  $('dead-letters-more').hidden = !state.next;
  $('dead-letters-empty').hidden = state.deadLetters.size > 0;
  return rows;
}

function deadLetterRow(d) {
  const open = el('button', { type: 'button', class: 'open', 'aria-label': `Open dead letter ${shortId(d.id)}` }, 'Open');
  open.addEventListener('click', act(() => openDetail(d.id)));
  return el('tr', { 'data-dead-letter': d.id, class: d.resolution ? 'resolved' : null },
    el('td', { class: 'nowrap', text: fmtTime(d.created_at) }),
    el('td', { text: `${d.source}/${d.op}` }),
    el('td', { class: 'num', text: String(d.attempt_count) }),
    el('td', { class: d.resolution ? 'resolution' : 'resolution unresolved', text: d.resolution || 'unresolved' }),
    el('td', { class: 'error-cell', title: d.last_error, text: truncate(firstLine(d.last_error)) }),
    el('td', {}, open));
}

function replaceDeadLetter(d) {
  state.deadLetters.set(d.id, d);
  const old = $('dead-letters-body').querySelector(`tr[data-dead-letter="${CSS.escape(d.id)}"]`);
  if (old) old.replaceWith(deadLetterRow(d));
}

async function applyFilter(event) {
  event.preventDefault();
  state.filter = { unresolved: $('filter-unresolved').checked, source: $('filter-source').value.trim() };
  closeDetail(false);
  const app = state.app;
  const rows = await loadDeadLetters(false);
  if (!rows) return;
  const what = [state.filter.unresolved ? 'unresolved' : 'all',
    state.filter.source ? `source ${state.filter.source}` : 'any source'].join(', ');
  say(`Showing ${plural(rows.length, 'dead letter')} of ${app.name} (${what})${state.next ? '; more available' : ''}`);
}

async function loadMore() {
  const app = state.app;
  const rows = await loadDeadLetters(true);
  if (!rows) return;
  if (rows.length) rows[0].querySelector('button.open').focus();
  say(`Loaded ${plural(rows.length, 'more dead letter')} of ${app.name}${state.next ? '' : '; that is all'}`);
}

async function bulkReplay() {
  const app = state.app;
  if (state.bulk) { say('A bulk replay is already running'); return; }
  const count = await refreshBadge(app);
  const source = state.filter.source;
  if (count === 0) { say(`Nothing to replay: ${app.name} has no unresolved dead letters`); return; }
  const scope = source ? ` with source "${source}"` : '';
  if (!window.confirm(`Replay every unresolved dead letter of ${app.name}${scope}?\n` +
    `${app.name} has ${plural(count, 'unresolved dead letter')}${source ? ' in all' : ''}.`)) {
    say(`Bulk replay of ${app.name} cancelled`);
    return;
  }
  const ctl = new AbortController();
  state.bulk = ctl;
  $('bulk-replay').disabled = true;
  say(`Replaying dead letters of ${app.name}…`);
  let result = null;
  try {
    const res = await api(`/apps/${enc(app.id)}/dead-letters/replay`, {
      method: 'POST', body: source ? { source } : {}, signal: ctl.signal, accept: 'application/x-ndjson',
    });
    await readLines(res, (line) => {
      if (!line.trim()) return;
      const m = JSON.parse(line);
      if (m.code && m.detail) throw new ApiError(500, m.code, m.detail);
      if ('replayed' in m) result = m;
      else if ('done' in m) say(`Replaying: ${m.done} of ${m.total}`);
    });
  } finally {
    state.bulk = null;
    $('bulk-replay').disabled = false;
  }
  if (state.app === app) {
    await refreshBadge(app);
    await loadDeadLetters(false);
  }
  if (!result) {
    sayError(`Bulk replay of ${app.name} stopped before it finished; the list shows what is left`);
  } else if (result.failed) {
    sayError(`Replayed ${plural(result.replayed, 'dead letter')} of ${app.name}; ${result.failed} failed` +
      (result.first_error ? ` (first error: ${result.first_error})` : ''));
  } else {
    say(`Replayed ${plural(result.replayed, 'dead letter')} of ${app.name}`);
  }
}

// ---- Dead letter detail -----------------------------------------------------
async function openDetail(id) {
  const app = state.app;
  const data = await apiJson(`/apps/${enc(app.id)}/dead-letters/${enc(id)}`);
  if (state.app !== app) return;
  state.detail = { id, runs: data.runs || [] };
  replaceDeadLetter(data.dead_letter);
  renderDetail(data.dead_letter);
  const section = $('detail');
  section.hidden = false;
  section.focus();
  section.scrollIntoView({ block: 'start' });
  say(`Opened dead letter ${shortId(id)} of ${app.name}`);
}

function renderDetail(d) {
  $('detail-id').textContent = d.id;
  const fields = [
    ['Id', d.id], ['Source / op', `${d.source}/${d.op}`], ['Attempts', String(d.attempt_count)],
    ['Resolution', d.resolution ? `${d.resolution} at ${fmtTime(d.resolved_at)}` : 'unresolved'],
    ['Created', fmtTime(d.created_at)], ['First attempt', fmtTime(d.first_attempt_at)],
    ['Last attempt', fmtTime(d.last_attempt_at)], ['Original event', d.original_event_id],
    ['Trigger', d.trigger_id || '–'], ['Script', d.script_id || '–'],
  ];
  $('detail-fields').replaceChildren(...fields.flatMap(([k, v]) => [el('dt', { text: k }), el('dd', { text: v })]));
  $('detail-error').textContent = d.last_error || '';
  $('detail-payload').textContent = JSON.stringify(d.payload, null, 2);
  $('replay').disabled = !!d.resolution;
  $('ignore').disabled = !!d.resolution;
  const runs = state.detail.runs;
  $('detail-runs').replaceChildren(...(runs.length ? runs.map(runBlock)
    : [el('p', { class: 'muted', text: 'No recorded attempts.' })]));
}

function runBlock(r) {
  const logs = (r.logs || []).map((l) =>
    el('li', { class: `run-log level-${l.level}` }, el('span', { class: 'level', text: l.level }), ' ', l.message));
  return el('article', { class: 'run', 'data-run': r.id },
    el('h4', {},
      `Attempt ${r.attempt} · `, el('span', { class: `outcome outcome-${r.outcome}`, text: r.outcome }),
      ` · ${fmtMs(r.duration_us)} · ${fmtTime(r.started_at)}`),
    r.limit ? el('p', { text: `Limit: ${r.limit}` }) : null,
    r.error ? el('pre', { class: 'error-text', text: r.error }) : null,
    logs.length ? el('ol', { class: 'run-logs' }, ...logs) : el('p', { class: 'muted', text: 'No log lines.' }));
}

function closeDetail(restoreFocus) {
  const id = state.detail && state.detail.id;
  state.detail = null;
  $('detail').hidden = true;
  if (!restoreFocus || !id) return;
  // Its row has been rebuilt since it was opened: focus the current Open button.
  const row = $('dead-letters-body').querySelector(`tr[data-dead-letter="${CSS.escape(id)}"]`);
  if (row) row.querySelector('button.open').focus();
}

async function resolveDetail(action) {
  const app = state.app;
  const id = state.detail.id;
  const d = await apiJson(`/apps/${enc(app.id)}/dead-letters/${enc(id)}/${action}`, { method: 'POST' });
  if (state.app !== app) return;
  replaceDeadLetter(d);
  if (state.detail && state.detail.id === id) {
    renderDetail(d);
    $('detail-close').focus();
  }
  await refreshBadge(app);
  say(`${action === 'replay' ? 'Replayed' : 'Ignored'} dead letter ${shortId(id)} of ${app.name}`);
}

// ---- Runs and the live log tail -------------------------------------------
async function loadRuns() {
  const app = state.app;
  const page = await apiJson(`/apps/${enc(app.id)}/runs?limit=${RUNS_MAX}`);
  if (state.app !== app) return;
  $('runs-body').replaceChildren(...page.items.slice(0, RUNS_MAX).map(runRow));
}

function runRow(r) {
  const err = r.error || (r.limit ? `limit: ${r.limit}` : '');
  return el('tr', { 'data-run': r.id },
    el('td', { class: 'nowrap', text: fmtTime(r.started_at) }),
    el('td', {}, el('span', { class: `outcome outcome-${r.outcome}`, text: r.outcome })),
    el('td', { text: `${r.source}/${r.op}` }),
    el('td', { class: 'num', text: String(r.attempt) }),
    el('td', { class: 'num nowrap', text: fmtMs(r.duration_us) }),
    el('td', { class: 'error-cell', title: err || null, text: truncate(firstLine(err)) }));
}

function setTailState(text) {
  const s = $('tail-state');
  s.textContent = text;
  s.dataset.state = text.replace('…', '');
}

function stopTail() {
  if (state.tail) state.tail.abort();
  state.tail = null;
  setTailState('off');
}

function startTail(app) {
  const ctl = new AbortController();
  state.tail = ctl;
  tailLoop(app, ctl).catch((e) => fail(e, `Live log of ${app.name}: `));
}

async function tailLoop(app, ctl) {
  const { signal } = ctl;
  setTailState('connecting…');
  while (!signal.aborted && state.app === app) {
    try {
      const res = await api(`/apps/${enc(app.id)}/runs/stream`, { signal, accept: 'text/event-stream' });
      setTailState('live');
      let event = '';
      let data = [];
      await readLines(res, (line) => {
        if (line === '') {
          if (event === 'run' && data.length) addRun(JSON.parse(data.join('\n')));
          event = '';
          data = [];
        } else if (!line.startsWith(':')) {
          const c = line.indexOf(':');
          const field = c < 0 ? line : line.slice(0, c);
          const value = c < 0 ? '' : line.slice(c + 1).replace(/^ /, '');
          if (field === 'event') event = value;
          else if (field === 'data') data.push(value);
        }
      });
    } catch (e) {
      if (signal.aborted || e.name === 'AbortError') return;
      if (!(e instanceof ApiError)) throw e;
      // A refusal will not heal by retrying; a dropped connection may.
      if (e.status === 401 || (e.status >= 400 && e.status < 500 && e.status !== 408 && e.status !== 429)) {
        setTailState('stopped');
        throw e;
      }
    }
    if (signal.aborted || state.app !== app) return;
    setTailState('reconnecting…');
    await sleep(2000, signal);
  }
}

function addRun(r) {
  const body = $('runs-body');
  body.prepend(runRow(r));
  while (body.children.length > RUNS_MAX) body.lastElementChild.remove();

  const tail = $('log-tail');
  const atBottom = tail.scrollTop + tail.clientHeight >= tail.scrollHeight - 24;
  const who = r.script_id || r.trigger_id || '-';
  const clock = fmtClock(r.started_at);
  const lines = (r.logs && r.logs.length) ? r.logs.map((l) => [l.level, l.message])
    : [['run', `${r.outcome}${r.error ? ': ' + firstLine(r.error) : ''} (${fmtMs(r.duration_us)})`]];
  for (const [level, message] of lines) {
    tail.append(el('li', { class: `log-line level-${level}` },
      el('span', { class: 'clock', text: clock }), ' ',
      el('span', { class: 'who', text: who }), ' ',
      el('span', { class: 'level', text: level }), ' ',
      el('span', { class: 'message', text: message })));
  }
  while (tail.children.length > TAIL_MAX) tail.firstElementChild.remove();
  if (atBottom) tail.scrollTop = tail.scrollHeight;
}

// ---- Triggers -----------------------------------------------------------------------
async function loadTriggers() {
  const app = state.app;
  const triggers = await apiJson(`/apps/${enc(app.id)}/triggers`);
  if (state.app !== app) return;
  state.triggers.clear();
  for (const t of triggers) state.triggers.set(t.id, t);
  $('triggers-body').replaceChildren(...triggers.map(triggerRow));
  $('triggers-empty').hidden = triggers.length > 0;
}

function triggerPattern(spec) {
  if (!spec) return '';
  if (spec.kind === 'kv') {
    const ops = spec.ops || {};
    const names = Array.isArray(ops) ? ops : Object.keys(ops).filter((k) => ops[k]);
    return `${spec.collection} (${names.join(', ') || 'no ops'})${spec.ordered ? ', ordered' : ''}`;
  }
  if (spec.kind === 'dead_letter') return `source ${spec.source}`;
  if (spec.kind === 'cron') return `${spec.schedule} (${spec.timezone}, catch-up ${spec.catch_up})`;
  if (spec.kind === 'queue') return `queue ${spec.queue}${spec.batch > 1 ? `, batches of ${spec.batch}` : ''}`;
  if (spec.kind === 'pubsub') return `topic ${spec.topic}`;
  return JSON.stringify(spec);
}

function triggerRow(t) {
  const verb = t.enabled ? 'Disable' : 'Enable';
  const toggle = el('button', { type: 'button', class: 'toggle', 'data-trigger': t.id,
    'aria-label': `${verb} trigger ${t.name}` }, verb);
  toggle.addEventListener('click', act(() => toggleTrigger(t.id)));
  return el('tr', { 'data-trigger-row': t.id, class: t.enabled ? null : 'disabled' },
    el('td', { text: t.name }),
    el('td', { text: t.spec ? t.spec.kind : '' }),
    el('td', { class: 'mono', text: triggerPattern(t.spec) + (t.next_fire_at ? `, next ${t.next_fire_at}` : '') }),
    el('td', { text: t.script_name || t.script_id }),
    el('td', { text: t.registered_by_principal }),
    el('td', { text: t.enabled ? 'yes' : 'no' }),
    el('td', {}, toggle));
}

async function toggleTrigger(id) {
  const app = state.app;
  const current = state.triggers.get(id);
  const action = current.enabled ? 'disable' : 'enable';
  const t = await apiJson(`/apps/${enc(app.id)}/triggers/${enc(id)}/${action}`, { method: 'POST' });
  if (state.app !== app) return;
  state.triggers.set(t.id, t);
  const row = $('triggers-body').querySelector(`tr[data-trigger-row="${CSS.escape(id)}"]`);
  const fresh = triggerRow(t);
  if (row) {
    row.replaceWith(fresh);
    fresh.querySelector('button.toggle').focus();
  }
  say(`${t.enabled ? 'Enabled' : 'Disabled'} trigger ${t.name}`);
}

// ---- Wiring ------------------------------------------------------------------------
$('sign-in').addEventListener('submit', act(async (event) => {
  event.preventDefault();
  const token = $('token').value.trim();
  if (!token) { sayError('Sign-in failed: enter an API token'); return; }
  const button = event.target.querySelector('button[type=submit]');
  button.disabled = true;
  try { await signIn(token); } finally { button.disabled = false; }
}));
$('sign-out').addEventListener('click', () => { signOut(); say('Signed out'); });
$('dead-letter-filters').addEventListener('submit', act(applyFilter));
$('dead-letters-more').addEventListener('click', act(loadMore));
$('bulk-replay').addEventListener('click', act(bulkReplay));
$('replay').addEventListener('click', act(() => resolveDetail('replay')));
$('ignore').addEventListener('click', act(() => resolveDetail('ignore')));
$('detail-close').addEventListener('click', () => { closeDetail(true); say('Closed the dead letter'); });
$('detail').addEventListener('keydown', (e) => {
  if (e.key === 'Escape') { closeDetail(true); say('Closed the dead letter'); }
});

(function start() {
  let saved = null;
  try { saved = sessionStorage.getItem(TOKEN_KEY); } catch (_) { /* storage off */ }
  if (saved) {
    $('sign-in').hidden = true;
    say('Signing in…');
    act(signIn)(saved);
  } else {
    $('token').focus();
  }
}());
