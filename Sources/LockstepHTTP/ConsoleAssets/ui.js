// The console's DOM helpers, and the words and formats it shows values in (docs/console.md). Every value
// from the server is put into the page as text (textContent, SVG text nodes), never as markup. No
// imports: the other modules build on this one.

export const main = document.getElementById('main');
export const who = document.getElementById('who');

// MARK: DOM

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  setAttrs(node, attrs);
  append(node, children);
  return node;
}

export function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS('http://www.w3.org/2000/svg', tag);
  setAttrs(node, attrs);
  append(node, children);
  return node;
}

export function setAttrs(node, attrs) {
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : String(value));
  }
}

export function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(typeof child === 'string' || typeof child === 'number' ? document.createTextNode(String(child)) : child);
  }
}

export function show(...children) {
  main.replaceChildren(...children.flat(Infinity).filter(Boolean));
}

// MARK: words

export const MIGRATION = {
  MIGRATION_STATUS_RUNNING: ['run', '⟳', 'running'], MIGRATION_STATUS_PAUSED: ['wait', '⏸', 'paused'],
  MIGRATION_STATUS_ABORTING: ['bad', '↶', 'aborting'], MIGRATION_STATUS_SUCCEEDED: ['ok', '✓', 'succeeded'],
  MIGRATION_STATUS_FAILED: ['bad', '✗', 'failed'], MIGRATION_STATUS_ROLLED_BACK: ['bad', '↶', 'rolled back'],
};
export const NODE = {
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

export function statusOf(table, value) { return table[value] || ['idle', '·', 'unknown']; }
export function badge(table, value) {
  const [kind, symbol, word] = statusOf(table, value);
  return el('span', {class: `status ${kind}`}, `${symbol} ${word}`);
}

export function time(ms) {
  const value = Number(ms || 0);
  return value ? new Date(value).toISOString().replace('T', ' ').slice(0, 19) + 'Z' : '—';
}

export function age(ms) {
  const seconds = Math.max(0, (Date.now() - Number(ms || 0)) / 1000);
  if (!ms) return '—';
  if (seconds < 90) return `${Math.round(seconds)} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} d ago`;
}

export function hexOfBase64(value) {
  if (!value) return '';
  try { return Array.from(atob(value), c => c.charCodeAt(0).toString(16).padStart(2, '0')).join(''); } catch { return value; }
}

export function kindOf(event) { return Object.keys((event.record || {}).payload || {})[0] || 'unknown'; }
export function payloadOf(event) { return ((event.record || {}).payload || {})[kindOf(event)] || {}; }
export function actorOf(event) {
  const actor = (event.record || {}).actor || {};
  return actor.id ? (actor.id.includes(':') ? actor.id : `${actor.kind || '?'}:${actor.id}`) : (actor.kind || '—');
}
export function triggerOf(event) { return String((event.record || {}).triggered_by || '').replace(/^TRIGGERED_BY_/, '').toLowerCase() || '—'; }
export const micros = value => (Number(value || 0) / 1e6).toLocaleString('en', {maximumFractionDigits: 6});

export function summary(event) {
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
