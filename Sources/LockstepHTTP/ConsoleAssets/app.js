// Lockstep console (docs/console.md). Plain JavaScript, no build step. It reads and writes only through
// the JSON API the CLI uses (/v1/...), signed in with a session cookie and a CSRF token. Every value from
// the server is put into the page as text (textContent, SVG text nodes), never as markup.
//
// This module starts it: it names the view of each address for the shell, follows the address, and
// signs in. Its parts: ui.js (the DOM and the words), shell.js (the session, the API, routing, signing
// in), views.js (the lists), migration.js (one migration) and migration-tabs.js (its history's tabs).
import {arrive, render, setViews} from './shell.js';
import {renderMigration} from './migration.js';
import {renderIntegrity, renderLeases, renderMigrations, renderPlans} from './views.js';

setViews((parts, params, signal) => {
  switch (parts[0]) {
    case 'migration': return renderMigration(parts[1] || '', params, signal);
    case 'leases': return renderLeases(signal);
    case 'plans': return renderPlans(params, signal);
    case 'integrity': return renderIntegrity(signal);
    default: return renderMigrations(params, signal);
  }
});

// Only view addresses (#/…) are routed: the skip link's #main is a place on the page.
window.addEventListener('hashchange', () => {
  if (location.hash.startsWith('#code=') || location.hash.startsWith('#token=')) arrive();
  else if (location.hash.startsWith('#/') || location.hash === '') render();
});
arrive();
