// The console's entry point: session handling, the page shell and hash routing
// (`/console#/keys`), so the server only ever serves real files.

import { admin, onSessionLost, setCsrf, PLAN_NAMES, planAllowsApi } from './api.js';
import { h, replace } from './dom.js';
import { renderLogin } from './screens/login.js';
import * as overview from './screens/overview.js';
import * as keys from './screens/keys.js';
import * as usage from './screens/usage.js';
import * as playground from './screens/playground.js';
import * as webhooks from './screens/webhooks.js';
import * as channel from './screens/channel.js';

const SCREENS = [
  { route: 'overview', label: 'Overview', module: overview },
  { route: 'keys', label: 'API Keys', module: keys },
  { route: 'usage', label: 'Usage', module: usage },
  { route: 'playground', label: 'Playground', module: playground },
  { route: 'webhooks', label: 'Webhooks', module: webhooks },
  { route: 'channel', label: 'Channel', module: channel },
];

const app = document.getElementById('app');

/**
 * What every screen may read: the session (user, account, plan) and in-memory hand-overs between
 * screens (e.g. a freshly created key offered to the Playground). Nothing here is persisted.
 */
const ctx = {
  session: null,
  get plan() {
    return this.session && this.session.account ? this.session.account.plan : null;
  },
  get apiAllowed() {
    return planAllowsApi(this.plan);
  },
  playgroundUsed: false,
  handOver: null,
  go(route) {
    if (location.hash === `#/${route}`) render();
    else location.hash = `#/${route}`;
  },
};

let cleanup = null;
let pendingRoute = null;

function currentRoute() {
  const name = location.hash.replace(/^#\/?/, '').split(/[/?]/)[0];
  return SCREENS.some((s) => s.route === name) ? name : 'overview';
}

function startSession(session) {
  ctx.session = session;
  setCsrf(session.csrf_token);
  renderShell();
  render();
}

function endSession(message, kind) {
  if (cleanup) cleanup();
  cleanup = null;
  ctx.session = null;
  ctx.handOver = null;
  setCsrf(null);
  document.querySelectorAll('dialog').forEach((d) => d.remove());
  renderLogin(app, { message, kind, onLoggedIn: (session) => {
    if (pendingRoute) {
      history.replaceState(null, '', `#/${pendingRoute}`);
      pendingRoute = null;
    }
    startSession(session);
  } });
}

onSessionLost((error) => {
  if (!ctx.session) return;
  pendingRoute = currentRoute();
  const expired = error.code === 'session_expired' || error.code === 'not_authenticated';
  endSession(expired ? 'Your session has expired. Log in again to continue where you were.' : error.message, 'warning');
});

let mainEl = null;
let navLinks = [];

function renderShell() {
  const session = ctx.session;
  const account = session.account || {};
  const user = session.user || {};
  const planLabel = PLAN_NAMES[account.plan] || account.plan || 'unknown plan';
  const logout = h('button', { type: 'button', class: 'btn btn-small btn-ghost' }, 'Log out');
  logout.addEventListener('click', async () => {
    logout.disabled = true;
    try {
      await admin('DELETE', '/admin/session');
    } catch {
      // Logged out either way: the cookie is gone or was already invalid.
    }
    endSession('You have been logged out.', 'info');
  });
  navLinks = SCREENS.map((s) => h('a', { href: `#/${s.route}`, class: 'nav-link', 'data-route': s.route }, s.label));
  mainEl = h('main', { id: 'main', class: 'main', tabindex: '-1' });
  replace(app,
    h('header', { class: 'topbar' },
      h('a', { class: 'brand', href: '#/overview' },
        h('span', { class: 'brand-mark', 'aria-hidden': 'true' }, 'W'),
        h('span', { class: 'brand-text' }, 'WizMessage', h('span', { class: 'brand-sub' }, 'Developer API'))),
      h('div', { class: 'account' },
        h('span', { class: 'account-name', title: user.email || '' }, account.name || 'Account'),
        h('span', { class: ['badge', planAllowsApi(account.plan) ? 'badge-plan' : 'badge-muted'], 'data-testid': 'plan' }, planLabel),
        h('span', { class: 'account-email' }, user.email || ''),
        logout)),
    h('div', { class: 'layout' },
      h('nav', { class: 'sidenav', 'aria-label': 'Console sections' }, navLinks),
      mainEl));
}

function render() {
  if (!ctx.session) return;
  const route = currentRoute();
  const screen = SCREENS.find((s) => s.route === route);
  for (const link of navLinks) {
    if (link.dataset.route === route) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  if (cleanup) cleanup();
  cleanup = null;
  mainEl.replaceChildren();
  window.scrollTo(0, 0);
  document.title = `${screen.label} · WizMessage console`;
  const result = screen.module.render(mainEl, ctx);
  if (typeof result === 'function') cleanup = result;
  // Move focus to the new screen's heading so keyboard and screen-reader users land on it.
  const heading = mainEl.querySelector('h1');
  if (heading && document.activeElement && document.activeElement.classList.contains('nav-link')) {
    heading.setAttribute('tabindex', '-1');
    heading.focus({ preventScroll: true });
  }
}

window.addEventListener('hashchange', () => {
  render();
  recheckSession();
});

/**
 * On every navigation, re-read the session in the background: a plan changed by the operators
 * (free → Wiz Pro) unlocks the screens without a reload, and an expired session is noticed even
 * on screens that make no request of their own.
 */
async function recheckSession() {
  if (!ctx.session) return;
  let fresh;
  try {
    fresh = await admin('GET', '/admin/session');
  } catch {
    return; // a 401 already led back to the login form (onSessionLost)
  }
  const before = ctx.session && ctx.session.account ? ctx.session.account.plan : null;
  if (!ctx.session || !fresh || !fresh.account || fresh.account.plan === before) return;
  startSession(fresh);
}

async function boot() {
  try {
    const session = await admin('GET', '/admin/session');
    startSession(session);
  } catch (error) {
    if (error.status === 401 || error.status === 404) {
      pendingRoute = location.hash ? currentRoute() : null;
      endSession(null);
    } else {
      endSession(`The console cannot reach the server right now (${error.message}). Reload to try again.`, 'error');
    }
  }
}

boot();
