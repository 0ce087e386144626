// Log in with email + password (SPEC §6): the server sets an HttpOnly SameSite=Strict cookie and
// answers with the CSRF token the console then sends on every change.

import { admin } from '../api.js';
import { h, field, replace } from '../dom.js';

export function renderLogin(root, { message, kind = 'info', onLoggedIn }) {
  const email = h('input', { type: 'email', name: 'email', autocomplete: 'username', required: true, spellcheck: 'false' });
  const password = h('input', { type: 'password', name: 'password', autocomplete: 'current-password', required: true });
  const status = h('div', { class: 'login-status', 'aria-live': 'assertive' });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary btn-block' }, 'Log in');
  const form = h('form', { class: 'login-form', novalidate: true },
    field({ label: 'Email', control: email }),
    field({ label: 'Password', control: password }),
    status,
    submit);

  if (message) {
    status.append(h('p', { class: ['callout', `callout-${kind === 'error' ? 'error' : kind === 'warning' ? 'warning' : 'info'}`], role: kind === 'info' ? 'status' : 'alert' }, message));
  }

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    status.replaceChildren();
    if (!email.value.trim() || !password.value) {
      status.append(h('p', { class: 'callout callout-error', role: 'alert' }, 'Enter your email and password.'));
      (email.value.trim() ? password : email).focus();
      return;
    }
    submit.disabled = true;
    submit.textContent = 'Logging in…';
    try {
      const session = await admin('POST', '/admin/session', { email: email.value.trim(), password: password.value });
      password.value = '';
      onLoggedIn(session);
    } catch (error) {
      let text = error.message;
      if (error.status === 401) text = 'That email and password do not match an account.';
      else if (error.status === 429) text = `Too many login attempts. Try again in ${error.retryAfter || 60} seconds.`;
      else if (error.status === 0) text = 'The server could not be reached. Check your connection and try again.';
      status.append(h('p', { class: 'callout callout-error', role: 'alert' }, text));
      submit.disabled = false;
      submit.textContent = 'Log in';
      password.focus();
    }
  });

  replace(root,
    h('main', { id: 'main', class: 'login-page' },
      h('div', { class: 'login-card' },
        h('div', { class: 'login-brand' },
          h('span', { class: 'brand-mark', 'aria-hidden': 'true' }, 'W'),
          h('div', {},
            h('h1', {}, 'WizMessage console'),
            h('p', { class: 'muted' }, 'API keys, Playground and webhooks for your WhatsApp integrations.'))),
        form)));
  email.focus();
}
