// The inlet admin panel: plain JS, no build step, no dependencies.
// Everything shown is built with DOM calls and textContent (never innerHTML): event data
// comes from the outside world.
'use strict';

let csrf = null;
let timer = null;
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
  if (g === generation) view.replaceChildren(...children);
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

const pages = { overview, keys, tenants, events, admins, audit };

async function route() {
  const g = ++generation;
  stopTimer();
  if (!csrf) {
    try {
      csrf = (await api('GET', 'session')).csrf_token;
    } catch (_) { return; }
  }
  nav.hidden = false;
  const [name, arg] = location.hash.replace(/^#/, '').split('/');
  const page = pages[name] ? name : 'overview';
  for (const a of nav.querySelectorAll('a')) a.classList.toggle('active', a.dataset.page === page);
  try {
    await pages[page](arg);
  } catch (x) {
    if (!(x instanceof ApiError && x.status === 401)) showPage(g, h('p', { class: 'error' }, describe(x)));
  }
}
window.addEventListener('hashchange', route);

async function overview() {
  const g = generation;
  const render = async () => {
    const o = await api('GET', 'overview');
    showPage(g,
      h('h1', {}, 'Overview'),
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
        chart(o.hourly.first_hour_ms, o.hourly.counts)),
      h('section', { class: 'card', id: 'rejections' },
        h('h2', {}, 'Rejections by reason'),
        h('p', { class: 'muted' }, `Since this server started (${fmtTime(o.since_ms)}): ${fmtNum(o.accepted)} accepted, ${fmtNum(o.duplicates)} duplicates.`),
        o.rejections.length === 0
          ? h('p', { class: 'muted' }, 'No rejections.')
          : h('table', {},
            h('thead', {}, h('tr', {}, h('th', {}, 'Reason'), h('th', { class: 'num' }, 'Count'))),
            h('tbody', {}, o.rejections.map((r) => h('tr', {}, h('td', {}, h('code', {}, r.reason)), h('td', { class: 'num' }, fmtNum(r.count))))))));
  };
  await render();
  every(g, 10000, () => render().catch(() => {}));
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
        h('tbody', {}, list.slice().reverse().map(keyRow)))));
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
    h('td', {}, k.allowed_events.length ? k.allowed_events.join(', ') : h('span', { class: 'muted' }, 'all')),
    h('td', {}, k.rate_limit || '–'),
    h('td', {}, fmtTime(k.created_ms)), h('td', {}, fmtTime(k.last_used_ms)),
    h('td', {}, k.revoked_ms ? h('span', { class: 'badge revoked' }, 'revoked ' + fmtTime(k.revoked_ms)) : h('span', { class: 'badge live' }, 'active')),
    h('td', {}, action));
}

async function tenants() {
  const g = generation;
  const [{ tenants: ts }, { apps }] = await Promise.all([api('GET', 'tenants'), api('GET', 'apps')]);
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
        h('thead', {}, h('tr', {}, h('th', {}, 'Name'), h('th', { class: 'num' }, 'Used this month'), h('th', {}, 'Monthly quota'), h('th', {}, 'Created'))),
        h('tbody', {}, ts.map(tenantRow)))),
    h('section', { class: 'card' }, h('h2', {}, 'Apps'), aform, aerr,
      h('table', { id: 'apps-table' },
        h('thead', {}, h('tr', {}, h('th', {}, 'Name'), h('th', {}, 'Tenant'), h('th', {}, 'Created'))),
        h('tbody', {}, apps.map((a) => h('tr', {}, h('td', {}, a.name), h('td', {}, a.tenant), h('td', {}, fmtTime(a.created_ms))))))));
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
    h('td', {}, t.name), h('td', { class: 'num' }, fmtNum(t.used_this_month)), h('td', {}, form), h('td', {}, fmtTime(t.created_ms)));
}

const FILTERS = ['app', 'event_name', 'event_id', 'install_uuid', 'user_id'];

async function events(seq) {
  if (seq) return eventDetail(seq);
  const g = generation;
  const { apps } = await api('GET', 'apps');
  const current = Object.fromEntries(new URLSearchParams(sessionStorage.getItem('inlet-filter') || ''));
  const inputs = {
    app: h('select', { id: 'f-app' }, h('option', { value: '' }, 'all apps'), apps.map((a) => h('option', { value: a.name, selected: current.app === a.name }, a.name))),
  };
  for (const f of FILTERS.slice(1)) inputs[f] = h('input', { id: 'f-' + f, value: current[f] || '', placeholder: f });
  const form = h('form', { class: 'row', id: 'filter-form' },
    FILTERS.map((f) => h('label', {}, f.replace('_', ' '), inputs[f])),
    h('button', { type: 'submit' }, 'Filter'),
    h('button', { type: 'button', class: 'secondary', id: 'f-clear' }, 'Clear'));
  const tbody = h('tbody');
  const status = h('span', { class: 'badge live', id: 'live' }, 'live');
  const more = h('button', { type: 'button', class: 'secondary', id: 'older', hidden: true }, 'Older events');
  const empty = h('p', { class: 'muted', id: 'no-events', hidden: true }, 'No events match.');
  showPage(g,
    h('h1', {}, 'Events'),
    h('section', { class: 'card' }, form),
    h('section', { class: 'card' },
      h('div', { class: 'toolbar' }, status, h('span', { class: 'muted' }, 'Newest first; new events appear as they arrive. Click a row for the full event and its raw request.')),
      h('table', { id: 'events-table' },
        h('thead', {}, h('tr', {}, ['Seq', 'Received (UTC)', 'App', 'Source', 'Event', 'event_id', 'install_uuid', 'user_id'].map((t) => h('th', {}, t)))),
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
  const row = (ev, fresh) => h('tr', { class: 'clickable' + (fresh ? ' fresh' : ''), 'data-seq': ev.seq, onclick: () => { location.hash = '#events/' + ev.seq; } },
    h('td', { class: 'num' }, ev.seq), h('td', {}, fmtTime(ev.received_at_ms)), h('td', {}, ev.app), h('td', {}, ev.source),
    h('td', {}, ev.event_name), h('td', {}, ev.event_id), h('td', {}, ev.install_uuid || ''), h('td', {}, ev.user_id || ''));
  const f = filter();
  let newest = 0;
  const first = await api('GET', 'events' + params({ ...f, limit: 50 }));
  if (g !== generation) return;
  newest = first.last_seq;
  tbody.parentElement.dataset.loaded = 'true';
  tbody.append(...first.events.map((ev) => row(ev, false)));
  let before = first.next_before;
  more.hidden = !before;
  empty.hidden = first.events.length > 0;
  more.addEventListener('click', async () => {
    const page = await api('GET', 'events' + params({ ...f, before, limit: 50 }));
    tbody.append(...page.events.map((ev) => row(ev, false)));
    before = page.next_before;
    more.hidden = !before;
  });
  every(g, 2000, async () => {
    try {
      const page = await api('GET', 'events' + params({ ...f, after: newest, limit: 500 }));
      newest = Math.max(newest, page.last_seq);
      if (page.events.length) {
        tbody.prepend(...page.events.map((ev) => row(ev, true)));
        empty.hidden = true;
      }
      status.textContent = 'live';
    } catch (_) {
      status.textContent = 'offline';
    }
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
    h('section', { class: 'card' }, h('h2', {}, 'Canonical event'), h('pre', { id: 'event-json' }, JSON.stringify(r.event, null, 2))),
    h('section', { class: 'card' },
      h('h2', {}, 'Raw request'),
      r.audit
        ? [h('p', { class: 'muted' }, `audit key ${r.audit.key}, ${fmtNum(r.audit.bytes)} bytes` + (r.audit.truncated ? ' (shown in part)' : '')), h('pre', { id: 'audit-body' }, raw)]
        : h('p', { class: 'muted' }, 'No raw body stored.')));
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
