// The inlet admin panel: plain JS, no build step, no dependencies.
// Everything shown is built with DOM calls and textContent (never innerHTML): event data
// comes from the outside world.
'use strict';

let csrf = null;
let timer = null;
// The Events page's live stream (one EventSource at most); closed by every navigation
// (`stopTail`) and when the tab goes away.
let tailSource = null;
// Bumped by every navigation: work begun for an earlier page (a slow fetch, a timer) must
// not draw over the page shown now.
let generation = 0;
const view = document.getElementById('view');
const nav = document.getElementById('nav');

// ---------- helpers ----------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

function svg(tag, attrs, ...children) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  for (const c of children) el.append(c instanceof Node ? c : String(c));
  return el;
}

class ApiError extends Error {
  constructor(status, body) {
    super((body && (body.message || body.error)) || ('HTTP ' + status));
    this.status = status;
    this.body = body || {};
  }
}

async function api(method, path, body) {
  const opts = { method, headers: {}, credentials: 'same-origin' };
  if (body !== undefined) {
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  if (method !== 'GET' && csrf) opts.headers['X-CSRF-Token'] = csrf;
  const r = await fetch('/admin/api/' + path, opts);
  let data = {};
  try { data = await r.json(); } catch (_) { /* empty body */ }
  if (r.status === 401 && path !== 'login' && path !== 'setup') {
    csrf = null;
    showAuth(Boolean(data.setup_required));
    throw new ApiError(401, data);
  }
  if (!r.ok) throw new ApiError(r.status, data);
  return data;
}

const fmtNum = (n) => Number(n).toLocaleString('en-US');
const fmtTime = (ms) => (ms ? new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z') : '–');

function describe(err) {
  if (!(err instanceof ApiError)) return String(err);
  const reasons = {
    wrong_password: 'Wrong password.',
    setup_code_invalid: 'That setup code is not valid (it works once; a restart prints a new one).',
    too_many_attempts: 'Too many failed attempts. Try again later.',
    already_set_up: 'The admin password is already set. Log in instead.',
    cross_origin_request: 'Refused: the request did not come from this page.',
    csrf_token_invalid: 'Your session changed; reload the page.',
  };
  return reasons[err.body.error] || accountReasons[err.body.error] || err.message;
}

function errorBox() { return h('p', { class: 'error', role: 'alert' }); }

function stopTimer() {
  if (timer) clearInterval(timer);
  timer = null;
}

// Shows a page's content, unless the user has navigated on since generation `g` began.
function showPage(g, ...children) {
  if (g === generation) view.replaceChildren(...children.filter((c) => c !== null && c !== undefined && c !== false));
}

// Repeats `fn` every `ms` while generation `g` is the page shown; the page's one timer (a
// page that draws itself again replaces its timer rather than adding one).
function every(g, ms, fn) {
  if (g !== generation) return;
  stopTimer();
  timer = setInterval(fn, ms);
}

// Draws the current page again as a new generation: what the old drawing still has in
// flight (a poll, a fetch) is dropped, as on navigation.
function redraw(page) {
  const g = ++generation;
  stopTimer();
  stopTail();
  page().catch((x) => {
    if (!(x instanceof ApiError && x.status === 401)) showPage(g, h('p', { class: 'error' }, describe(x)));
  });
}

function params(obj) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(obj)) if (v !== '' && v !== null && v !== undefined) p.set(k, v);
  const s = p.toString();
  return s ? '?' + s : '';
}

// ---------- auth ----------

function showAuth(setupRequired) {
  generation++;
  stopTimer();
  stopTail();
  nav.hidden = true;
  view.replaceChildren(inviteToken() ? inviteForm() : setupRequired ? setupForm() : loginForm());
}

function setupForm() {
  const fromUrl = /(?:^|[#&])setup=([A-Za-z0-9-]+)/.exec(location.hash);
  const err = errorBox();
  const form = h('form', { class: 'card auth', id: 'setup-form' },
    h('h1', {}, 'Set up the admin panel'),
    h('p', { class: 'muted' }, 'Enter the one-time setup code the server printed when it started, and choose the admin password.'),
    h('label', {}, 'Setup code', h('input', { id: 'setup-code', name: 'code', required: true, autocomplete: 'off', value: fromUrl ? fromUrl[1] : '' })),
    h('label', {}, 'Password (at least 8 characters)', h('input', { id: 'setup-password', type: 'password', required: true, minlength: 8, autocomplete: 'new-password' })),
    h('label', {}, 'Password again', h('input', { id: 'setup-password2', type: 'password', required: true, autocomplete: 'new-password' })),
    h('button', { id: 'setup-submit', type: 'submit' }, 'Set password'),
    err);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const pw = form.querySelector('#setup-password').value;
    if (pw !== form.querySelector('#setup-password2').value) {
      err.textContent = 'The passwords differ.';
      return;
    }
    try {
      const r = await api('POST', 'setup', { code: form.querySelector('#setup-code').value, password: pw });
      csrf = r.csrf_token;
      location.hash = '#overview';
      route();
    } catch (x) { err.textContent = describe(x); }
  });
  return form;
}

function loginForm() {
  const err = errorBox();
  const form = h('form', { class: 'card auth', id: 'login-form' },
    h('h1', {}, 'Log in'),
    loginNameField(),
    h('label', {}, 'Admin password', h('input', { id: 'login-password', type: 'password', required: true, autocomplete: 'current-password' })),
    loginTotpField(),
    h('button', { id: 'login-submit', type: 'submit' }, 'Log in'),
    err);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      const r = await api('POST', 'login', loginBody(form));
      csrf = r.csrf_token;
      if (!location.hash || location.hash.startsWith('#setup')) location.hash = '#overview';
      route();
    } catch (x) {
      if (x instanceof ApiError && x.body.error === 'totp_required') showTotpField(form);
      err.textContent = describe(x);
    }
  });
  return form;
}

document.getElementById('logout').addEventListener('click', async () => {
  try { await api('POST', 'logout', {}); } catch (_) { /* shows the login form */ }
  csrf = null;
  showAuth(false);
});

// ---------- pages ----------

const pages = { overview, keys, tenants, events, secrets, profiles, erasures, quarantine, tenant: tenantPage, app: appPage, admins, audit, health };
// The nav entry a page belongs to.
const navOf = { tenant: 'tenants', app: 'tenants' };

async function route() {
  const g = ++generation;
  stopTimer();
  stopTail();
  if (!csrf) {
    try {
      csrf = (await api('GET', 'session')).csrf_token;
    } catch (_) { return; }
  }
  nav.hidden = false;
  const [name, arg] = location.hash.replace(/^#/, '').split('/');
  const page = pages[name] ? name : 'overview';
  firstEventSeen(page);
  for (const a of nav.querySelectorAll('a')) a.classList.toggle('active', a.dataset.page === (navOf[page] || page));
  try {
    await pages[page](arg);
  } catch (x) {
    if (!(x instanceof ApiError && x.status === 401)) showPage(g, h('p', { class: 'error' }, describe(x)));
  }
}
window.addEventListener('hashchange', route);

async function overview() {
  const g = generation;
  // No event stored yet when last drawn: the page is not drawn again until one is (a redraw
  // would reset the app picked or the command being selected for copying).
  let waiting = false;
  let drawn = Date.now();
  const render = async (fetched) => {
    const o = fetched || await api('GET', 'overview');
    waiting = o.last_seq === 0;
    drawn = Date.now();
    const apps = o.last_seq === 0 || firstEvent.key ? (await api('GET', 'apps')).apps : [];
    showPage(g,
      h('h1', {}, 'Overview'),
      o.last_seq === 0 || firstEvent.key ? firstEventCard(o, apps) : null,
      h('div', { class: 'grid' },
        h('section', { class: 'card', id: 'apps-today' },
          h('h2', {}, 'Events per app'),
          h('table', {},
            h('thead', {}, h('tr', {}, h('th', {}, 'App'), h('th', {}, 'Tenant'), h('th', { class: 'num' }, 'Today'), h('th', { class: 'num' }, 'This month'))),
            h('tbody', {}, o.apps.map((a) => h('tr', {}, h('td', {}, a.app), h('td', {}, a.tenant), h('td', { class: 'num' }, fmtNum(a.today)), h('td', { class: 'num' }, fmtNum(a.this_month))))))),
        h('section', { class: 'card', id: 'quotas' },
          h('h2', {}, 'Quota use this month'),
          h('table', {}, h('tbody', {}, o.tenants.map(quotaRow))))),
      h('section', { class: 'card' },
        h('h2', {}, 'Events per hour, last 48 hours (UTC)'),
        o.hourly.counts.some((c) => c > 0)
          ? chart(o.hourly.first_hour_ms, o.hourly.counts)
          : h('p', { class: 'muted', id: 'no-hourly' }, 'No events in the last 48 hours.')),
      h('section', { class: 'card', id: 'rejections' },
        h('h2', {}, 'Rejections by reason'),
        h('p', { class: 'muted' }, 'Since this server started (', when(o.since_ms), `): ${fmtNum(o.accepted)} accepted, ${fmtNum(o.duplicates)} duplicates.`),
        o.rejections.length === 0
          ? h('p', { class: 'muted' }, 'No rejections.')
          : h('table', {},
            h('thead', {}, h('tr', {}, h('th', {}, 'Reason'), h('th', { class: 'num' }, 'Count'))),
            h('tbody', {}, o.rejections.map((r) => h('tr', {}, h('td', {}, h('code', {}, r.reason)), h('td', { class: 'num' }, fmtNum(r.count))))))));
  };
  await render();
  // Every 10 s; every 2 s while waiting for a first event.
  const tick = async () => {
    if (waiting) {
      const o = await api('GET', 'overview');
      if (o.last_seq > 0) await render(o);
    } else if (Date.now() - drawn >= 9500) {
      await render();
    }
  };
  every(g, waiting ? 2000 : 10000, () => tick().catch(() => {}));
}

function quotaRow(t) {
  const fill = h('div');
  let text;
  if (t.monthly_quota > 0) {
    const pct = Math.min(100, (100 * t.used_this_month) / t.monthly_quota);
    fill.style.width = pct + '%';
    if (pct >= 100) fill.className = 'full';
    else if (pct >= 80) fill.className = 'high';
    text = `${fmtNum(t.used_this_month)} / ${fmtNum(t.monthly_quota)}`;
  } else {
    fill.style.width = '0';
    text = `${fmtNum(t.used_this_month)} (unlimited)`;
  }
  return h('tr', {}, h('td', {}, t.name), h('td', {}, h('div', { class: 'bar' }, fill)), h('td', { class: 'num' }, text));
}

function chart(firstHourMs, counts) {
  const W = 960, H = 180, left = 40, bottom = 20, top = 10;
  const max = Math.max(1, ...counts);
  const bw = (W - left) / counts.length;
  const s = svg('svg', { class: 'chart', viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', role: 'img', 'aria-label': 'events per hour' });
  const y = (v) => top + (H - top - bottom) * (1 - v / max);
  s.append(svg('line', { x1: left, x2: W, y1: y(0), y2: y(0) }));
  s.append(svg('text', { x: 2, y: y(max) + 8 }, fmtNum(max)));
  s.append(svg('text', { x: 2, y: y(0) }, '0'));
  counts.forEach((c, i) => {
    const hourMs = firstHourMs + i * 3600000;
    const rect = svg('rect', { class: 'b', x: left + i * bw + 1, width: Math.max(1, bw - 2), y: y(c), height: Math.max(0, y(0) - y(c)) });
    rect.append(svg('title', {}, `${fmtTime(hourMs).slice(0, 13)}:00  ${fmtNum(c)} events`));
    s.append(rect);
    const hour = new Date(hourMs).getUTCHours();
    if (hour % 6 === 0 && left + i * bw < W - 36) s.append(svg('text', { x: left + i * bw, y: H - 4 }, String(hour).padStart(2, '0') + ':00'));
  });
  return s;
}

async function keys() {
  const g = generation;
  const [{ keys: list }, { apps }] = await Promise.all([api('GET', 'keys'), api('GET', 'apps')]);
  const err = errorBox();
  const minted = h('div', { id: 'minted' });
  const form = h('form', { class: 'row', id: 'mint-form' },
    h('label', {}, 'App', h('select', { id: 'key-app', required: true }, apps.map((a) => h('option', { value: a.name }, a.name)))),
    h('label', {}, 'Label', h('input', { id: 'key-label', required: true, maxlength: 64, placeholder: 'billing-backend' })),
    h('label', {}, 'Allowed events (comma-separated, empty = all)', h('input', { id: 'key-events', placeholder: 'purchase, subscribe' })),
    h('label', {}, 'Requests/min (optional)', h('input', { id: 'key-rate', class: 'narrow', type: 'number', min: 1 })),
    h('button', { id: 'key-mint', type: 'submit' }, 'Mint key'));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    err.textContent = '';
    const rate = form.querySelector('#key-rate').value;
    try {
      const r = await api('POST', 'keys', {
        app: form.querySelector('#key-app').value,
        label: form.querySelector('#key-label').value,
        events: form.querySelector('#key-events').value.split(',').map((s) => s.trim()).filter(Boolean),
        rate_limit: rate ? Number(rate) : null,
      });
      await keys();
      document.getElementById('minted').replaceChildren(secretBox(r.key));
    } catch (x) { err.textContent = describe(x); }
  });
  showPage(g,
    h('h1', {}, 'Keys'),
    h('section', { class: 'card' }, h('h2', {}, 'Mint a key'), form, err, minted),
    h('section', { class: 'card' },
      h('table', { id: 'keys-table' },
        h('thead', {}, h('tr', {}, ['ID', 'App', 'Label', 'Allowed events', 'Rate/min', 'Created', 'Last used', 'Status', ''].map((t) => h('th', {}, t)))),
        h('tbody', {}, list.length ? list.slice().reverse().map(keyRow) : emptyRow(9, 'No keys yet: mint one above. Each backend or service gets its own.')))));
}

function secretBox(key) {
  const code = h('code', { id: 'minted-key' }, key);
  const copy = h('button', { type: 'button', class: 'secondary', id: 'copy-key' }, 'Copy');
  copy.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(key);
    } catch (_) {
      const range = document.createRange();
      range.selectNodeContents(code);
      getSelection().removeAllRanges();
      getSelection().addRange(range);
      document.execCommand('copy');
    }
    copy.textContent = 'Copied';
  });
  return h('div', { class: 'secret' },
    h('div', {}, h('strong', {}, 'New key — shown once. '), h('span', { class: 'muted' }, 'Copy it now; inlet keeps only its hash.')),
    code, copy);
}

function keyRow(k) {
  let action = '';
  if (!k.revoked_ms) {
    action = h('button', { type: 'button', class: 'danger revoke', 'data-id': k.id }, 'Revoke');
    // Two clicks: the first arms the button, the second revokes.
    action.addEventListener('click', async () => {
      if (!action.classList.contains('armed')) {
        action.textContent = 'Really revoke?';
        action.classList.add('armed');
        return;
      }
      try {
        await api('POST', `keys/${k.id}/revoke`, {});
        await keys();
      } catch (x) { action.textContent = describe(x); }
    });
  }
  return h('tr', { 'data-key-id': k.id },
    h('td', {}, k.id), h('td', {}, k.app), h('td', {}, k.label),
    h('td', {}, allowedEvents(k)),
    h('td', {}, k.rate_limit || '–'),
    h('td', {}, when(k.created_ms)), h('td', {}, k.last_used_ms ? when(k.last_used_ms) : h('span', { class: 'muted' }, 'never')),
    h('td', {}, k.revoked_ms ? h('span', { class: 'badge revoked' }, 'revoked ', when(k.revoked_ms)) : h('span', { class: 'badge live' }, 'active')),
    h('td', {}, action));
}

// A key's allowed events, and (for a live key) an editor of the list: the fix for events
// quarantined as event_not_allowed_by_key, which can then be replayed.
function allowedEvents(k) {
  const shown = k.allowed_events.length ? k.allowed_events.join(', ') : h('span', { class: 'muted' }, 'all');
  if (k.revoked_ms) return shown;
  const cell = h('span', { class: 'key-allowed' }, shown, ' ');
  const edit = h('button', { type: 'button', class: 'link key-allow-edit', 'data-id': k.id }, 'Edit');
  edit.addEventListener('click', () => {
    const input = h('input', { class: 'key-allow-events', value: k.allowed_events.join(', '), placeholder: 'empty = all events', 'aria-label': 'Allowed events' });
    const err = errorBox();
    const cancel = h('button', { type: 'button', class: 'secondary' }, 'Cancel');
    cancel.addEventListener('click', () => cell.replaceChildren(shown, ' ', edit));
    const form = h('form', { class: 'row key-allow-form', 'data-id': k.id }, input,
      h('button', { type: 'submit', class: 'key-allow-save' }, 'Save'), cancel, err);
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      err.textContent = '';
      try {
        await api('POST', `keys/${k.id}/allow`, { events: input.value.split(',').map((x) => x.trim()).filter(Boolean) });
        await keys();
      } catch (x) { err.textContent = describe(x); }
    });
    cell.replaceChildren(form);
    input.focus();
  });
  cell.append(edit);
  return cell;
}

let defaultRetention = 0;

async function tenants() {
  const g = generation;
  const [{ tenants: ts, default_retention_days: dr }, { apps }] = await Promise.all([api('GET', 'tenants'), api('GET', 'apps')]);
  defaultRetention = dr || 0;
  const terr = errorBox();
  const tform = h('form', { class: 'row', id: 'tenant-form' },
    h('label', {}, 'Name', h('input', { id: 'tenant-name', required: true, pattern: '[A-Za-z0-9_.\\-]{1,64}' })),
    h('label', {}, 'Monthly quota (0 = unlimited)', h('input', { id: 'tenant-quota', type: 'number', min: 0, value: 0 })),
    h('button', { id: 'tenant-create', type: 'submit' }, 'Add tenant'));
  tform.addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      await api('POST', 'tenants', { name: tform.querySelector('#tenant-name').value, monthly_quota: Number(tform.querySelector('#tenant-quota').value || 0) });
      await tenants();
    } catch (x) { terr.textContent = describe(x); }
  });
  const aerr = errorBox();
  const aform = h('form', { class: 'row', id: 'app-form' },
    h('label', {}, 'Name', h('input', { id: 'app-name', required: true, pattern: '[A-Za-z0-9_.\\-]{1,64}' })),
    h('label', {}, 'Tenant', h('select', { id: 'app-tenant' }, ts.map((t) => h('option', { value: t.name }, t.name)))),
    h('button', { id: 'app-create', type: 'submit' }, 'Add app'));
  aform.addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      await api('POST', 'apps', { name: aform.querySelector('#app-name').value, tenant: aform.querySelector('#app-tenant').value });
      await tenants();
    } catch (x) { aerr.textContent = describe(x); }
  });
  showPage(g,
    h('h1', {}, 'Tenants & apps'),
    h('section', { class: 'card' }, h('h2', {}, 'Tenants'), tform, terr,
      h('table', { id: 'tenants-table' },
        h('thead', {}, h('tr', {}, h('th', {}, 'Name'), h('th', { class: 'num' }, 'Used this month'), h('th', {}, 'Monthly quota'), h('th', {}, 'Retention'), h('th', {}, 'Created'))),
        h('tbody', {}, ts.length ? ts.map(tenantRow) : emptyRow(5, 'No tenants: add one above.')))),
    h('section', { class: 'card' }, h('h2', {}, 'Apps'), aform, aerr,
      h('table', { id: 'apps-table' },
        h('thead', {}, h('tr', {}, h('th', {}, 'Name'), h('th', {}, 'Tenant'), h('th', {}, 'Dialect settings'), h('th', {}, 'Created'))),
        h('tbody', {}, apps.length ? apps.map((a) => h('tr', { 'data-app': a.name },
          h('td', {}, h('a', { href: '#app/' + encodeURIComponent(a.name) }, a.name)), h('td', {}, a.tenant),
          h('td', {}, dialectSummary(a)), h('td', {}, when(a.created_ms)))) : emptyRow(4, 'No apps: add one above (keys and events belong to an app).')))));
}

function tenantRow(t) {
  const input = h('input', { type: 'number', min: 0, class: 'narrow', value: t.monthly_quota, 'aria-label': 'monthly quota of ' + t.name });
  const err = h('span', { class: 'error' });
  const form = h('form', { class: 'row quota-form', 'data-tenant': t.name }, input, h('button', { type: 'submit', class: 'secondary' }, 'Set'), err);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      await api('POST', `tenants/${encodeURIComponent(t.name)}/quota`, { monthly_quota: Number(input.value || 0) });
      await tenants();
    } catch (x) { err.textContent = describe(x); }
  });
  return h('tr', { 'data-tenant': t.name },
    h('td', {}, h('a', { href: '#tenant/' + encodeURIComponent(t.name) }, t.name)), h('td', { class: 'num' }, fmtNum(t.used_this_month)), h('td', {}, form),
    h('td', {}, retentionText(t.retention_days, defaultRetention)), h('td', {}, when(t.created_ms)));
}

const FILTERS = ['app', 'key', 'source', 'event_name', 'outcome', 'event_id', 'install_uuid', 'user_id'];
const SOURCES = ['reflect', 'gamerebellion', 'adjust', 'appsflyer', 'datafly'];
// Rows the Events table keeps while events are pushed into it (the oldest go first).
const EVENT_ROWS = 1000;

// The Events page: stored events (newest first, paged) and, above them, every decision
// pushed by the server as it happens (the live tail, Server-Sent Events): accepted,
// duplicate, rejected with its reason. One EventSource, the page's filters applied by the
// server; closed when the page is left (`stopTail` on every navigation).
async function events(seq) {
  if (seq) return eventDetail(seq);
  const g = generation;
  const { apps } = await api('GET', 'apps');
  const current = Object.fromEntries(new URLSearchParams(sessionStorage.getItem('inlet-filter') || ''));
  const choice = (id, values, any) => h('select', { id }, h('option', { value: '' }, any), values.map((v) => h('option', { value: v, selected: current[id.slice(2)] === v }, v)));
  const inputs = {
    app: choice('f-app', apps.map((a) => a.name), 'all apps'),
    key: h('input', { id: 'f-key', value: current.key || '', placeholder: 'key id', size: 6 }),
    source: choice('f-source', SOURCES, 'any source'),
    outcome: choice('f-outcome', ['accepted', 'duplicate', 'rejected'], 'any outcome'),
  };
  for (const f of ['event_name', 'event_id', 'install_uuid', 'user_id']) inputs[f] = h('input', { id: 'f-' + f, value: current[f] || '', placeholder: f });
  const form = h('form', { class: 'row', id: 'filter-form' },
    FILTERS.map((f) => h('label', {}, f.replace('_', ' '), inputs[f])),
    h('button', { type: 'submit' }, 'Filter'),
    h('button', { type: 'button', class: 'secondary', id: 'f-clear' }, 'Clear'));
  const tbody = h('tbody');
  const status = h('span', { class: 'badge', id: 'live' }, 'connecting');
  const more = h('button', { type: 'button', class: 'secondary', id: 'older', hidden: true }, 'Older events');
  const filtered = FILTERS.some((k) => current[k]);
  const empty = h('p', { class: 'muted', id: 'no-events', hidden: true },
    filtered ? 'No events match these filters.' : ['No events yet. New ones appear here as they arrive; the ', h('a', { href: '#overview' }, 'overview'), ' shows how to send the first.']);
  showPage(g,
    h('h1', {}, 'Events'),
    h('section', { class: 'card' }, form),
    receiptCard(apps),
    h('section', { class: 'card' },
      h('div', { class: 'toolbar' }, status, h('span', { class: 'muted' }, 'Newest first. New events appear as inlet decides them, duplicates and rejected ones too (with the reason); dry runs are not shown. Click a stored event for its detail and raw request.')),
      h('table', { id: 'events-table' },
        h('thead', {}, h('tr', {}, ['Seq', 'Received (UTC)', 'App', 'Key', 'Source', 'Event', 'event_id', 'install_uuid', 'user_id', 'Outcome'].map((t) => h('th', {}, t)))),
        tbody),
      empty, more));
  const filter = () => Object.fromEntries(FILTERS.map((f) => [f, inputs[f].value.trim()]));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    sessionStorage.setItem('inlet-filter', new URLSearchParams(filter()).toString());
    redraw(events);
  });
  form.querySelector('#f-clear').addEventListener('click', () => {
    sessionStorage.removeItem('inlet-filter');
    redraw(events);
  });
  const f = filter();
  const outcomeBadge = (outcome, reason) => h('span', { class: 'badge' + (outcome === 'rejected' ? ' revoked' : outcome === 'accepted' ? ' live' : '') }, outcome === 'rejected' ? `rejected: ${reason}` : outcome);
  const row = (ev, fresh) => h('tr', { class: 'clickable' + (fresh ? ' fresh' : ''), 'data-seq': ev.seq, onclick: () => { location.hash = '#events/' + ev.seq; } },
    h('td', { class: 'num' }, ev.seq), h('td', {}, when(ev.received_at_ms)), h('td', {}, ev.app), h('td', { class: 'num' }, ev.key_id ?? ''), h('td', {}, ev.source),
    h('td', {}, ev.event_name), h('td', {}, ev.event_id), h('td', {}, ev.install_uuid || ''), h('td', {}, ev.user_id || ''), h('td', {}, outcomeBadge('accepted')));
  // A pushed decision: a stored event links to its detail, others show their outcome.
  const pushed = (r) => {
    const cells = [h('td', { class: 'num' }, r.seq ?? ''), h('td', {}, when(r.at_ms)), h('td', {}, r.app), h('td', { class: 'num' }, r.key ?? ''), h('td', {}, r.source),
      h('td', {}, r.event || ''), h('td', {}, r.event_id || ''), h('td', {}, r.install_uuid || ''), h('td', {}, r.user_id || ''), h('td', {}, outcomeBadge(r.outcome, r.reason))];
    return r.seq
      ? h('tr', { class: 'clickable fresh', 'data-seq': r.seq, onclick: () => { location.hash = '#events/' + r.seq; } }, cells)
      : h('tr', { class: 'fresh ' + r.outcome, 'data-outcome': r.outcome }, cells);
  };
  const prepend = (rows) => {
    if (!rows.length) return;
    tbody.prepend(...rows);
    while (tbody.children.length > EVENT_ROWS) tbody.lastChild.remove();
    empty.hidden = true;
  };
  // The stream opens before the stored page is read: what arrives meanwhile waits in
  // `early`, and is shown once the page is (less what the page already holds).
  let early = [];
  let shownThrough = null;
  stopTail();
  const es = new EventSource('/admin/api/tail' + params({ app: f.app, key: f.key, source: f.source, event: f.event_name, outcome: f.outcome, event_id: f.event_id, install_uuid: f.install_uuid, user_id: f.user_id }));
  tailSource = es;
  es.onopen = () => { if (g === generation) status.textContent = 'live'; };
  es.onerror = () => { if (g === generation) status.textContent = es.readyState === EventSource.CLOSED ? 'not live (too many tails open?): reload' : 'reconnecting'; };
  es.addEventListener('lagged', (e) => {
    if (g !== generation) return;
    const n = JSON.parse(e.data).skipped;
    prepend([h('tr', { class: 'lagged' }, h('td', { colspan: 10, class: 'muted' }, `Too fast to show: ${n} requests skipped (the stored events are all listed after a reload)`))]);
  });
  es.onmessage = (e) => {
    if (g !== generation) { es.close(); return; }
    const r = JSON.parse(e.data);
    if (shownThrough === null) early.push(r);
    else if (!(r.seq && r.seq <= shownThrough)) prepend([pushed(r)]);
  };
  // Stored events are accepted ones: none to list when only duplicates or rejections are asked for.
  const storedToo = !f.outcome || f.outcome === 'accepted';
  const keep = (ev) => (!f.key || String(ev.key_id) === f.key) && (!f.source || ev.source === f.source);
  const stored = { app: f.app, event_name: f.event_name, event_id: f.event_id, install_uuid: f.install_uuid, user_id: f.user_id };
  const first = storedToo ? await api('GET', 'events' + params({ ...stored, limit: 50 })) : { events: [], last_seq: 0, next_before: null };
  if (g !== generation) return;
  tbody.parentElement.dataset.loaded = 'true';
  tbody.append(...first.events.filter(keep).map((ev) => row(ev, false)));
  shownThrough = first.last_seq;
  prepend(early.filter((r) => !(r.seq && r.seq <= shownThrough)).reverse().map(pushed));
  early = [];
  let before = first.next_before;
  more.hidden = !before;
  empty.hidden = tbody.children.length > 0;
  more.addEventListener('click', async () => {
    const page = await api('GET', 'events' + params({ ...stored, before, limit: 50 }));
    tbody.append(...page.events.filter(keep).map((ev) => row(ev, false)));
    before = page.next_before;
    more.hidden = !before;
  });
}

async function eventDetail(seq) {
  const g = generation;
  const r = await api('GET', 'events/' + encodeURIComponent(seq));
  let raw = r.audit ? r.audit.body : '';
  try { raw = JSON.stringify(JSON.parse(raw), null, 2); } catch (_) { /* not JSON: show as is */ }
  showPage(g,
    h('p', {}, h('a', { href: '#events' }, '← Events')),
    h('h1', {}, `Event ${r.event.seq}: ${r.event.event_name}`),
    h('section', { class: 'card' }, h('h2', {}, 'Canonical event'), eventTimes(r.event), h('pre', { id: 'event-json' }, JSON.stringify(r.event, null, 2))),
    h('section', { class: 'card' },
      h('h2', {}, 'Raw request'),
      r.audit
        ? [h('p', { class: 'muted' }, `audit key ${r.audit.key}, ${fmtNum(r.audit.bytes)} bytes` + (r.audit.truncated ? ' (shown in part)' : '')), h('pre', { id: 'audit-body' }, raw)]
        : h('p', { class: 'muted' }, 'No raw body stored.')));
}

// ---------- first run, times, secrets, profiles, tenant and app pages ----------
// (kept apart from the pages above, so that changes to either merge easily)

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

// A time as people read it ("3 Dec 2026, 14:05:09 UTC"); the raw value (milliseconds since
// the epoch, and ISO 8601) on hover.
function when(ms) {
  if (ms === null || ms === undefined || ms === '') return h('span', { class: 'muted' }, '–');
  const d = new Date(Number(ms));
  if (Number.isNaN(d.getTime())) return h('span', {}, String(ms));
  const p = (n) => String(n).padStart(2, '0');
  const text = `${d.getUTCDate()} ${MONTHS[d.getUTCMonth()]} ${d.getUTCFullYear()}, ${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())} UTC`;
  return h('time', { datetime: d.toISOString(), title: `${ms} ms since the epoch (${d.toISOString()})` }, text);
}

// The `*_ms` times of a canonical event, readable, above its JSON.
function eventTimes(ev) {
  const rows = Object.entries(ev).filter(([k, v]) => k.endsWith('_ms') && typeof v === 'number');
  if (!rows.length) return null;
  return h('dl', { class: 'times', id: 'event-times' }, rows.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, when(v))]));
}

function emptyRow(cols, text) {
  return h('tr', { class: 'empty' }, h('td', { colspan: cols, class: 'muted' }, text));
}

// A button that acts on the second click: the first arms it and says what will happen.
function twoClick(label, armed, cls, act) {
  const b = h('button', { type: 'button', class: 'danger ' + (cls || '') }, label);
  b.addEventListener('click', async () => {
    if (!b.classList.contains('armed')) {
      b.textContent = armed;
      b.classList.add('armed');
      return;
    }
    b.disabled = true;
    try { await act(); } catch (x) { b.disabled = false; b.textContent = describe(x); }
  });
  return b;
}

function retentionText(days, serverDefault) {
  const text = (d) => (d ? `${d} days` : 'forever');
  if (days === null || days === undefined) return h('span', { class: 'muted' }, `server default (${text(serverDefault)})`);
  return text(days);
}

function dialectSummary(a) {
  const parts = [];
  if (a.adjust_app_token) parts.push('Adjust ' + a.adjust_app_token);
  if (a.appsflyer_bundle_id) parts.push('AppsFlyer ' + a.appsflyer_bundle_id);
  return parts.length ? parts.join(', ') : h('span', { class: 'muted' }, 'Reflect, GameRebellion, Datafly');
}

// ----- "send your first event" (the overview, until the first event is stored) -----

// What the card shows across the overview's redraws: the key minted here, for which app, and
// whether the first event arrived (then the card goes once the user has moved on).
const firstEvent = { key: null, app: null, ts: 0, arrived: false };

function firstEventSeen(page) {
  if (page !== 'overview' && firstEvent.arrived) Object.assign(firstEvent, { key: null, app: null, ts: 0, arrived: false });
}

// Shell-quotes a value for the snippets ('...', with ' written as '\'').
const sq = (v) => "'" + String(v).replace(/'/g, "'\\''") + "'";

function firstEventSnippets(base, key, app) {
  const now = firstEvent.ts || Date.now();
  const native = JSON.stringify({
    event_name: 'purchase', event_ts_ms: now, install_uuid: '8f2a1c0e94d7423b8b53af7c9e21d630',
    user_id: 'user_42', revenue: 9.99, currency: 'USD', transaction_id: 'txn_first',
  }, null, 2);
  const gr = JSON.stringify({ event_type: 'feature_use', identifiers: { player_id: 'player-12345' }, payload: { name: 'first_event' } }, null, 2);
  const list = [
    { id: 'native', title: 'Reflect S2S (native)', text: `curl -X POST ${base}/s2s/event \\\n  -H ${sq('Authorization: Bearer ' + key)} \\\n  -H 'Content-Type: application/json' \\\n  -d ${sq(native)}` },
    { id: 'gamerebellion', title: 'GameRebellion', text: `curl -X POST ${base}/api/v1/event \\\n  -H ${sq('X-API-Key: ' + key)} \\\n  -H 'Content-Type: application/json' \\\n  -d ${sq(gr)}` },
  ];
  if (app.adjust_app_token) {
    list.push({ id: 'adjust', title: 'Adjust', text: `curl ${sq(`${base}/event?s2s=1&app_token=${encodeURIComponent(app.adjust_app_token)}&event_token=EVENT_TOKEN&idfa=D2CADB5F-410F-4963-AC0C-2A78534BDF1E&created_at_unix=${Math.floor(now / 1000)}`)} \\\n  -H ${sq('Authorization: Bearer ' + key)}` });
  } else {
    list.push({ id: 'adjust', title: 'Adjust', note: ['Set the app\u2019s Adjust app token first (', h('a', { href: '#app/' + encodeURIComponent(app.name) }, 'app settings'), ').'] });
  }
  if (app.appsflyer_bundle_id) {
    const af = JSON.stringify({ customerUserId: 'user_42', webDevKey: key, eventType: 'EVENT', eventName: 'web_purchase', timestamp: now }, null, 2);
    list.push({ id: 'appsflyer', title: 'AppsFlyer Web S2S', text: `curl -X POST ${base}/v1/${encodeURIComponent(app.appsflyer_bundle_id)}/event \\\n  -H 'Content-Type: application/json' \\\n  --data-raw ${sq(af)}` });
  } else {
    list.push({ id: 'appsflyer', title: 'AppsFlyer Web S2S', note: ['Set the app\u2019s AppsFlyer bundle id first (', h('a', { href: '#app/' + encodeURIComponent(app.name) }, 'app settings'), ').'] });
  }
  list.push({ id: 'datafly', title: 'Datafly', note: ['Datafly requests are signed with a signing secret, not a key: mint one on the ', h('a', { href: '#secrets' }, 'Secrets'), ' page (its snippet is in docs/migrating.md).'] });
  return list;
}

// Where to send events: this origin, or the ingest listener when the panel has its own (a
// wildcard address there is this host's name).
function ingestBase(o) {
  if (!o.ingest_url) return location.origin;
  const u = new URL(o.ingest_url);
  if (u.hostname === '0.0.0.0' || u.hostname === '[::]') u.hostname = location.hostname;
  return u.origin;
}

function firstEventCard(o, apps) {
  const base = ingestBase(o);
  const card = h('section', { class: 'card first', id: 'first-event' }, h('h2', {}, 'Send your first event'));
  if (!apps.length) {
    card.append(h('p', { class: 'muted' }, 'Add an app first, on the ', h('a', { href: '#tenants' }, 'Tenants & apps'), ' page.'));
    return card;
  }
  if (!firstEvent.key) {
    const err = errorBox();
    const pick = h('select', { id: 'first-app' }, apps.map((a) => h('option', { value: a.name }, a.name)));
    const go = h('button', { type: 'button', id: 'first-mint' }, 'Mint a key and show the request');
    go.addEventListener('click', async () => {
      go.disabled = true;
      try {
        const r = await api('POST', 'keys', { app: pick.value, label: 'first-event', events: [] });
        firstEvent.key = r.key;
        firstEvent.app = pick.value;
        firstEvent.ts = Date.now();
        redraw(overview);
      } catch (x) { go.disabled = false; err.textContent = describe(x); }
    });
    card.append(
      h('p', { class: 'muted' }, 'No event is stored yet. A key lets a backend send events to one app; mint one and run the request below from any shell.'),
      h('div', { class: 'row' }, h('label', {}, 'App', pick), go), err);
    return card;
  }
  const app = apps.find((a) => a.name === firstEvent.app) || { name: firstEvent.app };
  const arrived = o.last_seq > 0;
  firstEvent.arrived = arrived;
  card.append(
    secretBox(firstEvent.key),
    arrived
      ? h('p', { class: 'ok', id: 'first-arrived' }, 'It arrived: see it on the ', h('a', { href: '#events' }, 'Events'), ' page. The key stays valid; revoke it on the Keys page when done.')
      : h('p', { class: 'muted', id: 'first-waiting' }, `Waiting for the first event to app ${firstEvent.app}\u2026 (this page looks every 2 s)`));
  for (const sn of firstEventSnippets(base, firstEvent.key, app)) {
    const d = h('details', { class: 'snippet', id: 'snippet-' + sn.id, open: sn.id === 'native' }, h('summary', {}, sn.title));
    if (sn.text) d.append(h('pre', { class: 'cmd' }, sn.text));
    else d.append(h('p', { class: 'muted' }, sn.note));
    card.append(d);
  }
  return card;
}

// ----- signing secrets (Datafly) -----

async function secrets() {
  const g = generation;
  const [{ secrets: list }, { apps }] = await Promise.all([api('GET', 'secrets'), api('GET', 'apps')]);
  const err = errorBox();
  const shown = h('div', { id: 'secret-shown' });
  const form = h('form', { class: 'row', id: 'secret-form' },
    h('label', {}, 'App', h('select', { id: 'secret-app' }, apps.map((a) => h('option', { value: a.name }, a.name)))),
    h('label', {}, 'Label', h('input', { id: 'secret-label', required: true, maxlength: 64, placeholder: 'backend' })),
    h('button', { id: 'secret-mint', type: 'submit' }, 'Mint secret'));
  const showOnce = (secret) => {
    const box = secretBox(secret);
    box.querySelector('strong').textContent = 'New signing secret — shown once. ';
    box.querySelector('code').id = 'minted-secret';
    return box;
  };
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      const r = await api('POST', 'secrets', { app: form.querySelector('#secret-app').value, label: form.querySelector('#secret-label').value });
      await secrets();
      document.getElementById('secret-shown').replaceChildren(showOnce(r.secret));
    } catch (x) { err.textContent = describe(x); }
  });
  const row = (s) => {
    const state = {
      active: h('span', { class: 'badge live' }, 'active'),
      expiring: h('span', { class: 'badge warn' }, 'valid until ', when(s.expires_ms)),
      expired: h('span', { class: 'badge revoked' }, 'expired ', when(s.expires_ms)),
      revoked: h('span', { class: 'badge revoked' }, 'revoked ', when(s.revoked_ms)),
    }[s.state] || s.state;
    const actions = h('div', { class: 'actions' });
    if (s.state === 'active') {
      const grace = h('select', { class: 'grace', 'aria-label': 'grace period of secret ' + s.id },
        ['0s', '1h', '24h', '72h', '168h'].map((v) => h('option', { value: v, selected: v === '24h' }, v === '0s' ? 'no grace' : v + ' grace')));
      const rotate = h('button', { type: 'button', class: 'secondary rotate' }, 'Rotate');
      rotate.addEventListener('click', async () => {
        try {
          const r = await api('POST', `secrets/${s.id}/rotate`, { grace: grace.value });
          await secrets();
          document.getElementById('secret-shown').replaceChildren(showOnce(r.secret));
        } catch (x) { rotate.textContent = describe(x); }
      });
      actions.append(grace, rotate);
    }
    if (s.state === 'active' || s.state === 'expiring') {
      actions.append(twoClick('Revoke', 'Really revoke?', 'revoke', async () => { await api('POST', `secrets/${s.id}/revoke`, {}); await secrets(); }));
    }
    return h('tr', { 'data-secret-id': s.id },
      h('td', {}, s.id), h('td', {}, s.app), h('td', {}, s.label), h('td', {}, when(s.created_ms)),
      h('td', {}, state, s.replaced_by ? h('span', { class: 'muted' }, ` replaced by ${s.replaced_by}`) : null), h('td', {}, actions));
  };
  showPage(g,
    h('h1', {}, 'Signing secrets'),
    h('p', { class: 'muted' }, 'Datafly requests are signed (HMAC-SHA256) with a secret of their app. Rotating mints a new one; the old one keeps working for its grace period.'),
    h('section', { class: 'card' }, h('h2', {}, 'Mint a secret'), form, err, shown),
    h('section', { class: 'card' },
      h('table', { id: 'secrets-table' },
        h('thead', {}, h('tr', {}, ['ID', 'App', 'Label', 'Created', 'Status', ''].map((t) => h('th', {}, t)))),
        h('tbody', {}, list.length ? list.slice().reverse().map(row) : emptyRow(6, 'No signing secrets yet. Only Datafly requests need one.')))));
}

// ----- profiles (the identity graph) -----

async function profiles() {
  const g = generation;
  const { apps } = await api('GET', 'apps');
  const saved = Object.fromEntries(new URLSearchParams(sessionStorage.getItem('inlet-profile') || ''));
  const err = errorBox();
  const out = h('div', { id: 'profile-result' });
  const form = h('form', { class: 'row', id: 'profile-form' },
    h('label', {}, 'App', h('select', { id: 'profile-app' }, apps.map((a) => h('option', { value: a.name, selected: saved.app === a.name }, a.name)))),
    h('label', {}, 'Identifier', h('input', { id: 'profile-id', required: true, value: saved.id || '', placeholder: 'user_42, an install_uuid, an idfa…' })),
    h('label', {}, 'Kind (optional)', h('input', { id: 'profile-kind', class: 'narrow', value: saved.kind || '', placeholder: 'user_id' })),
    h('button', { type: 'submit', id: 'profile-lookup' }, 'Look up'));
  const lookup = async () => {
    const q = { app: form.querySelector('#profile-app').value, id: form.querySelector('#profile-id').value.trim(), kind: form.querySelector('#profile-kind').value.trim() };
    if (!q.id) return;
    sessionStorage.setItem('inlet-profile', new URLSearchParams(q).toString());
    err.textContent = '';
    try {
      const p = await api('GET', 'profile' + params({ ...q, limit: 50 }));
      out.replaceChildren(profileView(p));
    } catch (x) {
      if (x instanceof ApiError && x.status === 404) out.replaceChildren(h('p', { class: 'muted', id: 'profile-none' }, `No event of app ${q.app} carries ${q.id}${q.kind ? ' as ' + q.kind : ''}.`));
      else err.textContent = describe(x);
    }
  };
  form.addEventListener('submit', (e) => { e.preventDefault(); lookup(); });
  showPage(g,
    h('h1', {}, 'Profiles'),
    h('p', { class: 'muted' }, 'Every identifier an event carries links to the others of that event: look one up to see the ids linked to it and its latest events.'),
    h('section', { class: 'card' }, form, err),
    out);
  if (saved.id) await lookup();
}

function profileView(p) {
  return h('div', {},
    h('section', { class: 'card' },
      h('h2', {}, `Linked identifiers (${p.identifiers.length})`),
      h('table', { id: 'profile-ids' },
        h('thead', {}, h('tr', {}, h('th', {}, 'Kind'), h('th', {}, 'Value'))),
        h('tbody', {}, p.identifiers.map((i) => h('tr', {}, h('td', {}, i.kind), h('td', {}, i.value)))))),
    h('section', { class: 'card' },
      h('h2', {}, 'Latest events' + (p.truncated ? ' (the newest 50)' : '')),
      h('table', { id: 'profile-events' },
        h('thead', {}, h('tr', {}, ['Seq', 'Received (UTC)', 'Source', 'Event', 'event_id'].map((t) => h('th', {}, t)))),
        h('tbody', {}, p.events.length
          ? p.events.map((ev) => h('tr', { class: 'clickable', 'data-seq': ev.seq, onclick: () => { location.hash = '#events/' + ev.seq; } },
            h('td', { class: 'num' }, ev.seq), h('td', {}, when(ev.received_at_ms)), h('td', {}, ev.source), h('td', {}, ev.event_name), h('td', {}, ev.event_id)))
          : emptyRow(5, 'Retention removed its events; the links stay.')))));
}

// ----- one tenant: quota, retention, rename, delete -----

async function removalText(path) {
  const r = await api('POST', path, { dry_run: true });
  const m = r.removed;
  const parts = [];
  if (m.tenants.length) parts.push('tenant ' + m.tenants.join(', '));
  if (m.apps.length) parts.push((m.apps.length === 1 ? 'app ' : 'apps ') + m.apps.join(', '));
  parts.push(`${m.keys} key${m.keys === 1 ? '' : 's'}`, `${m.secrets} signing secret${m.secrets === 1 ? '' : 's'}`);
  return 'This removes ' + parts.join(', ') + '.';
}

// Rename and delete of a tenant or an app (`kind` 'tenants' or 'apps'); `after` is where to
// go once it is deleted.
function renameDelete(kind, name, after) {
  const path = `${kind}/${encodeURIComponent(name)}`;
  const rerr = errorBox();
  const input = h('input', { id: 'rename-name', required: true, value: name, pattern: '[A-Za-z0-9_.\\-]{1,64}' });
  const rename = h('form', { class: 'row', id: 'rename-form' }, h('label', {}, 'New name', input), h('button', { type: 'submit', class: 'secondary' }, 'Rename'));
  rename.addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      const r = await api('POST', path + '/rename', { name: input.value });
      location.hash = `#${kind === 'tenants' ? 'tenant' : 'app'}/${encodeURIComponent(r.name)}`;
    } catch (x) { rerr.textContent = describe(x); }
  });
  const derr = errorBox();
  const what = h('p', { class: 'muted', id: 'delete-what' });
  const del = h('button', { type: 'button', class: 'danger', id: 'delete' }, 'Delete…');
  del.addEventListener('click', async () => {
    derr.textContent = '';
    if (!del.classList.contains('armed')) {
      try {
        what.textContent = await removalText(path + '/delete');
        del.textContent = 'Really delete';
        del.classList.add('armed');
      } catch (x) { derr.textContent = describe(x); }
      return;
    }
    try {
      await api('POST', path + '/delete', {});
      location.hash = after;
    } catch (x) { derr.textContent = describe(x); }
  });
  return h('section', { class: 'card' },
    h('h2', {}, 'Rename or delete'),
    h('p', { class: 'muted' }, 'Possible until the ' + (kind === 'tenants' ? 'tenant\u2019s apps receive' : 'app receives') + ' events: stored events keep the names they arrived under.'),
    rename, rerr, h('div', { class: 'row' }, del), what, derr);
}

async function tenantPage(arg) {
  const g = generation;
  const name = decodeURIComponent(arg || '');
  const [{ tenants: ts, default_retention_days: dr }, { apps }] = await Promise.all([api('GET', 'tenants'), api('GET', 'apps')]);
  const t = ts.find((x) => x.name === name);
  if (!t) return showPage(g, h('p', {}, h('a', { href: '#tenants' }, '← Tenants & apps')), h('p', { class: 'error' }, `No tenant ${name}.`));
  const err = errorBox();
  const mode = h('select', { id: 'retention-mode' },
    h('option', { value: 'default', selected: t.retention_days === null }, `server default (${dr ? dr + ' days' : 'forever'})`),
    h('option', { value: 'forever', selected: t.retention_days === 0 }, 'forever'),
    h('option', { value: 'days', selected: t.retention_days > 0 }, 'days'));
  const days = h('input', { id: 'retention-days', type: 'number', min: 1, max: 36500, class: 'narrow', value: t.retention_days > 0 ? t.retention_days : 90 });
  const sync = () => { days.hidden = mode.value !== 'days'; };
  mode.addEventListener('change', sync);
  sync();
  const form = h('form', { class: 'row', id: 'retention-form' }, h('label', {}, 'Keep events', mode), days, h('button', { type: 'submit' }, 'Save'), h('span', { class: 'ok', id: 'retention-saved' }));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    err.textContent = '';
    const value = mode.value === 'default' ? null : mode.value === 'forever' ? 0 : Number(days.value);
    try {
      await api('POST', `tenants/${encodeURIComponent(name)}/retention`, { days: value });
      form.querySelector('#retention-saved').textContent = 'Saved.';
    } catch (x) { err.textContent = describe(x); }
  });
  const mine = apps.filter((a) => a.tenant === name);
  showPage(g,
    h('p', {}, h('a', { href: '#tenants' }, '← Tenants & apps')),
    h('h1', {}, 'Tenant ' + name),
    h('section', { class: 'card' },
      h('h2', {}, 'Retention'),
      h('p', { class: 'muted' }, 'Events received longer ago than this are removed (with their raw bodies and dedupe entries) by the periodic retention pass.'),
      form, err),
    h('section', { class: 'card' },
      h('h2', {}, 'Apps'),
      mine.length ? h('ul', {}, mine.map((a) => h('li', {}, h('a', { href: '#app/' + encodeURIComponent(a.name) }, a.name)))) : h('p', { class: 'muted' }, 'No apps yet.')),
    renameDelete('tenants', name, '#tenants'));
}

// ----- one app: dialect settings, Adjust event tokens, rename, delete -----

async function appPage(arg) {
  const g = generation;
  const name = decodeURIComponent(arg || '');
  const { apps } = await api('GET', 'apps');
  const a = apps.find((x) => x.name === name);
  if (!a) return showPage(g, h('p', {}, h('a', { href: '#tenants' }, '← Tenants & apps')), h('p', { class: 'error' }, `No app ${name}.`));
  const path = `apps/${encodeURIComponent(name)}`;
  const err = errorBox();
  const token = h('input', { id: 'adjust-app-token', value: a.adjust_app_token || '', placeholder: '4w565xzmb54d' });
  const required = h('input', { id: 'adjust-require-token', type: 'checkbox', checked: !a.adjust_token_optional });
  const bundle = h('input', { id: 'appsflyer-bundle-id', value: a.appsflyer_bundle_id || '', placeholder: 'com.studio.web' });
  const saved = h('span', { class: 'ok', id: 'settings-saved' });
  const form = h('form', { class: 'stack', id: 'settings-form' },
    h('label', {}, 'Adjust app token (empty: none)', token),
    h('label', { class: 'check' }, required, 'Adjust requests must carry a key (Authorization: Bearer)'),
    h('label', {}, 'AppsFlyer bundle id (empty: none)', bundle),
    h('div', { class: 'row' }, h('button', { type: 'submit', id: 'settings-save' }, 'Save settings'), saved), err);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    err.textContent = '';
    saved.textContent = '';
    try {
      await api('POST', path + '/configure', { adjust_app_token: token.value.trim(), appsflyer_bundle_id: bundle.value.trim(), adjust_require_token: required.checked });
      saved.textContent = 'Saved.';
    } catch (x) { err.textContent = describe(x); }
  });
  const merr = errorBox();
  const evToken = h('input', { id: 'adjust-event-token', required: true, placeholder: 'f0ob4r' });
  const evName = h('input', { id: 'adjust-event-name', required: true, placeholder: 'purchase' });
  const map = h('form', { class: 'row', id: 'adjust-event-form' }, h('label', {}, 'Event token', evToken), h('label', {}, 'Event name', evName), h('button', { type: 'submit', class: 'secondary' }, 'Add'));
  map.addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      await api('POST', path + '/adjust-events', { token: evToken.value.trim(), event: evName.value.trim() });
      redraw(() => appPage(arg));
    } catch (x) { merr.textContent = describe(x); }
  });
  const tokens = Object.entries(a.adjust_events || {});
  const tokenRow = ([tok, ev]) => {
    const rm = h('button', { type: 'button', class: 'link' }, 'Remove');
    rm.addEventListener('click', async () => {
      try { await api('POST', path + '/adjust-events', { token: tok, event: '' }); redraw(() => appPage(arg)); } catch (x) { merr.textContent = describe(x); }
    });
    return h('tr', { 'data-token': tok }, h('td', {}, h('code', {}, tok)), h('td', {}, ev), h('td', {}, rm));
  };
  showPage(g,
    h('p', {}, h('a', { href: '#tenants' }, '← Tenants & apps')),
    h('h1', {}, 'App ' + name),
    h('p', { class: 'muted' }, 'Tenant ', h('a', { href: '#tenant/' + encodeURIComponent(a.tenant) }, a.tenant), ', created ', when(a.created_ms), '.'),
    h('section', { class: 'card' }, h('h2', {}, 'Dialect settings'),
      h('p', { class: 'muted' }, 'Reflect, GameRebellion and Datafly need nothing here. Adjust finds the app by its app token, AppsFlyer by its bundle id.'),
      form),
    h('section', { class: 'card' }, h('h2', {}, 'Adjust event tokens'),
      h('p', { class: 'muted' }, 'An Adjust event_token is stored as the event name mapped here.'),
      h('table', { id: 'adjust-events' },
        h('thead', {}, h('tr', {}, h('th', {}, 'Event token'), h('th', {}, 'Event name'), h('th', {}, ''))),
        h('tbody', {}, tokens.length ? tokens.map(tokenRow) : emptyRow(3, 'No event tokens mapped.'))),
      map, merr),
    storeLessCard(path, a),
    rulesCard(path),
    renameDelete('apps', name, '#tenants'));
}

// ---------- admin accounts: login fields, invitations, the Admins and Audit log pages ----------

const accountReasons = {
  totp_required: 'Enter the 6-digit code of your authenticator app.',
  totp_invalid: 'That code is not valid. Check the time of your device.',
  totp_reused: 'That code was used already. Wait for the next one.',
  invite_invalid: 'This invitation link is not valid: it works once and for 7 days.',
};

function loginNameField() {
  return h('label', {}, 'Account (empty: admin)', h('input', { id: 'login-name', autocomplete: 'username' }));
}

function loginTotpField() {
  return h('label', { id: 'login-totp-label', hidden: true }, 'Authenticator code',
    h('input', { id: 'login-totp', inputmode: 'numeric', autocomplete: 'one-time-code', maxlength: 6 }));
}

function showTotpField(form) {
  form.querySelector('#login-totp-label').hidden = false;
  form.querySelector('#login-totp').focus();
}

function loginBody(form) {
  const body = { password: form.querySelector('#login-password').value };
  const name = form.querySelector('#login-name').value.trim();
  const code = form.querySelector('#login-totp').value.trim();
  if (name) body.name = name;
  if (code) body.totp = code;
  return body;
}

function inviteToken() {
  const m = /(?:^|[#&])invite=([0-9a-f]+)/.exec(location.hash);
  return m ? m[1] : null;
}

function inviteForm() {
  const err = errorBox();
  const form = h('form', { class: 'card auth', id: 'invite-form' },
    h('h1', {}, 'Accept the invitation'),
    h('p', { class: 'muted' }, 'Choose the password of your admin account.'),
    h('label', {}, 'Password (at least 8 characters)', h('input', { id: 'invite-password', type: 'password', required: true, minlength: 8, autocomplete: 'new-password' })),
    h('label', {}, 'Password again', h('input', { id: 'invite-password2', type: 'password', required: true, autocomplete: 'new-password' })),
    h('button', { id: 'invite-submit', type: 'submit' }, 'Create account'),
    err);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const pw = form.querySelector('#invite-password').value;
    if (pw !== form.querySelector('#invite-password2').value) {
      err.textContent = 'The passwords differ.';
      return;
    }
    try {
      const r = await api('POST', 'invite/accept', { token: inviteToken(), password: pw });
      csrf = r.csrf_token;
      location.hash = '#admins';
      route();
    } catch (x) { err.textContent = describe(x); }
  });
  return form;
}

async function admins() {
  const g = generation;
  const r = await api('GET', 'admins');
  const inviteErr = errorBox();
  const link = h('p', { id: 'invite-link', class: 'secret', hidden: true });
  const name = h('input', { id: 'invite-name', required: true, placeholder: 'name' });
  const invite = h('form', { class: 'inline', id: 'invite-new' }, name, h('button', { type: 'submit' }, 'Invite'), inviteErr);
  invite.addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      const i = await api('POST', 'admins/invite', { name: name.value.trim() });
      link.textContent = location.origin + i.path;
      link.hidden = false;
      inviteErr.textContent = 'Send this link to ' + name.value.trim() + ' (it works once, for 7 days):';
    } catch (x) { inviteErr.textContent = describe(x); }
  });
  const row = (a) => h('tr', { 'data-account': a.name },
    h('td', {}, a.name + (a.name === r.me ? ' (you)' : '')),
    h('td', {}, a.totp ? 'on' : 'off'),
    h('td', {}, fmtTime(a.created_ms)),
    h('td', {}, r.accounts.length > 1 ? h('button', {
      class: 'link', type: 'button', onclick: async () => {
        if (!confirm('Remove ' + a.name + '? Their sessions end now.')) return;
        try { await api('POST', 'admins/' + encodeURIComponent(a.name) + '/remove', {}); redraw(admins); } catch (x) { alert(describe(x)); }
      },
    }, 'Remove') : ''));
  showPage(g,
    h('h1', {}, 'Admins'),
    h('section', { class: 'card' },
      h('table', { id: 'admins-table' },
        h('thead', {}, h('tr', {}, h('th', {}, 'Account'), h('th', {}, 'Two-factor'), h('th', {}, 'Created'), h('th', {}, ''))),
        h('tbody', {}, r.accounts.map(row))),
      r.invites.length ? h('p', { class: 'muted' }, 'Open invitations: ' + r.invites.map((i) => `${i.name} (until ${fmtTime(i.expires_ms)})`).join(', ')) : null),
    h('section', { class: 'card' }, h('h2', {}, 'Invite an admin'), invite, link),
    h('section', { class: 'card' }, h('h2', {}, 'Your two-factor login'), totpEnrolment()));
}

function totpEnrolment() {
  const box = h('div', { id: 'totp-box' });
  const err = errorBox();
  const start = h('button', {
    id: 'totp-start', type: 'button', onclick: async () => {
      try {
        const t = await api('POST', 'account/totp', {});
        const code = h('input', { id: 'totp-code', inputmode: 'numeric', autocomplete: 'one-time-code', maxlength: 6, required: true });
        const form = h('form', { class: 'inline', id: 'totp-confirm' }, code, h('button', { type: 'submit' }, 'Confirm'));
        form.addEventListener('submit', async (e) => {
          e.preventDefault();
          try {
            await api('POST', 'account/totp/confirm', { code: code.value.trim() });
            box.replaceChildren(h('p', { id: 'totp-done' }, 'Two-factor login is on: from now on, log in with a code.'));
          } catch (x) { err.textContent = describe(x); }
        });
        box.replaceChildren(
          h('p', {}, 'Add this key to your authenticator app (or open the link on your phone), then enter the code it shows:'),
          h('p', { class: 'secret', id: 'totp-secret' }, t.secret),
          h('p', {}, h('a', { href: t.uri, id: 'totp-uri' }, 'otpauth link')),
          form, err);
      } catch (x) { err.textContent = describe(x); }
    },
  }, 'Set up an authenticator app');
  box.append(h('p', { class: 'muted' }, 'A 6-digit code from an authenticator app, asked at every login.'), start, err);
  return box;
}

async function audit() {
  const g = generation;
  const tbody = h('tbody');
  const more = h('button', { type: 'button', class: 'link', hidden: true }, 'Older');
  let before = null;
  const load = async () => {
    const r = await api('GET', 'audit' + params({ before }));
    tbody.append(...r.entries.map((e) => h('tr', {},
      h('td', { class: 'num' }, e.seq), h('td', {}, fmtTime(e.at_ms)), h('td', {}, e.actor), h('td', {}, e.action), h('td', {}, e.target))));
    before = r.next_before;
    more.hidden = !before;
    return r;
  };
  more.addEventListener('click', () => load().catch(() => {}));
  const first = await load();
  showPage(g,
    h('h1', {}, 'Audit log'),
    h('section', { class: 'card' },
      first.entries.length
        ? h('table', { id: 'audit-table' },
          h('thead', {}, h('tr', {}, h('th', {}, '#'), h('th', {}, 'When'), h('th', {}, 'Who'), h('th', {}, 'What'), h('th', {}, 'Target'))),
          tbody)
        : h('p', { class: 'muted' }, 'No admin actions recorded yet.'),
      more));
}

route();

// ---------- erasures: a person's data erased everywhere, the ledger, suppressions ----------

async function erasures() {
  const g = generation;
  const [{ erasures: list }, { apps }] = await Promise.all([api('GET', 'erasures'), api('GET', 'apps')]);
  const err = errorBox();
  const done = h('div', { id: 'erasure-receipt' });
  const form = h('form', { class: 'row', id: 'erase-form' },
    h('label', {}, 'App', h('select', { id: 'erase-app' }, apps.map((a) => h('option', { value: a.name }, a.name)))),
    h('label', {}, 'Identifier (KIND=VALUE)', h('input', { id: 'erase-id', required: true, placeholder: 'user_id=42' })),
    h('label', { class: 'check' }, h('input', { type: 'checkbox', id: 'erase-suppress' }), 'Also refuse their later events'),
    h('button', { id: 'erase-submit', type: 'submit', class: 'danger' }, 'Erase'));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const submit = form.querySelector('#erase-submit');
    submit.disabled = true;
    try {
      const r = await api('POST', 'erasures', {
        app: form.querySelector('#erase-app').value,
        id: form.querySelector('#erase-id').value.trim(),
        suppress: form.querySelector('#erase-suppress').checked,
      });
      await erasures();
      const ids = r.identifiers.map((i) => `${i.kind}=${i.value}`).join(', ');
      document.getElementById('erasure-receipt').replaceChildren(
        h('div', { class: 'secret', id: 'erasure-done' },
          h('strong', {}, `Erased ${r.events} event${r.events === 1 ? '' : 's'} of ${r.app}. `),
          `Receipt ${r.erasure_id}, digest `, h('code', {}, r.digest),
          h('p', { class: 'muted' }, `Identifiers matched: ${ids}. Keep this receipt: the ledger below holds only salted digests.`)));
    } catch (x) { submit.disabled = false; err.textContent = describe(x); }
  });
  const row = (e) => {
    const actions = h('div', { class: 'actions' });
    if (e.suppressed) {
      actions.append(twoClick('Lift suppression', 'Really accept their events again?', 'unsuppress', async () => {
        await api('POST', `erasures/${encodeURIComponent(e.erasure_id)}/unsuppress`, {});
        await erasures();
      }));
    }
    return h('tr', { 'data-erasure-id': e.erasure_id },
      h('td', {}, h('code', {}, e.erasure_id)), h('td', {}, e.at), h('td', {}, e.app), h('td', {}, e.kinds.join(', ')),
      h('td', { class: 'num' }, e.events),
      h('td', {}, e.applied ? (e.suppressed ? 'erased, suppressed' : 'erased') : h('span', { class: 'badge warn' }, 'in progress')),
      h('td', {}, actions));
  };
  showPage(g,
    h('h1', {}, 'Erasures'),
    h('p', { class: 'muted' }, 'Erasing an identifier removes every event of the profile linked to it (the identity graph\u2019s connected identifiers), their raw bodies and graph entries, from every file of the data dir; a backup restored later is erased again.'),
    h('section', { class: 'card' }, h('h2', {}, 'Erase a person'), form, err, done),
    h('section', { class: 'card' },
      h('table', { id: 'erasures-table' },
        h('thead', {}, h('tr', {}, ['Erasure', 'When', 'App', 'Identifier kinds', 'Events', 'State', ''].map((t) => h('th', {}, t)))),
        h('tbody', {}, list.length ? list.slice().reverse().map(row) : emptyRow(7, 'No erasures yet.')))));
}

// What an app keeps less of: client IPs truncated or dropped, user agents dropped, and those
// fields (with device ids and raw bodies) removed from events older than N days.
function storeLessCard(path, a) {
  const p = a.store_less || {};
  const ip = h('select', { id: 'store-less-ip' },
    [['keep', 'keep'], ['truncate', 'truncate (/24, /48)'], ['drop', 'drop']].map(([v, t]) => h('option', { value: v, selected: (p.ip || 'keep') === v }, t)));
  const ua = h('input', { id: 'store-less-ua', type: 'checkbox', checked: !!p.drop_user_agent });
  const days = h('input', { id: 'store-less-days', type: 'number', min: 1, value: p.fields_days || '', placeholder: 'as long as the event' });
  const saved = h('span', { class: 'ok', id: 'store-less-saved' });
  const err = errorBox();
  const form = h('form', { class: 'stack', id: 'store-less-form' },
    h('label', {}, 'Client IP addresses', ip),
    h('label', { class: 'check' }, ua, 'Drop user agents'),
    h('label', {}, 'Drop IPs, user agents, device ids and raw bodies of events older than (days)', days),
    h('div', { class: 'row' }, h('button', { type: 'submit' }, 'Save privacy settings'), saved));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    err.textContent = '';
    try {
      await api('POST', path + '/store-less', { ip: ip.value, drop_user_agent: ua.checked, fields_days: days.value ? Number(days.value) : null });
      saved.textContent = 'Saved.';
    } catch (x) { err.textContent = describe(x); }
  });
  return h('section', { class: 'card' }, h('h2', {}, 'Store less'),
    h('p', { class: 'muted' }, 'Applied to every event on arrival, and by the retention pass to older ones (docs/privacy.md).'),
    form, err);
}

// ---------- receipts and app rules (issue 21): the receipt search box, business-key dedupe, drop rules ----------

// The Events page's receipt search: what became of an event id in an app.
function receiptCard(apps) {
  const app = h('select', { id: 'receipt-app' }, apps.map((a) => h('option', { value: a.name }, a.name)));
  const id = h('input', { id: 'receipt-id', required: true, placeholder: 'event_id' });
  const out = h('div', { id: 'receipt-result' });
  const err = errorBox();
  const form = h('form', { class: 'row', id: 'receipt-form' },
    h('label', {}, 'App', app), h('label', {}, 'Event id', id),
    h('button', { type: 'submit', id: 'receipt-search' }, 'Find receipt'));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    err.textContent = '';
    out.replaceChildren();
    try {
      const r = await api('GET', `receipts/${encodeURIComponent(app.value)}/${encodeURIComponent(id.value.trim())}`);
      out.replaceChildren(receiptView(r));
    } catch (x) {
      err.textContent = x instanceof ApiError && x.status === 404 ? `No app ${app.value}.` : describe(x);
    }
  });
  return h('section', { class: 'card' }, h('h2', {}, 'Receipt of an event id'),
    h('p', { class: 'muted' }, 'Whether an event id was stored (when, which seq, key and dialect), answered as a duplicate, or rejected and why.'),
    form, err, out);
}

function receiptView(r) {
  const rows = [];
  const row = (k, ...v) => rows.push(h('tr', {}, h('th', {}, k), h('td', {}, ...v)));
  const status = r.accepted ? 'accepted' : (r.duplicate ? 'duplicate' : r.status);
  row('Status', h('strong', { id: 'receipt-status' }, status));
  if (r.accepted) {
    const a = r.accepted;
    row('Stored', 'seq ', h('a', { href: '#events/' + a.seq }, String(a.seq)), ` at ${fmtTime(a.received_at_ms)}, key ${a.key_id}, ${a.source}`);
    row('Audit key', h('code', {}, a.audit_key));
  }
  if (r.duplicate) {
    const d = r.duplicate;
    row('Duplicate', `of seq ${d.of_seq}, answered ${fmtNum(d.times)} time${d.times === 1 ? '' : 's'}, last at ${fmtTime(d.last_ms)}`);
  }
  for (const x of r.rejected || []) {
    row('Rejected', h('code', {}, x.reason), ` ${fmtNum(x.times)} time${x.times === 1 ? '' : 's'}, first ${fmtTime(x.first_ms)}, last ${fmtTime(x.last_ms)}`);
  }
  for (const d of r.dropped || []) {
    row('Dropped', `by rule ${d.rule}: ${fmtNum(d.times)} time${d.times === 1 ? '' : 's'}, first ${fmtTime(d.first_ms)}, last ${fmtTime(d.last_ms)} (answered as accepted, not stored)`);
  }
  if (r.quarantined) {
    const q = r.quarantined;
    row('Quarantined', h('code', {}, q.reason), ` since ${fmtTime(q.received_at_ms)} (${q.source}): `, h('a', { href: '#quarantine' }, 'replay it'), ' once fixed');
  }
  if (!r.accepted && !r.duplicate && !r.quarantined && !(r.rejected || []).length && !(r.dropped || []).length) row('Seen', 'inlet knows nothing of this event id in this app.');
  return h('table', { class: 'kv', 'data-event-id': r.event_id }, h('tbody', {}, rows));
}

// An app's rules: business-key dedupe, and drop rules with their counts. Fills itself in.
function rulesCard(path) {
  const card = h('section', { class: 'card', id: 'rules-card' }, h('h2', {}, 'Rules'), h('p', { class: 'muted' }, 'Loading…'));
  const g = generation;
  const draw = async () => {
    const r = await api('GET', path + '/rules');
    if (g !== generation) return;
    const err = errorBox();
    const on = h('input', { id: 'business-key', type: 'checkbox', checked: r.business_key });
    on.addEventListener('change', async () => {
      err.textContent = '';
      try { await api('POST', path + '/business-key', { on: on.checked }); } catch (x) { on.checked = !on.checked; err.textContent = describe(x); }
    });
    const event = h('input', { id: 'drop-event', placeholder: 'any event' });
    const source = h('select', { id: 'drop-source' }, h('option', { value: '' }, 'any source'),
      ['reflect', 'gamerebellion', 'adjust', 'appsflyer', 'datafly'].map((s) => h('option', { value: s }, s)));
    const key = h('input', { id: 'drop-key', type: 'number', min: 1, placeholder: 'any key' });
    const add = h('form', { class: 'row', id: 'drop-rule-form' },
      h('label', {}, 'Event name', event), h('label', {}, 'Source', source), h('label', {}, 'Key id', key),
      h('button', { type: 'submit', class: 'secondary' }, 'Add drop rule'));
    add.addEventListener('submit', async (e) => {
      e.preventDefault();
      err.textContent = '';
      try {
        await api('POST', path + '/drop-rules', { event: event.value.trim() || null, source: source.value || null, key_id: key.value ? Number(key.value) : null });
        await draw();
      } catch (x) { err.textContent = describe(x); }
    });
    const ruleRow = (d) => {
      const rm = h('button', { type: 'button', class: 'link' }, 'Remove');
      rm.addEventListener('click', async () => {
        try { await api('POST', `${path}/drop-rules/${d.id}/remove`, {}); await draw(); } catch (x) { err.textContent = describe(x); }
      });
      return h('tr', { 'data-rule': d.id }, h('td', { class: 'num' }, d.id), h('td', {}, d.event || 'any'), h('td', {}, d.source || 'any'),
        h('td', {}, d.key_id === undefined ? 'any' : String(d.key_id)), h('td', { class: 'num' }, fmtNum(d.dropped)), h('td', {}, rm));
    };
    card.replaceChildren(h('h2', {}, 'Rules'),
      h('label', { class: 'check' }, on, 'Business-key dedupe: an event whose (event name, transaction id) this app stored before is a duplicate, whatever its event id'),
      h('h3', {}, 'Drop rules'),
      h('p', { class: 'muted' }, 'Events matching every field of a rule are answered "dropped" and not stored or billed. Counts are since the server started.'),
      h('table', { id: 'drop-rules' },
        h('thead', {}, h('tr', {}, ['Rule', 'Event', 'Source', 'Key', 'Dropped', ''].map((t) => h('th', {}, t)))),
        h('tbody', {}, r.drop.length ? r.drop.map(ruleRow) : emptyRow(6, 'No drop rules.'))),
      add, err);
  };
  draw().catch((x) => { if (g === generation) card.replaceChildren(h('h2', {}, 'Rules'), h('p', { class: 'error' }, describe(x))); });
  return card;
}

// ---------- quarantine: refused events kept per app, replayed after the fix ----------

const quarantineState = { app: null, reason: '', results: null };

async function quarantine() {
  const g = generation;
  const { apps } = await api('GET', 'apps');
  if (!apps.length) { showPage(g, h('h1', {}, 'Quarantine'), h('p', { class: 'muted' }, 'No apps yet.')); return; }
  if (!apps.some((a) => a.name === quarantineState.app)) quarantineState.app = apps[0].name;
  const app = quarantineState.app;
  const q = await api('GET', `quarantine/${encodeURIComponent(app)}` + params({ reason: quarantineState.reason, limit: 1000 }));
  const err = errorBox();
  const appSelect = h('select', { id: 'quarantine-app' }, apps.map((a) => h('option', { value: a.name, selected: a.name === app }, a.name)));
  appSelect.addEventListener('change', () => {
    quarantineState.app = appSelect.value;
    quarantineState.reason = '';
    quarantineState.results = null;
    redraw(quarantine);
  });
  const show = (reason) => { quarantineState.reason = reason; redraw(quarantine); };
  // Where each reason is fixed.
  const fixes = {
    event_not_allowed_by_key: ['#keys', 'Keys: edit the key\u2019s allowed events'],
    cap_exceeded: ['#tenants', 'Tenants: raise the monthly quota'],
    event_token_invalid: ['#app/' + encodeURIComponent(app), 'The app: map the Adjust event token'],
  };
  const fixLink = (reason) => fixes[reason] ? h('a', { href: fixes[reason][0], class: 'q-fix' }, fixes[reason][1]) : '';
  const reasonRow = (r) => h('tr', { 'data-reason': r.reason },
    h('td', {}, h('code', {}, r.reason)), h('td', { class: 'num' }, fmtNum(r.count)),
    h('td', {}, fixLink(r.reason)),
    h('td', {}, h('button', { type: 'button', class: 'link q-show', onclick: () => show(r.reason) }, 'Show')));
  const boxes = [];
  const eventRow = (e) => {
    const box = h('input', { type: 'checkbox', class: 'q-select', 'data-event-id': e.event_id });
    boxes.push(box);
    return h('tr', { 'data-event-id': e.event_id },
      h('td', {}, box), h('td', {}, h('code', {}, e.event_id)), h('td', {}, e.event_name), h('td', {}, h('code', {}, e.reason)),
      h('td', {}, e.source), h('td', { class: 'num' }, e.key_id || 'keyless'), h('td', {}, fmtTime(e.received_at_ms)),
      h('td', {}, h('details', {}, h('summary', {}, `${fmtNum(e.bytes)} bytes`), h('pre', {}, e.raw))));
  };
  const rows = q.events.map(eventRow);
  const all = h('input', { type: 'checkbox', id: 'quarantine-select-all', title: 'Select all' });
  all.addEventListener('change', () => { for (const b of boxes) b.checked = all.checked; });
  const selected = () => boxes.filter((b) => b.checked).map((b) => b.dataset.eventId);
  const act = (button, path, body) => async () => {
    err.textContent = '';
    if (!body.reason && !(body.ids && body.ids.length)) { button.disabled = false; err.textContent = 'Select events first.'; return; }
    button.disabled = true;
    try {
      const r = await api('POST', `quarantine/${encodeURIComponent(app)}/${path}`, body);
      quarantineState.results = path === 'replay' ? r.results : null;
      redraw(quarantine);
    } catch (x) { button.disabled = false; err.textContent = describe(x); }
  };
  const replaySel = h('button', { type: 'button', id: 'quarantine-replay' }, 'Replay selected');
  replaySel.addEventListener('click', () => act(replaySel, 'replay', { ids: selected() })());
  const actions = [replaySel];
  if (quarantineState.reason) {
    const replayAll = h('button', { type: 'button', id: 'quarantine-replay-reason' }, `Replay all ${quarantineState.reason}`);
    replayAll.addEventListener('click', () => act(replayAll, 'replay', { reason: quarantineState.reason })());
    actions.push(replayAll);
  }
  const discard = twoClick('Discard selected', 'Really discard them?', 'quarantine-discard', async () => {
    await act(discard, 'discard', { ids: selected() })();
  });
  actions.push(discard);
  const results = quarantineState.results;
  const resultsCard = results && h('section', { class: 'card', id: 'quarantine-results' },
    h('h2', {}, 'Replay results'),
    h('table', {},
      h('thead', {}, h('tr', {}, ['Event id', 'Outcome', 'Reason', 'Seq', ''].map((t) => h('th', {}, t)))),
      h('tbody', {}, results.length ? results.map((r) => h('tr', { 'data-event-id': r.event_id, 'data-outcome': r.outcome },
        h('td', {}, h('code', {}, r.event_id)), h('td', {}, r.outcome), h('td', {}, r.reason || ''), h('td', { class: 'num' }, r.seq ?? ''),
        h('td', {}, r.released ? 'left the quarantine' : 'still held'))) : emptyRow(5, 'Nothing was replayed.'))));
  showPage(g,
    h('h1', {}, 'Quarantine'),
    h('p', { class: 'muted' }, 'Events refused for a reason you can fix here (not on the key\u2019s allowed events, over quota, an unmapped Adjust event token) are kept per app. Fix the setting, then replay them: they go through the whole pipeline again, with their original event id, and are stored once.'),
    h('section', { class: 'card' },
      h('div', { class: 'row' }, h('label', {}, 'App', appSelect),
        h('span', { class: 'muted', id: 'quarantine-summary' }, `${fmtNum(q.held)} held, ${fmtNum(q.bytes)} bytes, ${fmtNum(q.dropped)} dropped over the bounds`)),
      h('table', { id: 'quarantine-reasons' },
        h('thead', {}, h('tr', {}, ['Reason', 'Events', 'The fix', ''].map((t) => h('th', {}, t)))),
        h('tbody', {}, q.reasons.length ? q.reasons.map(reasonRow) : emptyRow(4, 'Nothing held.')))),
    resultsCard,
    h('section', { class: 'card' },
      h('h2', {}, quarantineState.reason ? `Held: ${quarantineState.reason}` : 'Held events'),
      quarantineState.reason && h('button', { type: 'button', class: 'link', id: 'quarantine-all-reasons', onclick: () => show('') }, 'All reasons'),
      h('div', { class: 'row actions' }, actions),
      err,
      h('table', { id: 'quarantine-events' },
        h('thead', {}, h('tr', {}, [all, 'Event id', 'Event', 'Reason', 'Source', 'Key', 'Received', 'Item'].map((t) => h('th', {}, t)))),
        h('tbody', {}, rows.length ? rows : emptyRow(8, 'Nothing held.')))));
}

// ---------- live tail, health and alerts (watch) ----------

function stopTail() {
  if (tailSource) tailSource.close();
  tailSource = null;
}
window.addEventListener('pagehide', stopTail);

function ago(ms, now) {
  if (!ms) return 'never (since the start)';
  const s = Math.max(0, Math.round((now - ms) / 1000));
  return s < 120 ? `${s} s ago` : s < 7200 ? `${Math.round(s / 60)} min ago` : `${Math.round(s / 3600)} h ago`;
}

function healthRows(rows, now, label) {
  if (!rows.length) return [emptyRow(6, 'Nothing arrived since the server started.')];
  return rows.map((r) => h('tr', {},
    h('td', {}, label(r)), h('td', {}, ago(r.health.last_event_ms, now)),
    h('td', { class: 'num' }, r.health.events_last_minute), h('td', { class: 'num' }, r.health.events_last_hour),
    h('td', { class: 'num' }, `${r.health.accepted} / ${r.health.duplicate}`),
    h('td', {}, Object.entries(r.health.rejected).map(([k, n]) => `${k}: ${n}`).join(', '))));
}

// Health per app and key (since the server started), alert rules, incidents, deliveries.
async function health() {
  const g = generation;
  const [hl, al, { apps }] = await Promise.all([api('GET', 'health'), api('GET', 'alerts'), api('GET', 'apps')]);
  const head = ['', 'Last event', 'This minute', 'Last hour', 'Accepted / dup.', 'Rejected by reason'];
  const err = errorBox();
  const kind = h('select', { id: 'al-kind' }, [['silence', 'no events for (minutes)'], ['rejections', 'rejections above (%)'], ['quota', 'quota use above (%)']].map(([v, t]) => h('option', { value: v }, t)));
  const value = h('input', { id: 'al-value', type: 'number', min: 1, value: 30 });
  const app = h('select', { id: 'al-app' }, apps.map((a) => h('option', { value: a.name }, a.name)));
  const key = h('input', { id: 'al-key', placeholder: 'key id (optional)', size: 8 });
  const hook = h('input', { id: 'al-webhook', placeholder: 'https://host/path (optional)', size: 30 });
  const secret = h('p', { id: 'al-secret' });
  const form = h('form', { class: 'row', id: 'alert-form' },
    h('label', {}, 'app', app), h('label', {}, 'key', key), h('label', {}, 'when', kind), h('label', {}, 'value', value),
    h('label', {}, 'webhook', hook), h('button', { type: 'submit' }, 'Add rule'));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const v = Number(value.value);
    const condition = kind.value === 'silence' ? { kind: 'silence', secs: v * 60 }
      : kind.value === 'rejections' ? { kind: 'rejections', pct: v, window_minutes: 5 } : { kind: 'quota', pct: v };
    const body = { app: app.value, condition };
    if (key.value.trim()) body.key = Number(key.value.trim());
    if (hook.value.trim()) body.webhook = hook.value.trim();
    try {
      const r = await api('POST', 'alerts', body);
      redraw(health);
      if (r.webhook_secret) sessionStorage.setItem('inlet-alert-secret', `Rule ${r.id}: webhook signing secret (shown once): ${r.webhook_secret}`);
    } catch (x) { err.textContent = describe(x); }
  });
  const shown = sessionStorage.getItem('inlet-alert-secret');
  if (shown) { secret.append(h('code', {}, shown)); sessionStorage.removeItem('inlet-alert-secret'); }
  const firing = new Set(al.firing.map((i) => i.rule));
  const ruleRows = al.rules.length ? al.rules.map((r) => h('tr', { 'data-rule': r.id },
    h('td', { class: 'num' }, r.id), h('td', {}, r.app), h('td', {}, r.key ?? 'all keys'), h('td', {}, describeCondition(r.condition)),
    h('td', {}, r.webhook || ''), h('td', {}, firing.has(r.id) ? h('span', { class: 'badge revoked' }, 'firing') : h('span', { class: 'badge live' }, 'ok')),
    h('td', {},
      r.webhook ? h('button', { type: 'button', class: 'secondary', onclick: async () => { try { await api('POST', `alerts/${r.id}/test`, {}); redraw(health); } catch (x) { err.textContent = describe(x); } } }, 'Test') : null,
      twoClick('Remove', 'Really remove?', 'danger', async () => { await api('POST', `alerts/${r.id}/remove`, {}); redraw(health); }))))
    : [emptyRow(7, 'No alert rules yet.')];
  showPage(g,
    h('h1', {}, 'Health & alerts'),
    h('section', { class: 'card' }, h('h2', {}, 'Apps'),
      h('p', { class: 'muted' }, 'Since the server started (', when(hl.since_ms), '); a restart starts these figures again.'),
      h('table', { id: 'health-apps' }, h('thead', {}, h('tr', {}, head.map((t, i) => h('th', {}, i ? t : 'App')))),
        h('tbody', {}, healthRows(hl.apps.map((a) => ({ name: a.name, health: a })), hl.now_ms, (r) => r.name)))),
    h('section', { class: 'card' }, h('h2', {}, 'Keys'),
      h('table', { id: 'health-keys' }, h('thead', {}, h('tr', {}, head.map((t, i) => h('th', {}, i ? t : 'Key (app)')))),
        h('tbody', {}, healthRows(hl.keys, hl.now_ms, (r) => `${r.key} (${r.app})`)))),
    h('section', { class: 'card' }, h('h2', {}, 'Alert rules'),
      h('table', { id: 'alert-rules' }, h('thead', {}, h('tr', {}, ['Id', 'App', 'Key', 'Condition', 'Webhook', 'State', ''].map((t) => h('th', {}, t)))), h('tbody', {}, ruleRows)),
      form, secret, err),
    h('section', { class: 'card' }, h('h2', {}, 'Firing'),
      h('table', { id: 'alert-firing' }, h('thead', {}, h('tr', {}, ['Rule', 'App', 'Since', 'Why'].map((t) => h('th', {}, t)))),
        h('tbody', {}, al.firing.length ? al.firing.map((i) => h('tr', {}, h('td', { class: 'num' }, i.rule), h('td', {}, i.app), h('td', {}, when(i.since_ms)), h('td', {}, i.detail))) : [emptyRow(4, 'Nothing is firing.')]))),
    h('section', { class: 'card' }, h('h2', {}, 'Webhook deliveries'),
      h('table', { id: 'alert-deliveries' }, h('thead', {}, h('tr', {}, ['Rule', 'Message', 'Id', 'State', 'Attempts', 'Last answer', 'Created', 'Next attempt'].map((t) => h('th', {}, t)))),
        h('tbody', {}, al.deliveries.length ? al.deliveries.map((d) => h('tr', { 'data-delivery': d.id, 'data-state': d.state }, h('td', { class: 'num' }, d.rule), h('td', {}, d.kind), h('td', {}, h('code', {}, d.message_id)),
          h('td', {}, h('span', { class: 'badge' + (d.state === 'failed' ? ' revoked' : d.state === 'delivered' ? ' live' : '') }, d.state)), h('td', { class: 'num' }, d.attempts),
          h('td', {}, d.last || ''), h('td', {}, when(d.created_ms)), h('td', {}, d.state === 'pending' ? when(d.next_attempt_ms) : ''))) : [emptyRow(8, 'No deliveries yet.')]))));
  every(g, 5000, () => { if (!secret.textContent && !form.contains(document.activeElement)) redraw(health); });
}

function describeCondition(c) {
  if (c.kind === 'silence') return `no events for ${c.secs >= 60 ? Math.round(c.secs / 60) + ' min' : c.secs + ' s'}`;
  if (c.kind === 'rejections') return `rejections above ${c.pct}% over ${c.window_minutes} min`;
  return `quota use at or above ${c.pct}%`;
}
