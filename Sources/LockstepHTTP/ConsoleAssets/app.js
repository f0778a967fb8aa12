// Lockstep console (docs/console.md). Plain JavaScript, no build step. It reads and writes only through
// the JSON API the CLI uses (/v1/...), signed in with a session cookie and a CSRF token. Every value from
// the server is put into the page as text (textContent, SVG text nodes), never as markup.

const main = document.getElementById('main');
const who = document.getElementById('who');
let session = null;          // {principal, roles, csrf_token}
let viewAbort = null;        // aborts the current view's watch and fetches when the view changes

// MARK: DOM

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  setAttrs(node, attrs);
  append(node, children);
  return node;
}

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS('http://www.w3.org/2000/svg', tag);
  setAttrs(node, attrs);
  append(node, children);
  return node;
}

function setAttrs(node, attrs) {
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : String(value));
  }
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(typeof child === 'string' || typeof child === 'number' ? document.createTextNode(String(child)) : child);
  }
}

function show(...children) {
  main.replaceChildren(...children.flat(Infinity).filter(Boolean));
}

// MARK: API

class APIError extends Error {
  constructor(code, message, status) { super(message); this.code = code; this.status = status; }
}

async function api(path, body = {}, signal) {
  const response = await fetch(path, {
    method: 'POST', credentials: 'same-origin', signal,
    headers: {'content-type': 'application/json', 'x-lockstep-csrf': session ? session.csrf_token : ''},
    body: JSON.stringify(body),
  });
  const text = await response.text();
  let answer;
  try { answer = JSON.parse(text); } catch { throw new APIError('bad_answer', `the server answered ${response.status} with something that is not JSON`, response.status); }
  if (!response.ok) {
    if (response.status === 401) { session = null; renderWho(); if (viewAbort) viewAbort.abort(); }
    throw new APIError(answer.code || 'error', answer.message || `HTTP ${response.status}`, response.status);
  }
  return answer;
}

/** Every page of a paged history read (at most `limit` events). */
async function allEvents(stream, signal, after = 0, limit = 50000) {
  const events = [];
  let cursor = String(after);
  while (events.length < limit) {
    const page = await api('/v1/history/events', {after_sequence: cursor, stream, page_size: 1000}, signal);
    // In the form the watch sends and `lockstep history export` writes: the sequence a number, the chain hash in hex.
    events.push(...(page.events || []).map(e => Object.assign({}, e, {sequence: Number(e.sequence), chain_hash: hexOfBase64(e.chain_hash)})));
    if (!page.next_after_sequence || !(page.events || []).length) break;
    cursor = page.next_after_sequence;
  }
  return events;
}

async function allMigrations(signal) {
  const migrations = [];
  let token = '';
  for (let pages = 0; pages < 50; pages++) {
    const page = await api('/v1/migrations/list', {page_size: 1000, page_token: token}, signal);
    migrations.push(...(page.migrations || []));
    token = page.next_page_token || '';
    if (!token) break;
  }
  return migrations;
}

// MARK: words

const MIGRATION = {
  MIGRATION_STATUS_RUNNING: ['run', '⟳', 'running'], MIGRATION_STATUS_PAUSED: ['wait', '⏸', 'paused'],
  MIGRATION_STATUS_ABORTING: ['bad', '↶', 'aborting'], MIGRATION_STATUS_SUCCEEDED: ['ok', '✓', 'succeeded'],
  MIGRATION_STATUS_FAILED: ['bad', '✗', 'failed'], MIGRATION_STATUS_ROLLED_BACK: ['bad', '↶', 'rolled back'],
};
const NODE = {
  NODE_STATUS_PENDING: ['idle', '○', 'pending'], NODE_STATUS_READY: ['idle', '◎', 'ready'],
  NODE_STATUS_WAITING_FOR_SERVICES: ['wait', '⧗', 'waiting for services'], NODE_STATUS_AWAITING_APPROVAL: ['wait', '?', 'awaiting approval'],
  NODE_STATUS_AWAITING_DECISION: ['wait', '?', 'awaiting decision'], NODE_STATUS_REJECTED: ['bad', '✗', 'rejected'],
  NODE_STATUS_PAUSED: ['wait', '⏸', 'paused'], NODE_STATUS_RUNNING: ['run', '⟳', 'running'], NODE_STATUS_BAKING: ['run', '♨', 'baking'],
  NODE_STATUS_SUCCEEDED: ['ok', '✓', 'succeeded'], NODE_STATUS_FAILED: ['bad', '✗', 'failed'],
  NODE_STATUS_ROLLING_BACK: ['bad', '↶', 'rolling back'], NODE_STATUS_ROLLED_BACK: ['bad', '↶', 'rolled back'],
  NODE_STATUS_SKIPPED: ['idle', '–', 'skipped'], NODE_STATUS_FROZEN: ['wait', '❄', 'frozen'],
  NODE_STATUS_WAITING_FOR_WINDOW: ['wait', '◷', 'waiting for window'],
  NODE_STATUS_CHECKING: ['run', '⋯', 'checking'], NODE_STATUS_CHECK_FAILED: ['bad', '✗', 'check failed'],
};

function statusOf(table, value) { return table[value] || ['idle', '·', 'unknown']; }
function badge(table, value) {
  const [kind, symbol, word] = statusOf(table, value);
  return el('span', {class: `status ${kind}`}, `${symbol} ${word}`);
}

function time(ms) {
  const value = Number(ms || 0);
  return value ? new Date(value).toISOString().replace('T', ' ').slice(0, 19) + 'Z' : '—';
}

function age(ms) {
  const seconds = Math.max(0, (Date.now() - Number(ms || 0)) / 1000);
  if (!ms) return '—';
  if (seconds < 90) return `${Math.round(seconds)} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} d ago`;
}

function hexOfBase64(value) {
  if (!value) return '';
  try { return Array.from(atob(value), c => c.charCodeAt(0).toString(16).padStart(2, '0')).join(''); } catch { return value; }
}

function kindOf(event) { return Object.keys((event.record || {}).payload || {})[0] || 'unknown'; }
function payloadOf(event) { return ((event.record || {}).payload || {})[kindOf(event)] || {}; }
function actorOf(event) {
  const actor = (event.record || {}).actor || {};
  return actor.id ? (actor.id.includes(':') ? actor.id : `${actor.kind || '?'}:${actor.id}`) : (actor.kind || '—');
}
function triggerOf(event) { return String((event.record || {}).triggered_by || '').replace(/^TRIGGERED_BY_/, '').toLowerCase() || '—'; }
const micros = value => (Number(value || 0) / 1e6).toLocaleString('en', {maximumFractionDigits: 6});

function summary(event) {
  const p = payloadOf(event);
  const node = p.node_id ? `${p.node_id}: ` : '';
  const services = list => (list || []).join(', ');
  switch (kindOf(event)) {
    case 'migration_started': return `started by ${p.started_by || '?'} (plan ${(p.plan || {}).name} v${(p.plan || {}).version})`;
    case 'plan_applied': return `plan ${(p.plan || {}).name} v${(p.plan || {}).version} applied (${((p.plan || {}).nodes || []).length} nodes)`;
    case 'step_leased': return `${node}attempt ${p.attempt || 0} leased to ${p.agent_id || '?'} (token ${p.fencing_token || 0}${p.kind === 'STEP_KIND_ROLLBACK' ? ', rollback' : ''})`;
    case 'step_completed': return `${node}attempt ${p.attempt || 0} completed${p.kind === 'STEP_KIND_ROLLBACK' ? ' (rollback)' : ''}`;
    case 'step_failed': return `${node}attempt ${p.attempt || 0} failed: ${p.reason || ''}${p.retryable ? ' (will retry)' : ''}`;
    case 'step_progress': return `${node}${p.percent || 0}% ${p.message || ''}`;
    case 'migration_paused': return `paused${p.line_stop ? ` (line stop ${p.line_stop})` : ''}: ${p.reason || '(no reason)'}`;
    case 'migration_resumed': return 'resumed';
    case 'migration_aborted': return `aborted: ${p.reason || ''}${p.trigger ? ` (trigger: ${p.trigger})` : ''}`;
    case 'migration_succeeded': return 'succeeded';
    case 'migration_failed': return `failed at ${p.node_id || '?'}: ${p.reason || ''}`;
    case 'migration_rolled_back': return 'rolled back';
    case 'approval_granted': return `${node}approved by ${p.approver || '?'}${p.comment ? ': ' + p.comment : ''}`;
    case 'approval_rejected': return `${node}rejected by ${p.approver || '?'}${p.comment ? ': ' + p.comment : ''}`;
    case 'service_leases_requested': return `${node}asks for ${services(p.services)}`;
    case 'service_leases_withdrawn': return `${node}no longer asks: ${p.reason || ''}`;
    case 'service_leases_granted': return `${node}holds ${services(p.services)}`;
    case 'service_leases_released': return `${node}gave back ${services(p.services)}${p.forced ? ' (forced)' : ''}${p.reason ? ': ' + p.reason : ''}`;
    case 'exposure_stage_reached': return `${node}stage ${p.stage || 0} reached, bake until ${time(p.bake_until_ms)}`;
    case 'metric_sampled': return `${node}${(p.sample || {}).name} = ${micros((p.sample || {}).value_micros)}${(p.sample || {}).cohort === 'baseline' ? ' (baseline)' : ''}`;
    case 'analysis_evaluated': return `${node}stage ${p.stage || 0} analysis ${p.outcome || '?'} → ${p.decision || '?'}`;
    case 'analysis_overridden': return `${node}stage ${p.stage || 0} analysis overridden`;
    case 'rollback_reordered': return `${node}rolls back ahead of ${p.ahead_of || '?'}`;
    case 'break_glass': return `${node}BREAK-GLASS by ${p.by || '?'} overrides its ${p.scope || '?'}: ${p.justification || ''}`;
    case 'freeze_declared': return `${p.stops_line ? 'line stopped' : 'freeze'} ${p.id || '?'} on ${services(p.services) || 'every service'}: ${p.reason || ''}`;
    case 'freeze_ended': return `freeze ${p.id || '?'} ended by ${p.by || '?'}${p.reason ? ': ' + p.reason : ''}`;
    case 'checkpoint_signed': return `checkpoint of event ${p.sequence || '?'} signed with key ${p.key_id || '?'}`;
    default: return kindOf(event);
  }
}

// MARK: roles and guarded actions

function may(...roles) {
  const mine = (session && session.roles) || [];
  return mine.includes('admin') || roles.some(role => mine.includes(role));
}

const dialog = document.getElementById('confirm');
/** Asks before acting: says what will happen, takes the reason or comment (required where the API requires it). */
function confirmAction({title, what, reasonLabel = 'Reason', reasonRequired = false, noReason = false, run, done}) {
  const reason = document.getElementById('confirm-reason');
  const error = document.getElementById('confirm-error');
  document.getElementById('confirm-title').textContent = title;
  document.getElementById('confirm-what').textContent = what;
  document.getElementById('confirm-reason-label').textContent = reasonLabel + (reasonRequired ? ' (required)' : ' (optional)');
  reason.value = '';
  reason.required = reasonRequired;
  reason.hidden = noReason;
  document.getElementById('confirm-reason-label').hidden = noReason;
  error.textContent = '';
  const ok = document.getElementById('confirm-ok');
  ok.textContent = title;
  const form = document.getElementById('confirm-form');
  form.onsubmit = async submitted => {
    submitted.preventDefault();
    if (reasonRequired && !reason.value.trim()) { error.textContent = `${reasonLabel} is required.`; return; }
    ok.disabled = true;
    try {
      await run(reason.value.trim());
      dialog.close();
      if (done) done();
    } catch (failure) {
      error.textContent = `${failure.code || 'error'}: ${failure.message}`;
    } finally {
      ok.disabled = false;
    }
  };
  document.getElementById('confirm-cancel').onclick = () => dialog.close();
  dialog.showModal();
  (noReason ? ok : reason).focus();
}

// MARK: routing

function route() {
  const hash = location.hash.slice(1);
  const [path, query = ''] = (hash.startsWith('/') ? hash : '/migrations').split('?');
  const decode = part => { try { return decodeURIComponent(part); } catch { return part; } };
  return {parts: path.split('/').filter(Boolean).map(decode), params: new URLSearchParams(query)};
}

function href(parts, params) {
  const query = params ? new URLSearchParams([...params].filter(([, v]) => v !== '' && v !== null && v !== undefined)).toString() : '';
  return '#/' + parts.map(encodeURIComponent).join('/') + (query ? '?' + query : '');
}

/** Changes the URL's parameters without a new history entry (filters), then re-renders. */
function setParams(changes, render = true) {
  const {parts, params} = route();
  for (const [key, value] of Object.entries(changes)) {
    if (value === '' || value === null || value === undefined) params.delete(key); else params.set(key, String(value));
  }
  const target = href(parts, params);
  if (render) location.hash = target; else history.replaceState(null, '', target);
}

async function render() {
  if (viewAbort) viewAbort.abort();
  viewAbort = new AbortController();
  const signal = viewAbort.signal;
  if (!session) return renderSignIn();
  const {parts, params} = route();
  for (const link of document.querySelectorAll('header nav a')) {
    link.toggleAttribute('aria-current', link.getAttribute('href') === `#/${parts[0] === 'migration' ? 'migrations' : parts[0]}`);
    if (link.hasAttribute('aria-current')) link.setAttribute('aria-current', 'page');
  }
  try {
    switch (parts[0]) {
      case 'migration': return await renderMigration(parts[1] || '', params, signal);
      case 'leases': return await renderLeases(signal);
      case 'plans': return await renderPlans(params, signal);
      case 'integrity': return await renderIntegrity(signal);
      default: return await renderMigrations(params, signal);
    }
  } catch (failure) {
    if (signal.aborted) return;
    if (!session) return renderSignIn(failure.message);
    show(el('h2', {}, 'Something went wrong'), el('p', {class: 'error', role: 'alert'}, `${failure.code || 'error'}: ${failure.message}`));
  }
}

// MARK: sign-in

function renderWho() {
  if (!session) { who.replaceChildren(); return; }
  who.replaceChildren(
    el('span', {}, `${session.principal} (${session.roles.join(', ')})`),
    el('button', {type: 'button', onclick: signOut}, 'Sign out'));
}

function renderSignIn(problem) {
  const token = el('input', {type: 'password', id: 'token', autocomplete: 'off', required: true});
  const error = el('p', {class: 'error', role: 'alert'}, problem || '');
  const form = el('form', {class: 'signin', onsubmit: async submitted => {
    submitted.preventDefault();
    try { await signIn(token.value); } catch (failure) { error.textContent = `${failure.code || 'error'}: ${failure.message}`; }
  }},
  el('h2', {}, 'Sign in'),
  el('p', {class: 'muted'}, 'With your bearer token (the same one the CLI uses). The browser keeps a session cookie, not the token.'),
  el('label', {for: 'token'}, 'Token'), token, error,
  el('p', {}, el('button', {type: 'submit', class: 'primary'}, 'Sign in')));
  show(form);
  token.focus();
}

async function signIn(token) {
  const response = await fetch('/ui/session', {method: 'POST', credentials: 'same-origin', headers: {'content-type': 'application/json'}, body: JSON.stringify({token})});
  const answer = await response.json();
  if (!response.ok) throw new APIError(answer.code, answer.message, response.status);
  session = answer;
  renderWho();
  if (!location.hash.startsWith('#/')) history.replaceState(null, '', '/ui#/migrations');
  await render();
}

async function signOut() {
  if (viewAbort) viewAbort.abort();  // the live watch ends with the session
  try {
    await fetch('/ui/session/end', {method: 'POST', credentials: 'same-origin', headers: {'content-type': 'application/json', 'x-lockstep-csrf': session ? session.csrf_token : ''}, body: '{}'});
  } finally {
    session = null;
    renderWho();
    renderSignIn('Signed out.');
  }
}

// MARK: migrations

async function renderMigrations(params, signal) {
  const migrations = await allMigrations(signal);
  const fields = {q: 'Migration or plan', status: 'Status', service: 'Service', by: 'Started by'};
  const inputs = {};
  const form = el('form', {class: 'filters', role: 'search', onsubmit: e => e.preventDefault()});
  for (const [key, label] of Object.entries(fields)) {
    const id = `filter-${key}`;
    let input;
    if (key === 'status') {
      input = el('select', {id}, el('option', {value: ''}, 'any'),
        Object.entries(MIGRATION).map(([value, [, symbol, word]]) => el('option', {value}, `${symbol} ${word}`)));
    } else {
      input = el('input', {id, type: 'search', autocomplete: 'off'});
    }
    input.value = params.get(key) || '';
    input.addEventListener('input', () => { setParams({[key]: input.value}, false); fill(); });
    inputs[key] = input;
    form.append(el('label', {for: id}, label, input));
  }
  const body = el('tbody');
  const count = el('p', {class: 'muted', 'aria-live': 'polite'});
  function fill() {
    const q = inputs.q.value.toLowerCase(), status = inputs.status.value, service = inputs.service.value.toLowerCase(), by = inputs.by.value.toLowerCase();
    const shown = migrations.filter(m =>
      (!q || m.migration_id.toLowerCase().includes(q) || (m.plan || '').toLowerCase().includes(q)) &&
      (!status || m.status === status) &&
      (!service || (m.nodes || []).some(n => (n.services || []).some(s => s.toLowerCase().includes(service)))) &&
      (!by || (m.started_by || '').toLowerCase().includes(by)));
    shown.sort((a, b) => Number(b.started_at_ms || 0) - Number(a.started_at_ms || 0));
    body.replaceChildren(...shown.map(m => {
      const services = [...new Set((m.nodes || []).flatMap(n => n.services || []))].sort();
      return el('tr', {},
        el('td', {}, el('a', {href: href(['migration', m.migration_id])}, m.migration_id)),
        el('td', {}, `${m.plan} v${m.plan_version}`),
        el('td', {}, badge(MIGRATION, m.status)),
        el('td', {}, services.join(', ')),
        el('td', {}, m.started_by || '—'),
        el('td', {title: time(m.started_at_ms)}, age(m.started_at_ms)));
    }));
    count.textContent = `${shown.length} of ${migrations.length} migrations`;
  }
  fill();
  show(el('h2', {}, 'Migrations'), form, count,
    el('div', {class: 'scroll'}, el('table', {},
      el('thead', {}, el('tr', {}, ['Migration', 'Plan', 'Status', 'Services', 'Started by', 'Started'].map(h => el('th', {scope: 'col'}, h)))), body)));
}

// MARK: one migration

async function renderMigration(id, params, signal) {
  const tab = params.get('tab') || 'graph';
  const at = params.get('at');
  // The migration (or its state at the instant) first, drawn at once; its history follows, page by page.
  const [current, asOf] = await Promise.all([
    api('/v1/migrations/get', {migration_id: id}, signal),
    at ? api('/v1/history/state', {sequence: String(at)}, signal) : null,
  ]);
  const migration = asOf ? (asOf.migrations || []).find(m => m.migration_id === id) || null : current;
  const view = {id, params, signal, events: [], historyLoaded: false, migration, live: !at};
  const header = el('section', {id: 'migration-head'});
  const instant = el('section', {id: 'migration-instant'}, el('p', {class: 'muted'}, 'Reading the history…'));
  const body = el('section', {id: 'migration-body'});
  view.redraw = (live = false) => {
    header.replaceChildren(...migrationHead(view));
    // A live refresh does not replay both instants again (that tab is about the past).
    if (live && tab === 'changes') return;
    const focused = document.activeElement && document.activeElement.getAttribute ? document.activeElement.getAttribute('data-node') : null;
    body.replaceChildren(...migrationTab(view, tab));
    if (focused) {
      const again = [...body.querySelectorAll('g.node')].find(n => n.getAttribute('data-node') === focused);
      if (again) again.focus();
    }
  };
  // A change of what the page shows of the same migration (a node, a filter): no new reads.
  view.set = changes => {
    setParams(changes, false);
    view.params = route().params;
    view.redraw();
  };
  const tabs = el('nav', {class: 'tabs', 'aria-label': 'Migration views'},
    [['graph', 'Graph'], ['timeline', 'Timeline'], ['evidence', 'Evidence'], ['changes', 'Between two instants']].map(([key, label]) => {
      const next = new URLSearchParams(params); next.set('tab', key);
      return el('a', {href: href(['migration', id], next), 'aria-current': key === tab ? 'page' : null}, label);
    }));
  delete main.dataset.history;
  show(el('p', {}, el('a', {href: '#/migrations'}, '← Migrations')), header, instant, tabs, body);
  view.redraw();
  view.events = await allEvents(`migration/${id}`, signal);
  view.historyLoaded = true;
  instant.replaceChildren(instantControl(view, asOf));
  if (tab !== 'graph') view.redraw();
  main.dataset.history = 'loaded';
  if (!at && !isSettled(current)) follow(view);
}

function isSettled(migration) {
  return ['MIGRATION_STATUS_SUCCEEDED', 'MIGRATION_STATUS_FAILED', 'MIGRATION_STATUS_ROLLED_BACK'].includes(migration && migration.status);
}

/** Live: the migration's watch stream; each event is added to the timeline and the migration read again. */
/** Live: the migration's watch stream; each event is added to the history and the migration read again
 * (one read at a time, the latest winning). A watch that fails is opened again after a back-off, from
 * the last event received, and the page says so meanwhile. */
async function follow(view) {
  let pending = null, reading = false, again = false;
  const read = async () => {
    if (reading) { again = true; return; }
    reading = true;
    try {
      do {
        again = false;
        view.migration = await api('/v1/migrations/get', {migration_id: view.id}, view.signal);
        view.redraw(true);
      } while (again && !view.signal.aborted);
    } catch { /* the next event reads again */ } finally { reading = false; }
  };
  const refresh = () => {
    if (pending) return;
    pending = setTimeout(() => { pending = null; read(); }, 100);
  };
  const status = text => { const line = document.getElementById('live-status'); if (line) line.textContent = text; };
  refresh();  // what happened while the history was read
  for (let failures = 0; !view.signal.aborted;) {
    const last = view.events.length ? Number(view.events[view.events.length - 1].sequence) : 0;
    try {
      const response = await fetch('/v1/migrations/watch', {
        method: 'POST', credentials: 'same-origin', signal: view.signal,
        headers: {'content-type': 'application/json', 'x-lockstep-csrf': session ? session.csrf_token : ''},
        body: JSON.stringify({migration_id: view.id, after_sequence: String(last)}),
      });
      if (!response.ok || !response.body) {
        const answer = await response.json().catch(() => ({}));
        throw new APIError(answer.code || 'error', answer.message || `HTTP ${response.status}`, response.status);
      }
      status('Live: updated as events are recorded.');
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffered = '';
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        buffered += decoder.decode(value, {stream: true});
        let end;
        while ((end = buffered.indexOf('\n')) >= 0) {
          const line = buffered.slice(0, end);
          buffered = buffered.slice(end + 1);
          if (!line.trim()) continue;
          const event = JSON.parse(line);
          if (event.error) throw new APIError(event.error.code, event.error.message);
          view.events.push(event);
          failures = 0;
          refresh();
        }
      }
      // The watch ends after the event that settles the migration.
      refresh();
      status('Settled.');
      return;
    } catch (failure) {
      if (view.signal.aborted || failure.status === 401 || !session) return;
      failures += 1;
      const wait = Math.min(30, 2 ** Math.min(failures, 5));
      status(`Live updates stopped (${failure.code || 'error'}: ${failure.message}); trying again in ${wait} s.`);
      await new Promise(resolve => setTimeout(resolve, wait * 1000));
    }
  }
}

function migrationHead(view) {
  const m = view.migration;
  if (!m) return [el('h2', {}, view.id), el('p', {class: 'muted'}, 'The migration did not exist yet at this instant.')];
  const actions = el('div', {class: 'actions'});
  if (view.live && may('operator')) {
    const refresh = () => render();
    if (m.status === 'MIGRATION_STATUS_RUNNING') {
      actions.append(el('button', {type: 'button', onclick: () => confirmAction({
        title: 'Pause', what: `Pause ${m.migration_id}: no new step starts until it is resumed; running steps finish.`,
        run: reason => api('/v1/migrations/pause', {migration_id: m.migration_id, reason}), done: refresh})}, 'Pause…'));
    }
    if (m.status === 'MIGRATION_STATUS_PAUSED') {
      actions.append(el('button', {type: 'button', onclick: () => confirmAction({
        title: 'Resume', what: `Resume ${m.migration_id}: ready nodes may start again.`, noReason: true,
        run: () => api('/v1/migrations/resume', {migration_id: m.migration_id}), done: refresh})}, 'Resume…'));
    }
    if (['MIGRATION_STATUS_RUNNING', 'MIGRATION_STATUS_PAUSED'].includes(m.status)) {
      actions.append(el('button', {type: 'button', class: 'danger', onclick: () => confirmAction({
        title: 'Abort', what: `Abort ${m.migration_id}: every completed node is rolled back, in reverse order. This cannot be undone.`,
        reasonRequired: true, run: reason => api('/v1/migrations/abort', {migration_id: m.migration_id, reason}), done: refresh})}, 'Abort…'));
    }
  }
  return [
    el('h2', {}, `${m.migration_id} `, badge(MIGRATION, m.status)),
    el('dl', {class: 'facts'},
      el('dt', {}, 'Plan'), el('dd', {}, `${m.plan} v${m.plan_version} `, el('span', {class: 'mono muted', title: m.plan_content_hash}, (m.plan_content_hash || '').slice(0, 16))),
      el('dt', {}, 'Started'), el('dd', {}, `${time(m.started_at_ms)} by ${m.started_by || '—'}`),
      m.status_reason ? [el('dt', {}, 'Why'), el('dd', {}, m.status_reason)] : null,
      el('dt', {}, 'Version'), el('dd', {}, String(m.version || 0))),
    actions,
  ];
}

/** The instant shown: live, or the state right after one of the migration's events, replayed by the server. */
function instantControl(view, asOf) {
  const events = view.events;
  const box = el('section', {class: 'controls', 'aria-label': 'Instant'});
  if (!events.length) return box;
  const at = view.params.get('at');
  const found = at ? events.findIndex(e => Number(e.sequence) >= Number(at)) : -1;
  const index = found >= 0 ? found : events.length - 1;
  const slider = el('input', {type: 'range', id: 'instant', min: 0, max: events.length - 1, value: index, 'aria-describedby': 'instant-label'});
  const label = el('span', {id: 'instant-label'});
  const describe = i => { const e = events[i]; label.textContent = `event ${e.sequence} · ${time(e.record.recorded_at_ms)} · ${kindOf(e)}`; };
  describe(index);
  slider.addEventListener('input', () => describe(Number(slider.value)));
  slider.addEventListener('change', () => setParams({at: events[Number(slider.value)].sequence}));
  const sequence = el('input', {type: 'number', id: 'instant-sequence', min: 0, value: at || '', placeholder: 'sequence', class: 'narrow'});
  sequence.addEventListener('change', () => setParams({at: sequence.value}));
  box.append(el('label', {for: 'instant', class: 'grow'}, 'As of', slider), label, el('label', {for: 'instant-sequence'}, 'Sequence', sequence));
  if (at) {
    box.append(el('button', {type: 'button', onclick: () => setParams({at: ''})}, 'Back to live'));
    return el('div', {}, el('p', {class: 'banner', role: 'status'},
      `As of event ${asOf.sequence}: the whole state replayed by the server from the log (digest ${(asOf.digest || '').slice(0, 16)}…). Actions are off.`), box);
  }
  box.append(el('span', {class: 'muted', id: 'live-status', role: 'status'}, isSettled(view.migration) ? 'Settled.' : 'Live: updated as events are recorded.'));
  return box;
}

function migrationTab(view, tab) {
  if (tab !== 'graph' && !view.historyLoaded) return [el('p', {class: 'muted'}, 'Reading the history…')];
  switch (tab) {
    case 'timeline': return timeline(view);
    case 'evidence': return evidence(view);
    case 'changes': return changes(view);
    default: return graph(view);
  }
}

// MARK: graph

function graph(view) {
  const m = view.migration;
  if (!m) return [];
  const nodes = m.nodes || [];
  const byId = new Map(nodes.map(n => [n.node_id, n]));
  const depth = new Map();
  const depthOf = (id, seen = new Set()) => {
    if (depth.has(id)) return depth.get(id);
    if (seen.has(id) || !byId.has(id)) return 0;
    seen.add(id);
    const needs = byId.get(id).needs || [];
    const value = needs.length ? 1 + Math.max(...needs.map(need => depthOf(need, seen))) : 0;
    depth.set(id, value);
    return value;
  };
  const columns = [];
  for (const node of nodes) {
    const d = depthOf(node.node_id);
    (columns[d] = columns[d] || []).push(node);
  }
  const W = 200, H = 78, GX = 56, GY = 16, PAD = 12;
  const place = new Map();
  columns.forEach((column, x) => column.forEach((node, y) => place.set(node.node_id, {x: PAD + x * (W + GX), y: PAD + y * (H + GY)})));
  const width = PAD * 2 + columns.length * (W + GX) - GX;
  const height = PAD * 2 + Math.max(1, ...columns.map(c => c.length)) * (H + GY) - GY;
  const picture = svg('svg', {width, height, viewBox: `0 0 ${width} ${height}`, role: 'group', 'aria-label': `The plan's nodes in dependency order, ${nodes.length} nodes`});
  for (const node of nodes) {
    for (const need of node.needs || []) {
      const from = place.get(need), to = place.get(node.node_id);
      if (!from || !to) continue;
      const x1 = from.x + W, y1 = from.y + H / 2, x2 = to.x, y2 = to.y + H / 2, mid = (x1 + x2) / 2;
      picture.append(svg('path', {class: 'edge', d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`}));
    }
  }
  const selected = view.params.get('node');
  const clip = (text, n) => text.length > n ? text.slice(0, n - 1) + '…' : text;
  for (const node of nodes) {
    const {x, y} = place.get(node.node_id);
    const [kind, symbol, word] = statusOf(NODE, node.status);
    const detail = node.status === 'NODE_STATUS_AWAITING_APPROVAL' ? `approvals ${node.approvals || 0} of ${node.approvals_needed || 0}`
      : node.status === 'NODE_STATUS_WAITING_FOR_SERVICES' ? clip((node.waiting_for || []).join('; ') || 'in line', 34)
      : node.status === 'NODE_STATUS_FROZEN' ? clip(`freeze ${node.frozen_by || '?'}`, 34)
      : node.status === 'NODE_STATUS_CHECK_FAILED' ? clip(`check ${((node.checks || []).find(c => c.outcome === 'fail') || {}).check || '?'} failed`, 34)
      : node.status === 'NODE_STATUS_WAITING_FOR_WINDOW' ? clip(node.window_opens_ms && Number(node.window_opens_ms) ? `opens ${time(node.window_opens_ms)}` : 'window closed', 34)
      : node.progress_percent ? `${node.progress_percent}% ${node.progress_message || ''}` : (node.services || []).join(', ');
    const group = svg('g', {class: `node ${kind}${node.node_id === selected ? ' selected' : ''}`, tabindex: 0, role: 'button',
      'data-node': node.node_id, 'data-status': word, 'aria-label': `${node.node_id}: ${word}`, transform: `translate(${x},${y})`},
    svg('title', {}, `${node.node_id}: ${word}`),
    svg('rect', {width: W, height: H, rx: 6}),
    svg('text', {x: 8, y: 18, class: 'title'}, clip(node.node_id, 26)),
    svg('text', {x: 8, y: 36}, `${symbol} ${word}`),
    svg('text', {x: 8, y: 53}, `${node.phase || ''} · attempt ${node.attempts || 0}${node.stage ? ' · ' + node.stage : ''}`),
    svg('text', {x: 8, y: 70}, clip(detail, 32)));
    const choose = () => view.set({node: node.node_id === selected ? '' : node.node_id});
    group.addEventListener('click', choose);
    group.addEventListener('keydown', key => { if (key.key === 'Enter' || key.key === ' ') { key.preventDefault(); choose(); } });
    picture.append(group);
  }
  const panel = selected && byId.has(selected) ? nodePanel(view, byId.get(selected)) : el('div', {class: 'panel'}, el('p', {class: 'muted'}, 'Choose a node (click, or Tab and Enter) to see its details.'));
  return [el('div', {class: 'layout'}, el('div', {class: 'graph'}, picture), panel)];
}

function nodePanel(view, node) {
  const lease = node.lease;
  const facts = [
    ['Status', badge(NODE, node.status)], ['Phase', node.phase], ['Services', (node.services || []).join(', ')],
    ['Needs', (node.needs || []).join(', ') || '—'], ['Attempts', String(node.attempts || 0)],
    ['Service leases', String(node.service_leases || '').replace('SERVICE_LEASE_STATE_', '').toLowerCase() || '—'],
    ['Waiting for', (node.waiting_for || []).join('; ') || '—'],
    ['Step lease', lease ? `${lease.agent_id}, token ${lease.fencing_token}, expires ${time(lease.expires_at_ms)}${lease.kind === 'STEP_KIND_ROLLBACK' ? ' (rollback)' : ''}` : '—'],
    ['Progress', node.progress_percent ? `${node.progress_percent}% ${node.progress_message || ''}` : '—'],
    ['Stage', node.stage ? `${node.stage}${node.stage_percent !== undefined ? ` (${node.stage_percent}%)` : ''}` : '—'],
    ['Bake', node.bake_until_ms && Number(node.bake_until_ms) ? `until ${time(node.bake_until_ms)}, ${node.bake_samples || 0} samples` : '—'],
    ['Gate', node.approvals_needed ? `${node.approvals || 0} of ${node.approvals_needed} from ${(node.approvers_from || []).join(', ')}` : 'none'],
    ['Approved by', (node.approved_by || []).join(', ') || '—'],
    ['Last failure', node.last_failure || '—'],
    ['Frozen', node.frozen_by ? `by freeze ${node.frozen_by} ${node.frozen_until_ms && Number(node.frozen_until_ms) ? `until ${time(node.frozen_until_ms)}` : 'until it is ended'}` : '—'],
    ['Window', node.window_closed ? `closed (${node.window_closed}) ${node.window_opens_ms && Number(node.window_opens_ms) ? `until ${time(node.window_opens_ms)}` : 'and not open within 8 days'}` : '—'],
    ['Checks', (node.checks || []).map(c => `${c.check} ${c.outcome}${c.value ? ` (${c.value}, ${c.rule})` : ''} at ${time(c.at_ms)}${c.evidence ? `: ${c.evidence}` : ''}`).join('; ') || '—'],
    ['Break-glass', (node.break_glass || []).join(', ') || '—'],
  ];
  const actions = el('div', {class: 'actions'});
  if (view.live && node.status === 'NODE_STATUS_AWAITING_APPROVAL' && may('approver')) {
    const target = `${view.id} / ${node.node_id}`;
    actions.append(
      el('button', {type: 'button', class: 'primary', onclick: () => confirmAction({
        title: 'Approve', what: `Approve ${target}: your approval is recorded with your name; with enough approvals the node may start.`,
        reasonLabel: 'Comment', run: comment => api('/v1/migrations/approve', {migration_id: view.id, node_id: node.node_id, comment}), done: () => render()})}, 'Approve…'),
      el('button', {type: 'button', class: 'danger', onclick: () => confirmAction({
        title: 'Reject', what: `Reject ${target}: the gate closes and the node does not run.`,
        reasonLabel: 'Comment', reasonRequired: true, run: comment => api('/v1/migrations/reject', {migration_id: view.id, node_id: node.node_id, comment}), done: () => render()})}, 'Reject…'));
  }
  return el('aside', {class: 'panel', 'aria-label': `Node ${node.node_id}`},
    el('h3', {}, node.node_id),
    el('dl', {class: 'facts'}, facts.map(([k, v]) => [el('dt', {}, k), el('dd', {}, v)])),
    actions,
    el('p', {}, el('a', {href: href(['migration', view.id], new URLSearchParams({tab: 'timeline', node: node.node_id}))}, 'Its events')));
}

// MARK: timeline

function timeline(view) {
  const params = view.params;
  const node = params.get('node') || '', kind = params.get('kind') || '', density = params.get('density') || 'compact';
  const nodes = [...new Set(view.events.map(e => payloadOf(e).node_id).filter(Boolean))].sort();
  const kinds = [...new Set(view.events.map(kindOf))].sort();
  const select = (id, label, value, options, key) => {
    const input = el('select', {id}, el('option', {value: ''}, 'all'), options.map(o => el('option', {value: o}, o)));
    input.value = value;
    input.addEventListener('change', () => view.set({[key]: input.value}));
    return el('label', {for: id}, label, input);
  };
  const densityInput = el('select', {id: 'density'}, el('option', {value: 'compact'}, 'compact'), el('option', {value: 'full'}, 'full'));
  densityInput.value = density;
  densityInput.addEventListener('change', () => view.set({density: densityInput.value}));
  const shown = view.events.filter(e => (!node || payloadOf(e).node_id === node) && (!kind || kindOf(e) === kind));
  const exportButton = el('button', {type: 'button', onclick: () => {
    const blob = new Blob([shown.map(e => JSON.stringify(e)).join('\n') + '\n'], {type: 'application/x-ndjson'});
    const link = el('a', {href: URL.createObjectURL(blob), download: `${view.id}-events.ndjson`});
    document.body.append(link); link.click(); link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  }}, 'Export these events (NDJSON)');
  const full = density === 'full';
  const head = full ? ['Sequence', 'Time', 'Event', 'Actor', 'Triggered by', 'Summary'] : ['Seq', 'Time', 'Summary'];
  const rows = [];
  for (const event of shown) {
    const raw = el('tr', {hidden: true}, el('td', {colspan: head.length}, el('pre', {}, JSON.stringify(event, null, 2))));
    const toggle = el('button', {type: 'button', 'aria-expanded': 'false', onclick: () => {
      raw.hidden = !raw.hidden; toggle.setAttribute('aria-expanded', String(!raw.hidden));
    }}, String(event.sequence));
    const cells = full
      ? [toggle, time(event.record.recorded_at_ms), kindOf(event), actorOf(event), triggerOf(event), summary(event)]
      : [toggle, time(event.record.recorded_at_ms).slice(11), `${summary(event)} — ${actorOf(event)}`];
    rows.push(el('tr', {'data-kind': kindOf(event)}, cells.map(c => el('td', {}, c))), raw);
  }
  return [
    el('div', {class: 'controls'}, select('timeline-node', 'Node', node, nodes, 'node'), select('timeline-kind', 'Event', kind, kinds, 'kind'),
      el('label', {for: 'density'}, 'Density', densityInput), exportButton),
    el('p', {class: 'muted'}, `${shown.length} of ${view.events.length} events. The sequence number shows the raw event.`),
    el('div', {class: 'scroll'}, el('table', {id: 'timeline'}, el('thead', {}, el('tr', {}, head.map(h => el('th', {scope: 'col'}, h)))), el('tbody', {}, rows))),
  ];
}

// MARK: evidence

function evidence(view) {
  const decisions = view.events.filter(e => ['analysis_evaluated', 'analysis_overridden', 'migration_aborted', 'approval_granted', 'approval_rejected',
    'migration_paused', 'migration_failed', 'step_failed', 'break_glass'].includes(kindOf(e)));
  const plan = (view.migration || {}).plan_content_hash || '';
  if (!decisions.length) return [el('p', {class: 'muted'}, 'No decisions recorded yet (analyses, approvals, aborts, overrides, break-glass, failures).')];
  return decisions.map(event => {
    const p = payloadOf(event);
    const facts = [['Event', `${event.sequence} · ${kindOf(event)}`], ['When', time(event.record.recorded_at_ms)], ['Actor', actorOf(event)],
      ['Triggered by', triggerOf(event)], ['Outcome', summary(event)], ['Plan hash', p.plan_content_hash || plan]];
    const parts = [el('dl', {class: 'facts'}, facts.map(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]))];
    if (kindOf(event) === 'analysis_evaluated') {
      for (const metric of p.evidence || []) {
        const check = metric.check || {};
        parts.push(el('p', {}, `${check.name}: ${metric.outcome} — ${metric.samples || 0} samples, mean ${micros(metric.mean_micros)} (min ${micros(metric.min_micros)}, max ${micros(metric.max_micros)}); ` +
          `${check.direction || ''} pass ${micros(check.pass_micros)}, marginal ${micros(check.marginal_micros)}`));
        if (metric.baseline) {
          const b = metric.baseline, rule = check.baseline || {};
          const limits = l => l ? [l.ratio_micros !== undefined ? `ratio ${micros(l.ratio_micros)}` : null,
            l.difference_micros !== undefined ? `difference ${micros(l.difference_micros)}` : null].filter(Boolean).join(', ') : '—';
          parts.push(el('p', {}, `against the baseline: ${metric.relative_outcome || '?'} — ${b.samples || 0} baseline samples, mean ${micros(b.mean_micros)} ` +
            `(min ${micros(b.min_micros)}, max ${micros(b.max_micros)}); pass ${limits(rule.pass)}, marginal ${limits(rule.marginal)}`));
        }
        // The chart shows the canary's samples (what the thresholds judge).
        const samples = view.events.filter(e => kindOf(e) === 'metric_sampled' && payloadOf(e).node_id === p.node_id &&
          (payloadOf(e).stage || 0) === (p.stage || 0) && (payloadOf(e).sample || {}).name === check.name && (payloadOf(e).sample || {}).cohort !== 'baseline' &&
          Number(e.sequence) < Number(event.sequence));
        parts.push(chart(samples.map(e => Number(payloadOf(e).sample.value_micros || 0) / 1e6), Number(check.pass_micros || 0) / 1e6,
          Number(check.marginal_micros || 0) / 1e6, check.name));
      }
    }
    return el('section', {class: 'panel spaced'}, el('h3', {}, summary(event)), parts);
  });
}

/** Samples as points against the pass and marginal thresholds (dashed lines), labelled in text too. */
function chart(values, pass, marginal, name) {
  const W = 360, H = 120, P = 28;
  const all = values.concat([pass, marginal]);
  const low = Math.min(...all), high = Math.max(...all);
  const span = high - low || 1;
  const y = v => H - P / 2 - ((v - low) / span) * (H - P);
  const x = i => P + (values.length <= 1 ? (W - 2 * P) / 2 : (i * (W - 2 * P)) / (values.length - 1));
  const picture = svg('svg', {class: 'chart', width: W, height: H, role: 'img', 'aria-label': `${name}: ${values.length} samples against pass ${pass} and marginal ${marginal}`},
    svg('line', {x1: P, x2: W - P, y1: y(pass), y2: y(pass), stroke: '#1a7f37', 'stroke-dasharray': '6 3'}),
    svg('text', {x: W - P + 2, y: y(pass) + 4}, 'pass'),
    svg('line', {x1: P, x2: W - P, y1: y(marginal), y2: y(marginal), stroke: '#9a6700', 'stroke-dasharray': '2 3'}),
    svg('text', {x: 2, y: y(marginal) + 4}, 'marg.'));
  if (values.length > 1) picture.append(svg('polyline', {fill: 'none', stroke: '#0b57d0', points: values.map((v, i) => `${x(i)},${y(v)}`).join(' ')}));
  values.forEach((v, i) => picture.append(svg('circle', {cx: x(i), cy: y(v), r: 3, fill: '#0b57d0'}, svg('title', {}, String(v)))));
  return picture;
}

// MARK: between two instants

function changes(view) {
  const events = view.events;
  if (!events.length) return [el('p', {class: 'muted'}, 'No events yet.')];
  const params = view.params;
  const from = params.get('from') || String(events[0].sequence);
  const to = params.get('to') || String(events[events.length - 1].sequence);
  const input = (id, label, value, key) => {
    const field = el('input', {id, type: 'number', min: 0, value, class: 'narrow'});
    field.addEventListener('change', () => view.set({[key]: field.value}));
    return el('label', {for: id}, label, field);
  };
  const out = el('div', {'aria-live': 'polite'}, el('p', {class: 'muted'}, 'Replaying both instants…'));
  (async () => {
    try {
      const [a, b] = await Promise.all([api('/v1/history/state', {sequence: from}, view.signal), api('/v1/history/state', {sequence: to}, view.signal)]);
      const before = (a.migrations || []).find(m => m.migration_id === view.id) || {nodes: []};
      const after = (b.migrations || []).find(m => m.migration_id === view.id) || {nodes: []};
      const old = new Map((before.nodes || []).map(n => [n.node_id, n]));
      const moved = (after.nodes || []).map(n => [n, old.get(n.node_id) || {}]).filter(([n, o]) =>
        n.status !== o.status || (n.attempts || 0) !== (o.attempts || 0) || (n.approvals || 0) !== (o.approvals || 0) || (n.progress_percent || 0) !== (o.progress_percent || 0));
      const leases = state => new Map((state.service_leases || []).filter(l => l.migration_id === view.id).map(l => [l.service, l.node_id]));
      const [heldA, heldB] = [leases(a), leases(b)];
      const taken = [...heldB].filter(([s]) => !heldA.has(s)), released = [...heldA].filter(([s]) => !heldB.has(s));
      const between = events.filter(e => Number(e.sequence) > Number(from) && Number(e.sequence) <= Number(to));
      const gates = between.filter(e => ['approval_granted', 'approval_rejected'].includes(kindOf(e)));
      out.replaceChildren(
        el('p', {}, `Migration: ${before.status ? badge(MIGRATION, before.status).textContent : 'not started yet'} → ${after.status ? badge(MIGRATION, after.status).textContent : 'not started yet'}`),
        el('h3', {}, `Nodes that moved (${moved.length})`),
        el('div', {class: 'scroll'}, el('table', {id: 'moved'}, el('thead', {}, el('tr', {}, ['Node', 'Before', 'After', 'Attempts', 'Approvals'].map(h => el('th', {scope: 'col'}, h)))),
          el('tbody', {}, moved.map(([n, o]) => el('tr', {}, el('td', {}, n.node_id), el('td', {}, o.status ? badge(NODE, o.status) : '— (not started yet)'), el('td', {}, badge(NODE, n.status)),
            el('td', {}, `${o.attempts || 0} → ${n.attempts || 0}`), el('td', {}, `${o.approvals || 0} → ${n.approvals || 0}`)))))),
        el('h3', {}, 'Service leases'),
        el('p', {}, taken.length ? `Taken: ${taken.map(([s, n]) => `${s} (by ${n})`).join(', ')}` : 'None taken.'),
        el('p', {}, released.length ? `Released: ${released.map(([s, n]) => `${s} (from ${n})`).join(', ')}` : 'None released.'),
        el('h3', {}, `Gates decided (${gates.length})`), el('ul', {}, gates.map(e => el('li', {}, summary(e)))),
        el('h3', {}, `Events in between (${between.length})`), el('ul', {}, between.map(e => el('li', {}, `${e.sequence} · ${summary(e)}`))));
    } catch (failure) {
      if (!view.signal.aborted) out.replaceChildren(el('p', {class: 'error', role: 'alert'}, `${failure.code}: ${failure.message}`));
    }
  })();
  return [el('div', {class: 'controls'}, input('changes-from', 'From sequence', from, 'from'), input('changes-to', 'To sequence', to, 'to')), out];
}

// MARK: leases

async function renderLeases(signal) {
  const [leases, migrations] = await Promise.all([api('/v1/service-leases/list', {}, signal), allMigrations(signal)]);
  const forceRelease = service => confirmAction({
    title: 'Force release', what: `Take ${service} back from its holder: the holding step's lease ends and the next in line may take the service. Use only when the holder is known to be gone.`,
    reasonRequired: true, run: reason => api('/v1/service-leases/release', {service, reason}), done: () => render()});
  const steps = migrations.flatMap(m => (m.nodes || []).filter(n => n.lease && n.lease.agent_id).map(n => [m, n]));
  const table = (id, head, rows) => el('div', {class: 'scroll'}, el('table', {id}, el('thead', {}, el('tr', {}, head.map(h => el('th', {scope: 'col'}, h)))), el('tbody', {}, rows)));
  show(el('h2', {}, 'Leases'),
    el('h3', {}, 'Services held'),
    table('held', ['Service', 'Holder', 'Since', 'Step', ''], (leases.held || []).map(l => el('tr', {},
      el('td', {}, l.service), el('td', {}, el('a', {href: href(['migration', l.migration_id], new URLSearchParams({node: l.node_id}))}, `${l.migration_id} / ${l.node_id}`), l.quarantined ? ' (quarantined: its migration failed)' : ''),
      el('td', {}, time(l.since_ms)), el('td', {}, l.step && l.step.agent_id ? `${l.step.agent_id}, token ${l.step.fencing_token}` : '—'),
      el('td', {}, may('operator') ? el('button', {type: 'button', class: 'danger', onclick: () => forceRelease(l.service)}, 'Force release…') : '')))),
    el('h3', {}, 'Waiting in line (first first)'),
    table('waiting', ['Services', 'Migration / node', 'Kind', 'Asked at event'], (leases.waiting || []).map(w => el('tr', {},
      el('td', {}, (w.services || []).join(', ')), el('td', {}, el('a', {href: href(['migration', w.migration_id], new URLSearchParams({node: w.node_id}))}, `${w.migration_id} / ${w.node_id}`)),
      el('td', {}, w.kind === 'STEP_KIND_ROLLBACK' ? 'rollback' : 'forward'), el('td', {}, String(w.sequence || ''))))),
    el('h3', {}, 'Step leases'),
    table('steps', ['Migration / node', 'Agent', 'Token', 'Granted', 'Expires'], steps.map(([m, n]) => el('tr', {},
      el('td', {}, el('a', {href: href(['migration', m.migration_id], new URLSearchParams({node: n.node_id}))}, `${m.migration_id} / ${n.node_id}`)),
      el('td', {}, n.lease.agent_id), el('td', {}, String(n.lease.fencing_token)), el('td', {}, time(n.lease.granted_at_ms)), el('td', {}, time(n.lease.expires_at_ms))))));
}

// MARK: plans

async function renderPlans(params, signal) {
  const listed = await api('/v1/plans/list', {}, signal);
  const plans = listed.plans || [];
  const parts = [el('h2', {}, 'Plans')];
  for (const plan of plans) {
    parts.push(el('h3', {}, plan.name), el('div', {class: 'scroll'}, el('table', {}, el('thead', {}, el('tr', {}, ['Version', 'Content hash', 'Nodes', ''].map(h => el('th', {scope: 'col'}, h)))),
      el('tbody', {}, (plan.versions || []).map((v, i, all) => el('tr', {},
        el('td', {}, String(v.version)), el('td', {class: 'mono'}, v.content_hash), el('td', {}, String(v.nodes || 0)),
        el('td', {}, i > 0 ? el('a', {href: href(['plans'], new URLSearchParams({name: plan.name, a: all[i - 1].version, b: v.version}))}, `Changes from v${all[i - 1].version}`) : '')))))));
  }
  const name = params.get('name');
  if (name && params.get('a') && params.get('b')) parts.push(await planDiff(name, params.get('a'), params.get('b'), signal));
  show(parts);
}

/** What changed between two versions of a plan, from their `plan_applied` events. */
async function planDiff(name, a, b, signal) {
  const events = await allEvents(`plan/${name}`, signal);
  const version = v => (events.map(e => payloadOf(e).plan).find(p => p && String(p.version) === String(v)));
  const [before, after] = [version(a), version(b)];
  if (!before || !after) return el('p', {class: 'error'}, `plan ${name} has no version ${before ? b : a}`);
  const old = new Map((before.nodes || []).map(n => [n.id || n.node_id, n]));
  const now = new Map((after.nodes || []).map(n => [n.id || n.node_id, n]));
  const lines = [];
  for (const [id, node] of now) {
    if (!old.has(id)) lines.push(['added', id, JSON.stringify(node)]);
    else if (JSON.stringify(old.get(id)) !== JSON.stringify(node)) lines.push(['changed', id, `${JSON.stringify(old.get(id))}\n→ ${JSON.stringify(node)}`]);
  }
  for (const id of old.keys()) if (!now.has(id)) lines.push(['removed', id, '']);
  for (const field of ['description', 'owners', 'services', 'deadline_ms']) {
    if (JSON.stringify(before[field]) !== JSON.stringify(after[field])) lines.push(['changed', field, `${JSON.stringify(before[field])}\n→ ${JSON.stringify(after[field])}`]);
  }
  return el('section', {id: 'plan-diff', class: 'panel'}, el('h3', {}, `${name}: v${a} → v${b}`),
    el('p', {class: 'mono'}, `${before.content_hash} → ${after.content_hash}`),
    lines.length ? el('div', {class: 'scroll'}, el('table', {}, el('tbody', {}, lines.map(([what, id, detail]) => el('tr', {}, el('td', {}, what), el('td', {}, id), el('td', {}, el('pre', {}, detail)))))))
      : el('p', {}, 'No difference in nodes, services, owners, description or deadline.'));
}

// MARK: integrity

async function renderIntegrity(signal) {
  const head = await api('/v1/history/state', {}, signal);
  const result = el('div', {id: 'verify-result', 'aria-live': 'polite'});
  const last = sessionStorage.getItem('lockstep-last-verify');
  const showResult = answer => {
    result.replaceChildren(el('h3', {}, 'Last full verification'), el('dl', {class: 'facts'},
      el('dt', {}, 'When'), el('dd', {}, answer.checked_at),
      el('dt', {}, 'Result'), el('dd', {}, el('span', {class: `status ${answer.ok ? 'ok' : 'bad'}`}, answer.ok ? '✓ the chain verifies' : `✗ ${answer.problem_code}: ${answer.problem}`)),
      el('dt', {}, 'Events'), el('dd', {}, String(answer.events || 0)),
      el('dt', {}, 'Head'), el('dd', {}, `${answer.head_sequence || 0} · `, el('span', {class: 'mono'}, hexOfBase64(answer.head_chain_hash))),
      el('dt', {}, 'State digest'), el('dd', {class: 'mono'}, answer.digest || '—'),
      el('dt', {}, 'Snapshot checked'), el('dd', {}, String(answer.snapshot_checked || 0))));
  };
  if (last) showResult(JSON.parse(last));
  const button = el('button', {type: 'button', class: 'primary', onclick: async () => {
    button.disabled = true;
    result.replaceChildren(el('p', {}, 'Verifying every event of the log…'));
    try {
      const answer = await api('/v1/history/verify', {}, signal);
      answer.checked_at = new Date().toISOString();
      sessionStorage.setItem('lockstep-last-verify', JSON.stringify(answer));
      showResult(answer);
    } catch (failure) {
      result.replaceChildren(el('p', {class: 'error', role: 'alert'}, `${failure.code}: ${failure.message}`));
    } finally { button.disabled = false; }
  }}, 'Verify the whole history now');
  show(el('h2', {}, 'Integrity'),
    el('dl', {class: 'facts'}, el('dt', {}, 'Head sequence'), el('dd', {id: 'head-sequence'}, String(head.sequence || 0)),
      el('dt', {}, 'State digest at the head'), el('dd', {class: 'mono'}, head.digest || '—')),
    el('p', {class: 'muted'}, 'Verification reads every event, checks each chain link and the snapshot, and folds the log again.'),
    button, result);
}

// MARK: start

// Only view addresses (#/…) are routed: the skip link's #main is a place on the page.
window.addEventListener('hashchange', () => {
  if (location.hash.startsWith('#token=')) arrive();
  else if (location.hash.startsWith('#/') || location.hash === '') render();
});
arrive();

/** The page opened (or a sign-in link followed): take a link's token out of the address, find the
 * session, and sign in with the link only when nobody is, or when the person signed in says so. */
async function arrive() {
  const hash = location.hash;
  let token = null;
  if (hash.startsWith('#token=')) {
    // A sign-in link: the token is taken out of the address before anything else.
    history.replaceState(null, '', '/ui#/migrations');
    try { token = decodeURIComponent(hash.slice('#token='.length)); } catch { token = hash.slice('#token='.length); }
  }
  try {
    const response = await fetch('/ui/session', {credentials: 'same-origin'});
    const answer = response.ok ? await response.json() : {};
    if (answer.signed_in) session = answer;
  } catch { /* not signed in */ }
  renderWho();
  if (token && session) {
    // Signed in already: a link someone sent must not swap the session without asking.
    if (viewAbort) viewAbort.abort();
    const mine = session.principal;
    return show(el('section', {class: 'signin'}, el('h2', {}, 'Switch accounts?'),
      el('p', {}, `You are signed in as ${mine}. The link you opened signs this browser in with another token.`),
      el('div', {class: 'actions'},
        el('button', {type: 'button', class: 'primary', onclick: () => signIn(token).catch(failure => renderSignIn(`${failure.code || 'error'}: ${failure.message}`))}, 'Use the link\'s account'),
        el('button', {type: 'button', onclick: () => render()}, `Stay ${mine}`))));
  }
  if (token) {
    try { await signIn(token); } catch (failure) { renderSignIn(`${failure.code || 'error'}: ${failure.message}`); }
    return;
  }
  await render();
}
