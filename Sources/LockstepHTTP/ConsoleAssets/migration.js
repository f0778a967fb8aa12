// One migration in the console (docs/console.md): its head and controls, and its tabs: the graph and a
// node's panel here, the timeline, the evidence and the changes between two instants in
// migration-tabs.js; followed live.
import {MIGRATION, NODE, badge, el, kindOf, main, show, statusOf, svg, time} from './ui.js';
import {APIError, allEvents, api, confirmAction, href, may, render, route, session, setParams} from './shell.js';
import {changes, evidence, timeline} from './migration-tabs.js';

// MARK: one migration

export async function renderMigration(id, params, signal) {
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
    const active = document.activeElement;
    const focused = active && active.getAttribute ? active.getAttribute('data-node') : null;
    body.replaceChildren(...migrationTab(view, tab));
    if (focused) {
      const again = [...body.querySelectorAll('g.node')].find(n => n.getAttribute('data-node') === focused);
      if (again) again.focus();
    } else if (active && active !== document.body && body.contains(active)) {
      active.focus();  // a kept element (a timeline row's toggle) moved into the new table: focus stays on it
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
      // Refused (another tab signed in as someone else, or out, and this page's CSRF token is stale):
      // asking again changes nothing.
      if (failure.status === 403) {
        status(`Live updates stopped (${failure.code || 'error'}: ${failure.message}); reload the page.`);
        return;
      }
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
  // Each instant is a replay of the log on the server (at most 4 at once per principal): one for where
  // the slider comes to rest, not one per step on its way.
  let resting;
  slider.addEventListener('change', () => {
    clearTimeout(resting);
    // (Not once the page has moved on: the slider is gone from it.)
    resting = setTimeout(() => { if (slider.isConnected) setParams({at: events[Number(slider.value)].sequence}); }, 300);
  });
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
