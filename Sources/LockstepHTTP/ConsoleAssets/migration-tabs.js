// Lockstep console (docs/console.md): one migration's tabs that read its history: the timeline, the
// evidence behind its decisions, and what changed between two instants (migration.js draws the rest).
import {MIGRATION, NODE, actorOf, badge, el, kindOf, micros, payloadOf, summary, svg, time, triggerOf} from './ui.js';
import {api, href} from './shell.js';

// MARK: timeline

export function timeline(view) {
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
  const rows = shown.flatMap(event => timelineRows(event, full, head.length));
  return [
    el('div', {class: 'controls'}, select('timeline-node', 'Node', node, nodes, 'node'), select('timeline-kind', 'Event', kind, kinds, 'kind'),
      el('label', {for: 'density'}, 'Density', densityInput), exportButton),
    el('p', {class: 'muted'}, `${shown.length} of ${view.events.length} events. The sequence number shows the raw event.`),
    el('div', {class: 'scroll'}, el('table', {id: 'timeline'}, el('thead', {}, el('tr', {}, head.map(h => el('th', {scope: 'col'}, h)))), el('tbody', {}, rows))),
  ];
}

/** An event's two rows (its line, and its raw JSON shown by a click), made once per event and density
 * and kept: a live event's redraw makes only the new event's rows and moves the rest, and a raw event
 * someone opened stays open. The raw JSON is made when first shown. */
const timelineRowCache = new WeakMap();
function timelineRows(event, full, columns) {
  const cached = timelineRowCache.get(event);
  if (cached && cached.full === full) return cached.rows;
  const raw = el('tr', {hidden: true});
  const toggle = el('button', {type: 'button', 'aria-expanded': 'false', onclick: () => {
    if (!raw.firstChild) raw.append(el('td', {colspan: columns}, el('pre', {}, JSON.stringify(event, null, 2))));
    raw.hidden = !raw.hidden; toggle.setAttribute('aria-expanded', String(!raw.hidden));
  }}, String(event.sequence));
  const cells = full
    ? [toggle, time(event.record.recorded_at_ms), kindOf(event), actorOf(event), triggerOf(event), summary(event)]
    : [toggle, time(event.record.recorded_at_ms).slice(11), `${summary(event)} — ${actorOf(event)}`];
  const rows = [el('tr', {'data-kind': kindOf(event)}, cells.map(c => el('td', {}, c))), raw];
  timelineRowCache.set(event, {full, rows});
  return rows;
}

// MARK: evidence

export function evidence(view) {
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

export function changes(view) {
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
