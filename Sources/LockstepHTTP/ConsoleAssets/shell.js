// The console's shell (docs/console.md): who is signed in and the calls made as them (the JSON API the
// CLI uses, with a session cookie and a CSRF token), the roles a control needs and the dialog that asks
// before acting, the address of a view and rendering it, signing in and out.
import {el, hexOfBase64, show, who} from './ui.js';

export let session = null;          // {principal, roles, csrf_token}
let viewAbort = null;               // aborts the current view's watch and fetches when the view changes

// MARK: API

export class APIError extends Error {
  constructor(code, message, status) { super(message); this.code = code; this.status = status; }
}

export async function api(path, body = {}, signal) {
  const response = await fetch(path, {
    method: 'POST', credentials: 'same-origin', signal,
    headers: {'content-type': 'application/json', 'x-lockstep-csrf': session ? session.csrf_token : ''},
    body: JSON.stringify(body),
  });
  const text = await response.text();
  let answer;
  try { answer = JSON.parse(text); } catch { throw new APIError('bad_answer', `the server answered ${response.status} with something that is not JSON`, response.status); }
  if (!response.ok) {
    // Signed out, or (csrf_rejected) signed in as someone else from another tab: this page's session is gone.
    if (response.status === 401 || answer.code === 'csrf_rejected') { session = null; renderWho(); if (viewAbort) viewAbort.abort(); }
    throw new APIError(answer.code || 'error', answer.message || `HTTP ${response.status}`, response.status);
  }
  return answer;
}

/** Every page of a paged history read (at most `limit` events). */
export async function allEvents(stream, signal, after = 0, limit = 50000) {
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

export async function allMigrations(signal) {
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

// MARK: roles and guarded actions

export function may(...roles) {
  const mine = (session && session.roles) || [];
  return mine.includes('admin') || roles.some(role => mine.includes(role));
}

const dialog = document.getElementById('confirm');
/** Asks before acting: says what will happen, takes the reason or comment (required where the API requires it). */
export function confirmAction({title, what, reasonLabel = 'Reason', reasonRequired = false, noReason = false, run, done}) {
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

export function route() {
  const hash = location.hash.slice(1);
  const [path, query = ''] = (hash.startsWith('/') ? hash : '/migrations').split('?');
  const decode = part => { try { return decodeURIComponent(part); } catch { return part; } };
  return {parts: path.split('/').filter(Boolean).map(decode), params: new URLSearchParams(query)};
}

export function href(parts, params) {
  const query = params ? new URLSearchParams([...params].filter(([, v]) => v !== '' && v !== null && v !== undefined)).toString() : '';
  return '#/' + parts.map(encodeURIComponent).join('/') + (query ? '?' + query : '');
}

/** Changes the URL's parameters without a new history entry (filters), then re-renders. */
export function setParams(changes, render = true) {
  const {parts, params} = route();
  for (const [key, value] of Object.entries(changes)) {
    if (value === '' || value === null || value === undefined) params.delete(key); else params.set(key, String(value));
  }
  const target = href(parts, params);
  if (render) location.hash = target; else history.replaceState(null, '', target);
}

/** The view of an address, `(parts, params, signal) => promise`, named by app.js (`setViews`): the shell
 * does not import the views, which import the shell. */
let viewOf = null;
export function setViews(view) { viewOf = view; }

export async function render() {
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
    return await viewOf(parts, params, signal);
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
    try { await signIn({token: token.value}); } catch (failure) { error.textContent = `${failure.code || 'error'}: ${failure.message}`; }
  }},
  el('h2', {}, 'Sign in'),
  el('p', {class: 'muted'}, 'With your bearer token (the same one the CLI uses). The browser keeps a session cookie, not the token.'),
  el('label', {for: 'token'}, 'Token'), token, error,
  el('p', {}, el('button', {type: 'submit', class: 'primary'}, 'Sign in')));
  show(form);
  token.focus();
}

/** Signs in with `{token}` (the form) or `{code}` (a link's one-time code). */
async function signIn(credential) {
  const response = await fetch('/ui/session', {method: 'POST', credentials: 'same-origin', headers: {'content-type': 'application/json'}, body: JSON.stringify(credential)});
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

// MARK: arriving

/** The page opened (or a sign-in link followed): take a link's code out of the address, find the
 * session, and use the link only when the person at the browser says so, signed in or not (a link
 * someone sent must not make this browser act as them unawares, nor swap a session silently). */
export async function arrive() {
  const hash = location.hash;
  let code = null;
  if (hash.startsWith('#code=') || hash.startsWith('#token=')) {
    // The link's secret is taken out of the address before anything else.
    history.replaceState(null, '', '/ui#/migrations');
    code = hash.startsWith('#code=') ? hash.slice('#code='.length) : null;
  }
  try {
    const response = await fetch('/ui/session', {credentials: 'same-origin'});
    const answer = response.ok ? await response.json() : {};
    if (answer.signed_in) session = answer;
  } catch { /* not signed in */ }
  renderWho();
  if (hash.startsWith('#token=')) {
    // Links no longer carry bearer tokens: one would sit in the browser's history and wherever it was sent.
    const notice = 'A sign-in link with a token in it is not accepted: make a one-time link with `lockstep console link`, or sign in here.';
    if (!session) return renderSignIn(notice);
    if (viewAbort) viewAbort.abort();
    return show(el('section', {class: 'signin'}, el('h2', {}, 'Link not used'),
      el('p', {}, `${notice} You are still signed in as ${session.principal}.`),
      el('div', {class: 'actions'}, el('button', {type: 'button', class: 'primary', onclick: () => render()}, 'Continue'))));
  }
  if (!code) return render();
  if (viewAbort) viewAbort.abort();
  // Once: a second click while the first sign-in is on its way would find the code spent.
  let using = false;
  const use = () => {
    if (using) return;
    using = true;
    return signIn({code}).catch(failure => renderSignIn(`${failure.code || 'error'}: ${failure.message}`));
  };
  if (session) {
    const mine = session.principal;
    return show(el('section', {class: 'signin'}, el('h2', {}, 'Switch accounts?'),
      el('p', {}, `You are signed in as ${mine}. The link you opened signs this browser in as whoever made it.`),
      el('div', {class: 'actions'},
        el('button', {type: 'button', class: 'primary', onclick: use}, 'Use the link\'s account'),
        el('button', {type: 'button', onclick: () => render()}, `Stay ${mine}`))));
  }
  return show(el('section', {class: 'signin'}, el('h2', {}, 'Sign in with this link?'),
    el('p', {}, 'The link signs this browser in as whoever made it (with `lockstep console link`, or `lockstep serve --dev` at start). '
      + 'Use it only if it is yours or you were expecting it: what you do here is recorded as theirs.'),
    el('div', {class: 'actions'},
      el('button', {type: 'button', class: 'primary', onclick: use}, 'Sign in with the link'),
      el('button', {type: 'button', onclick: () => renderSignIn()}, 'Sign in with a token instead'))));
}
