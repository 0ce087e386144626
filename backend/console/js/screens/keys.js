// API Keys: the account's keys with limits, whitelist and today's usage; create (defaults of the
// brief: 60/min, 1000/day), edit, rotate and revoke. A new key's secret is shown once, here only.

import { admin } from '../api.js';
import { h, add, replace, field, setFieldError, fmtDate, fmtDay, fmtRelative, fmtNumber, badge } from '../dom.js';
import { loadKeys } from '../data.js';
import { ipEntryError } from '../ip.js';
import { openDialog, confirmDialog, toast, secretRow, onceWarning, loading, errorBox } from '../ui.js';
import { planNotice, keyTip } from './overview.js';

const DEFAULT_RATE = 60;
const DEFAULT_DAILY = 1000;

export function render(root, ctx) {
  const tableHost = h('div', { class: 'table-host' }, loading('Loading keys…'));
  const createBtn = h('button', { type: 'button', class: 'btn btn-primary', 'data-testid': 'create-key' }, '+ Create API key');
  createBtn.addEventListener('click', () => keyDialog(ctx, null, refresh));

  add(root,
    h('div', { class: 'page-head page-head-row' },
      h('div', {},
        h('h1', {}, 'API Keys'),
        h('p', { class: 'lead' }, 'Each key has its own per-minute rate limit, daily limit and optional IP whitelist. Changes reach every gateway within a second.')),
      ctx.apiAllowed ? createBtn : null),
    ctx.apiAllowed ? null : planNotice(ctx),
    tableHost,
    keyTip());

  let alive = true;
  async function refresh() {
    try {
      const keys = await loadKeys();
      if (!alive) return;
      replace(tableHost, keys.length ? keyTable(keys, ctx, refresh) : emptyState(ctx, createBtn));
    } catch (error) {
      if (alive) replace(tableHost, errorBox(error, 'Could not load the keys.'));
    }
  }
  refresh();
  return () => { alive = false; };
}

function emptyState(ctx, createBtn) {
  return h('div', { class: 'empty' },
    h('h2', {}, 'No API keys yet'),
    ctx.apiAllowed
      ? [h('p', {}, 'Create a key to let your store, CRM or helpdesk call the WizMessage API. You will see its secret once, right after creating it.'),
        (() => {
          const b = h('button', { type: 'button', class: 'btn btn-primary' }, 'Create your first key');
          b.addEventListener('click', () => createBtn.click());
          return b;
        })()]
      : h('p', {}, 'Keys can be created once the account is on Wiz Bot or Wiz Pro.'));
}

function statusBadge(status) {
  const kind = status === 'active' ? 'success' : status === 'revoked' ? 'danger' : 'muted';
  return badge(status.charAt(0).toUpperCase() + status.slice(1), kind);
}

export function usageMeter(used, limit) {
  const pct = limit ? Math.min(100, (used / limit) * 100) : 0;
  const fill = h('span', { class: 'meter-fill' });
  fill.style.setProperty('width', `${pct}%`);
  const level = pct >= 100 ? 'full' : pct >= 80 ? 'high' : 'ok';
  return h('div', { class: ['meter-wrap', `meter-${level}`] },
    h('div', { class: 'meter', role: 'meter', 'aria-valuemin': '0', 'aria-valuemax': String(limit || 0), 'aria-valuenow': String(used), 'aria-label': `Requests today: ${used} of ${limit || '?'}` }, fill),
    h('span', { class: 'meter-text' }, `${fmtNumber(used)} / ${fmtNumber(limit)}`));
}

function keyTable(keys, ctx, refresh) {
  const rows = keys.map((k) => {
    const actions = [];
    if (k.status === 'active') {
      const edit = h('button', { type: 'button', class: 'btn btn-small', 'aria-label': `Edit ${k.name}` }, 'Edit');
      edit.addEventListener('click', () => keyDialog(ctx, k, refresh));
      actions.push(edit);
      if (ctx.apiAllowed) {
        const rotate = h('button', { type: 'button', class: 'btn btn-small', 'aria-label': `Rotate ${k.name}` }, 'Rotate');
        rotate.addEventListener('click', () => rotateKey(ctx, k, refresh));
        actions.push(rotate);
      }
      const revoke = h('button', { type: 'button', class: 'btn btn-small btn-danger-ghost', 'aria-label': `Revoke ${k.name}` }, 'Revoke');
      revoke.addEventListener('click', () => revokeKey(k, refresh));
      actions.push(revoke);
    }
    // Each cell's content sits in one wrapper so the phone layout (label | value grid) keeps
    // multi-line values together.
    const cell = (label, ...content) => h('td', { 'data-label': label }, h('div', { class: 'cell' }, content));
    return h('tr', { 'data-key-id': k.id, class: k.status !== 'active' ? 'row-inactive' : null },
      cell('Name',
        h('span', { class: 'key-name' }, k.name),
        h('span', { class: 'key-created', title: fmtDate(k.createdAt) }, `Created ${fmtDay(k.createdAt)}`),
        k.raw.previous_valid_until ? h('span', { class: 'key-grace' }, `Old key valid until ${fmtDate(k.raw.previous_valid_until)}`) : null),
      cell('Key', h('code', { class: 'key-prefix' }, `${k.prefix}…`)),
      cell('Status', statusBadge(k.status)),
      cell('Limits',
        h('span', { class: 'nowrap limit-line' }, `${fmtNumber(k.ratePerMinute)}/min`),
        h('span', { class: 'nowrap limit-line muted' }, `${fmtNumber(k.dailyLimit)}/day`)),
      cell('Whitelist',
        k.whitelist.length
          ? h('ul', { class: 'chips' }, k.whitelist.map((ip) => h('li', { class: 'chip mono' }, ip)))
          : h('span', { class: 'muted' }, 'Any IP')),
      cell('Last used', h('span', { class: 'nowrap', title: fmtDate(k.lastUsedAt) }, fmtRelative(k.lastUsedAt))),
      cell('Today', usageMeter(k.today, k.dailyLimit)),
      h('td', { class: 'actions' }, h('div', { class: 'btn-row' }, actions)));
  });
  return h('div', { class: 'table-scroll' },
    h('table', { class: 'table keys-table', 'data-testid': 'keys-table' },
      h('caption', { class: 'sr-only' }, 'API keys of this account'),
      h('thead', {}, h('tr', {},
        ['Name', 'Key', 'Status', 'Limits', 'Whitelist', 'Last used', 'Today'].map((t) => h('th', { scope: 'col' }, t)),
        h('th', { scope: 'col' }, h('span', { class: 'sr-only' }, 'Actions')))),
      h('tbody', {}, rows)));
}

/** Rows of IP/CIDR inputs, each checked as the user types. */
function whitelistEditor(initial, onChange) {
  const list = h('ul', { class: 'wl-rows' });
  const empty = h('p', { class: 'hint wl-empty' }, 'Empty list: calls are accepted from any IP address.');
  const addBtn = h('button', { type: 'button', class: 'btn btn-small' }, '+ Add IP or CIDR');
  let n = 0;

  function check(input) {
    const err = input.value.trim() === '' && document.activeElement === input ? null : ipEntryError(input.value);
    setFieldError(input, err);
    return !ipEntryError(input.value);
  }

  function addRow(value = '', focus = false) {
    n += 1;
    const input = h('input', { type: 'text', class: 'mono', value, spellcheck: 'false', autocomplete: 'off', placeholder: 'e.g. 203.0.113.7 or 198.51.100.0/24', 'data-testid': 'whitelist-entry' });
    input.id = `wl-${Date.now()}-${n}`;
    const remove = h('button', { type: 'button', class: 'icon-btn', 'aria-label': 'Remove this entry' }, '×');
    const err = h('p', { class: 'field-error', id: `${input.id}-error`, 'aria-live': 'polite' });
    input.setAttribute('aria-label', 'IP address or CIDR block');
    input.setAttribute('aria-describedby', err.id);
    const row = h('li', { class: 'wl-row' }, h('div', { class: 'wl-line' }, input, remove), err);
    input.addEventListener('input', () => { check(input); onChange(); });
    input.addEventListener('blur', () => { check(input); onChange(); });
    remove.addEventListener('click', () => {
      const next = row.nextElementSibling || row.previousElementSibling;
      row.remove();
      sync();
      onChange();
      (next ? next.querySelector('input') : addBtn).focus();
    });
    list.append(row);
    sync();
    if (value) check(input);
    if (focus) input.focus();
  }

  function sync() {
    empty.hidden = list.children.length > 0;
  }

  addBtn.addEventListener('click', () => { addRow('', true); onChange(); });
  initial.forEach((v) => addRow(v));
  sync();

  const el = h('fieldset', { class: 'fieldset wl' },
    h('legend', {}, 'IP whitelist'),
    h('p', { class: 'hint' }, 'IPv4 or IPv6 addresses and CIDR blocks. Calls from anywhere else are refused with 403 ip_not_allowed.'),
    list, empty, addBtn);

  return {
    el,
    values: () => [...list.querySelectorAll('input')].map((i) => i.value.trim()).filter(Boolean),
    valid: () => [...list.querySelectorAll('input')].every((i) => i.value.trim() === '' || !ipEntryError(i.value)),
    revealErrors: () => [...list.querySelectorAll('input')].forEach((i) => { if (i.value.trim() !== '') check(i); }),
  };
}

function positiveInt(value) {
  return /^[1-9][0-9]{0,8}$/.test(String(value).trim());
}

/** Create (key === null) or edit a key. */
function keyDialog(ctx, key, refresh) {
  const editing = Boolean(key);
  const name = h('input', { type: 'text', value: editing ? key.name : '', maxlength: '100', required: true, autocomplete: 'off', 'data-testid': 'key-name' });
  const rate = h('input', { type: 'number', min: '1', step: '1', inputmode: 'numeric', value: String(editing ? key.ratePerMinute ?? DEFAULT_RATE : DEFAULT_RATE), required: true, 'data-testid': 'key-rate' });
  const daily = h('input', { type: 'number', min: '1', step: '1', inputmode: 'numeric', value: String(editing ? key.dailyLimit ?? DEFAULT_DAILY : DEFAULT_DAILY), required: true, 'data-testid': 'key-daily' });
  const status = h('div', { 'aria-live': 'polite' });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary', 'data-testid': 'key-submit' }, editing ? 'Save changes' : 'Create key');
  const cancel = h('button', { type: 'button', class: 'btn' }, 'Cancel');
  const wl = whitelistEditor(editing ? key.whitelist : [], update);

  function errors() {
    return {
      name: name.value.trim() ? null : 'Give the key a name, e.g. the system that will use it.',
      rate: positiveInt(rate.value) ? null : 'A whole number of requests per minute, at least 1.',
      daily: positiveInt(daily.value) ? null : 'A whole number of requests per day, at least 1.',
    };
  }
  function update() {
    const e = errors();
    submit.disabled = Boolean(e.name || e.rate || e.daily) || !wl.valid();
  }
  function reveal(control, message) {
    setFieldError(control, message);
  }
  name.addEventListener('input', () => { reveal(name, errors().name); update(); });
  rate.addEventListener('input', () => { reveal(rate, errors().rate); update(); });
  daily.addEventListener('input', () => { reveal(daily, errors().daily); update(); });

  const form = h('form', { class: 'form', novalidate: true },
    field({ label: 'Name', control: name, hint: 'Where the key is used, e.g. “Shopify store” or “Helpdesk”.' }),
    h('div', { class: 'field-pair' },
      field({ label: 'Rate limit (requests per minute)', control: rate, hint: `Default ${DEFAULT_RATE}.` }),
      field({ label: 'Daily limit (requests per UTC day)', control: daily, hint: `Default ${DEFAULT_DAILY}. A hard cap.` })),
    wl.el,
    status);

  const dlg = openDialog({
    title: editing ? `Edit key “${key.name}”` : 'Create API key',
    description: editing
      ? `Key ${key.prefix}…. New limits and whitelist reach every gateway within a second.`
      : 'The key and its secret are shown once after creation. Only a SHA-256 hash of each is stored.',
    content: form,
    actions: [cancel, submit],
    wide: true,
  });
  // The submit button lives in the footer, outside the <form>: tie it to the form by id.
  form.id = `form-${Date.now()}`;
  submit.setAttribute('form', form.id);
  cancel.addEventListener('click', () => dlg.close());
  update();

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const errs = errors();
    reveal(name, errs.name);
    reveal(rate, errs.rate);
    reveal(daily, errs.daily);
    wl.revealErrors();
    if (errs.name || errs.rate || errs.daily || !wl.valid()) return;
    const body = {
      name: name.value.trim(),
      rate_limit_per_minute: Number(rate.value),
      daily_limit: Number(daily.value),
      ip_whitelist: wl.values(),
    };
    submit.disabled = true;
    status.replaceChildren();
    try {
      if (editing) {
        await admin('PATCH', `/admin/keys/${encodeURIComponent(key.id)}`, body);
        dlg.close();
        toast(`Key “${body.name}” saved. Gateways apply the change within a second.`, 'success');
        refresh();
      } else {
        const created = await admin('POST', '/admin/keys', body);
        dlg.close();
        refresh();
        showCredentials(ctx, created, { title: 'Your new API key', name: body.name });
      }
    } catch (error) {
      replace(status, errorBox(error, editing ? 'The key was not saved.' : 'The key was not created.'));
      submit.disabled = false;
    }
  });
}

/** The key + secret from a create or rotate answer. */
function credentialsOf(answer) {
  const a = answer || {};
  const nested = a.api_key && typeof a.api_key === 'object' ? a.api_key : {};
  const keyRecord = a.key && typeof a.key === 'object' ? a.key : {};
  return {
    key: [a.key, a.api_key, nested.key, keyRecord.key, a.full_key].find((v) => typeof v === 'string') || '',
    secret: [a.secret, a.api_secret, nested.secret, keyRecord.secret].find((v) => typeof v === 'string') || '',
    id: a.id || nested.id || keyRecord.id || null,
  };
}

function showCredentials(ctx, answer, { title, name }) {
  const creds = credentialsOf(answer);
  const done = h('button', { type: 'button', class: 'btn btn-primary', 'data-testid': 'credentials-done' }, 'I have stored the secret — close');
  const tryIt = ctx.apiAllowed ? h('button', { type: 'button', class: 'btn' }, 'Try it in the Playground') : null;
  const dlg = openDialog({
    title,
    content: [
      onceWarning('Copy the secret now and keep it in a password manager or your server’s secret store. WizMessage keeps only a SHA-256 hash, so this secret can never be shown again. If it is lost, rotate the key.'),
      h('p', { class: 'muted' }, 'Key ', h('strong', {}, name), '. Send both with every request: ',
        h('code', {}, 'Authorization: Bearer <key>'), ' and ', h('code', {}, 'X-Api-Secret: <secret>'), '.'),
      secretRow({ label: 'API key', value: creds.key, testId: 'new-key' }),
      secretRow({ label: 'API secret', value: creds.secret, testId: 'new-secret' }),
    ],
    actions: [tryIt, done],
    className: 'dialog-credentials',
    wide: true,
  });
  done.addEventListener('click', () => dlg.close());
  if (tryIt) {
    tryIt.addEventListener('click', () => {
      // Handed to the Playground in memory only; gone on reload.
      ctx.handOver = { keyId: creds.id, key: creds.key, secret: creds.secret };
      dlg.close();
      ctx.go('playground');
    });
  }
}

async function revokeKey(key, refresh) {
  const ok = await confirmDialog({
    title: `Revoke “${key.name}” (${key.prefix}…)?`,
    message: `Every gateway refuses ${key.prefix}… within a second (401 key_revoked). Applications still using it stop working. This cannot be undone.`,
    confirmLabel: 'Revoke key',
    danger: true,
  });
  if (!ok) return;
  try {
    await admin('POST', `/admin/keys/${encodeURIComponent(key.id)}/revoke`);
    toast(`Key “${key.name}” revoked.`, 'success');
  } catch (error) {
    toast(`Could not revoke the key: ${error.message}`, 'error');
  }
  refresh();
}

async function rotateKey(ctx, key, refresh) {
  const grace = h('select', {},
    [[0, 'Immediately'], [300, 'After 5 minutes'], [3600, 'After 1 hour'], [86400, 'After 24 hours']]
      .map(([v, t]) => h('option', { value: String(v) }, t)));
  const ok = await confirmDialog({
    title: `Rotate “${key.name}” (${key.prefix}…)?`,
    message: 'Rotation issues a new key and secret, shown once. Choose how long the old pair keeps working so you can roll the new one out first.',
    confirmLabel: 'Rotate key',
    extra: field({ label: 'Old key stops working', control: grace }),
  });
  if (!ok) return;
  try {
    const answer = await admin('POST', `/admin/keys/${encodeURIComponent(key.id)}/rotate`, { grace_seconds: Number(grace.value) });
    refresh();
    showCredentials(ctx, answer, { title: 'Rotated: your new key and secret', name: key.name });
  } catch (error) {
    toast(`Could not rotate the key: ${error.message}`, 'error');
    refresh();
  }
}
