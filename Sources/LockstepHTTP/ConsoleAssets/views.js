// The console's list views (docs/console.md): the migrations, the service leases, the plans and their
// differences, the log's integrity.
import {MIGRATION, age, badge, el, hexOfBase64, payloadOf, show, time} from './ui.js';
import {allEvents, allMigrations, api, confirmAction, href, may, render, setParams} from './shell.js';

// MARK: migrations

export async function renderMigrations(params, signal) {
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

// MARK: leases

export async function renderLeases(signal) {
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

export async function renderPlans(params, signal) {
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

export async function renderIntegrity(signal) {
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
