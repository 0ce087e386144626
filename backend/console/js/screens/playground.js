// Playground: live `/v1` calls through the gateway with one of the account's keys. By default the
// user only selects a key: the console asks the backend for a short-lived Playground credential
// for it (POST /admin/keys/{id}/playground-credential) and sends that as the bearer; the gateway
// applies every check and limit of the key. A pasted key + secret is used instead when given.
// Credentials live in this module's memory only (never storage, never a URL) and are forgotten
// on reload. Each answer shows status, latency, headers (limit headers highlighted) and
// the JSON body; the same call is shown as curl / fetch / requests with the secret masked.

import { admin, items, v1 } from '../api.js';
import { h, add, replace, field, setFieldError, id, fmtNumber } from '../dom.js';
import { loadKeys } from '../data.js';
import { jsonView } from '../json.js';
import { snippets } from '../snippets.js';
import { codeTabs, callout, loading, errorBox } from '../ui.js';
import { planNotice } from './overview.js';

// In memory for as long as the page lives, so switching screens keeps what was pasted.
const memory = { keyId: '', key: '', secret: '', op: 'text', lastMessageId: '', credential: null };

// A credential is fetched again when less than this is left of it.
const CREDENTIAL_MARGIN_MS = 30_000;

/** The Playground credential for `keyId`, reusing the one in memory while it is fresh. */
async function playgroundCredential(keyId) {
  const held = memory.credential;
  if (held && held.keyId === keyId && held.expiresAt - Date.now() > CREDENTIAL_MARGIN_MS) return held.value;
  memory.credential = null;
  const answer = await admin('POST', `/admin/keys/${encodeURIComponent(keyId)}/playground-credential`);
  memory.credential = { keyId, value: answer.credential, expiresAt: Date.parse(answer.expires_at) };
  return answer.credential;
}

const LIMIT_HEADERS = new Set(['x-ratelimit-limit', 'x-ratelimit-remaining', 'x-ratelimit-reset', 'x-dailylimit-limit', 'x-dailylimit-remaining', 'retry-after', 'ratelimit', 'ratelimit-policy']);

const TEST_NUMBERS = 'Sandbox numbers: +15550000001 fails (recipient_unreachable), +15550000002 is delivered but never read, +15550000003 fails (not_on_whatsapp); any other valid number goes all the way to read.';

const HINTS = {
  missing_credentials: 'Select a key, or paste both the full API key and its secret.',
  malformed_credentials: 'The key must look like pk_live_… (40 characters) and the secret like sk_live_… (48 characters).',
  invalid_credentials: 'The key is unknown or the secret does not belong to it. Secrets are shown only once: if it is lost, rotate the key.',
  key_revoked: 'This key was revoked. Create a new key or use another active one.',
  key_expired: 'This key has expired. Rotate it or create a new key.',
  plan_required: 'The account’s plan does not include API access (Wiz Bot or Wiz Pro needed).',
  ip_not_allowed: 'Your IP address is not on this key’s whitelist. Edit the key to add it, or use a key without a whitelist.',
  rate_limited: 'This key used up its per-minute rate limit. Wait for the Retry-After time, or raise the limit on the API Keys screen.',
  daily_limit_exceeded: 'This key reached its daily limit. It resets at midnight UTC, or raise the limit on the API Keys screen.',
  too_many_failed_attempts: 'Too many failed authentications from your IP: wait before trying again.',
};

/** One operation of the API: how its form is built and how it becomes a request. */
const OPS = [
  {
    id: 'text',
    label: 'Send text',
    about: 'Send a plain text message to one phone number.',
    method: 'POST',
    path: () => '/v1/messages',
    fields: [
      { name: 'to', label: 'To (phone number in E.164)', type: 'tel', value: '+14155550101', hint: TEST_NUMBERS },
      { name: 'body', label: 'Message', type: 'textarea', value: 'Hello from the WizMessage Playground!' },
    ],
    body: (v) => ({ to: v.to, type: 'text', text: { body: v.body } }),
  },
  {
    id: 'template',
    label: 'Send template',
    about: 'Send an approved template; its {{variables}} are filled in per message.',
    method: 'POST',
    path: () => '/v1/messages',
    fields: [
      { name: 'to', label: 'To (phone number in E.164)', type: 'tel', value: '+14155550101' },
      { name: 'template', type: 'template' },
    ],
    body: (v) => ({ to: v.to, type: 'template', template: { name: v.template.name, language: v.template.language, variables: v.template.variables } }),
  },
  {
    id: 'bulk',
    label: 'Bulk send',
    about: 'One request, several recipients, each with their own variables. Counts as one request against the limits.',
    method: 'POST',
    path: () => '/v1/messages/bulk',
    fields: [
      { name: 'body', label: 'Message (use {{name}} for each recipient’s name)', type: 'textarea', value: 'Hi {{name}}, your order has shipped!' },
      { name: 'recipients', type: 'recipients' },
      { name: 'dry_run', label: 'Dry run: validate only, send nothing', type: 'checkbox', value: false },
    ],
    body: (v) => ({ type: 'text', text: { body: v.body }, recipients: v.recipients, dry_run: v.dry_run }),
  },
  {
    id: 'contacts',
    label: 'List contacts',
    about: 'Page through the account’s contacts, optionally filtered.',
    method: 'GET',
    path: (v) => {
      const q = new URLSearchParams();
      if (v.q) q.set('q', v.q);
      if (v.tag) q.set('tag', v.tag);
      if (v.limit) q.set('limit', v.limit);
      const text = q.toString();
      return `/v1/contacts${text ? `?${text}` : ''}`;
    },
    fields: [
      { name: 'q', label: 'Search (name or phone)', type: 'text', value: '', optional: true },
      { name: 'tag', label: 'Tag', type: 'text', value: '', optional: true },
      { name: 'limit', label: 'Page size (1–200)', type: 'number', value: '10', optional: true },
    ],
  },
  {
    id: 'flow',
    label: 'Trigger flow',
    about: 'Start a chatbot flow for a phone number.',
    method: 'POST',
    path: (v) => `/v1/chatbot/flows/${encodeURIComponent(v.flow || '{flow_id}')}/trigger`,
    fields: [
      { name: 'flow', type: 'flow' },
      { name: 'to', label: 'To (phone number in E.164)', type: 'tel', value: '+14155550101' },
      { name: 'variables', label: 'Variables', type: 'kv', value: [['name', 'Ada']] },
    ],
    body: (v) => ({ to: v.to, variables: v.variables }),
  },
  {
    id: 'inbound',
    label: 'Simulate inbound',
    about: 'Pretend a customer wrote to you: creates the contact if new, fires message.received, moves chatbot flows along.',
    method: 'POST',
    path: () => '/v1/sandbox/inbound',
    fields: [
      { name: 'from', label: 'From (customer’s phone number in E.164)', type: 'tel', value: '+14155550101' },
      { name: 'text', label: 'Message text', type: 'textarea', value: 'Hi! Where is my order?' },
    ],
    body: (v) => ({ from: v.from, text: v.text }),
  },
  {
    id: 'message',
    label: 'Message status',
    about: 'Look up a message and its status history (queued → sent → delivered → read).',
    method: 'GET',
    path: (v) => `/v1/messages/${encodeURIComponent(v.message_id || '{message_id}')}`,
    fields: [
      { name: 'message_id', label: 'Message id (msg_…)', type: 'text', value: '', fromMemory: 'lastMessageId' },
    ],
  },
];

const E164 = /^\+[1-9][0-9]{6,14}$/;

export function render(root, ctx) {
  add(root, h('div', { class: 'page-head' },
    h('h1', {}, 'Playground'),
    h('p', { class: 'lead' }, 'Send live API calls through the gateway with one of your keys, exactly as your integration will. Real limits apply and real webhooks fire.')));
  if (!ctx.apiAllowed) {
    add(root, planNotice(ctx), callout('info', 'The Playground is unavailable on this plan.', 'The gateway refuses every API call of an account on the Free plan (403 plan_required), so there is nothing to try here yet.'));
    return undefined;
  }
  const host = h('div', {}, loading('Loading your keys…'));
  add(root, host);
  let alive = true;
  loadKeys().then((keys) => {
    if (!alive) return;
    const active = keys.filter((k) => k.status === 'active');
    if (ctx.handOver) {
      memory.keyId = ctx.handOver.keyId || '';
      memory.key = ctx.handOver.key || '';
      memory.secret = ctx.handOver.secret || '';
      ctx.handOver = null;
    }
    if (!active.length && !memory.key) {
      replace(host, h('div', { class: 'empty' },
        h('h2', {}, 'Create a key first'),
        h('p', {}, 'The Playground calls the API with one of your active keys and its secret.'),
        h('a', { class: 'btn btn-primary', href: '#/keys' }, 'Go to API Keys')));
      return;
    }
    replace(host, workbench(ctx, keys, active, () => alive));
  }).catch((error) => {
    if (alive) replace(host, errorBox(error, 'Could not load the keys.'));
  });
  return () => { alive = false; };
}

function workbench(ctx, keys, active, isAlive) {
  // --- credentials -------------------------------------------------------------------------
  const keySelect = h('select', { 'data-testid': 'pg-key-select' },
    active.map((k) => h('option', { value: k.id }, `${k.name} (${k.prefix}…)`)));
  const keyInput = h('input', { type: 'text', class: 'mono', autocomplete: 'off', spellcheck: 'false', placeholder: 'pk_live_…', 'data-testid': 'pg-key' });
  const secretInput = h('input', { type: 'password', class: 'mono', autocomplete: 'off', spellcheck: 'false', placeholder: 'sk_live_…', 'data-testid': 'pg-secret' });
  const showSecret = h('button', { type: 'button', class: 'btn btn-small', 'aria-pressed': 'false' }, 'Show');
  const keyNote = h('p', { class: 'field-note', 'aria-live': 'polite', 'data-testid': 'pg-key-note' });
  const selectNote = h('p', { class: 'field-note', 'aria-live': 'polite', 'data-testid': 'pg-select-note' });

  keyInput.value = memory.key;
  secretInput.value = memory.secret;
  if (memory.keyId && active.some((k) => k.id === memory.keyId)) keySelect.value = memory.keyId;
  else if (memory.key) {
    const match = active.find((k) => memory.key.startsWith(k.prefix));
    if (match) keySelect.value = match.id;
  }

  function checkKey() {
    memory.key = keyInput.value.trim();
    memory.keyId = keySelect.value;
    const selected = active.find((k) => k.id === keySelect.value);
    keyNote.className = 'field-note';
    keyNote.textContent = '';
    selectNote.textContent = '';
    if (!memory.key) {
      selectNote.textContent = selected ? `Requests act as “${selected.name}” with a short-lived Playground credential: nothing to paste. Its limits apply and count.` : '';
      return;
    }
    const owner = keys.find((k) => k.prefix && memory.key.startsWith(k.prefix));
    if (owner && owner.status !== 'active') {
      keyNote.className = 'field-note note-warning';
      keyNote.textContent = `${owner.prefix}… is ${owner.status}: the gateway will refuse it (401 key_${owner.status === 'revoked' ? 'revoked' : 'expired'}).`;
    } else if (owner && owner.id !== keySelect.value) {
      keySelect.value = owner.id;
      memory.keyId = owner.id;
      keyNote.textContent = `Matches “${owner.name}”.`;
    } else if (!owner && /^pk_live_/.test(memory.key) && memory.key.length >= 12) {
      keyNote.className = 'field-note note-warning';
      keyNote.textContent = 'This key does not belong to this account: expect 401 invalid_credentials.';
    } else if (!/^pk_live_[A-Za-z0-9]{32}$/.test(memory.key)) {
      keyNote.className = 'field-note note-warning';
      keyNote.textContent = 'A full key is pk_live_ followed by 32 letters and digits.';
    } else {
      keyNote.textContent = `Matches “${owner.name}”.`;
    }
  }
  keySelect.addEventListener('change', () => {
    const selected = active.find((k) => k.id === keySelect.value);
    if (selected && keyInput.value && !keyInput.value.startsWith(selected.prefix)) {
      keyInput.value = '';
      secretInput.value = '';
      memory.secret = '';
    }
    checkKey();
    refreshSnippets();
  });
  keyInput.addEventListener('input', () => { checkKey(); refreshSnippets(); });
  secretInput.addEventListener('input', () => { memory.secret = secretInput.value.trim(); refreshSnippets(); });
  showSecret.addEventListener('click', () => {
    const shown = secretInput.type === 'text';
    secretInput.type = shown ? 'password' : 'text';
    showSecret.textContent = shown ? 'Show' : 'Hide';
    showSecret.setAttribute('aria-pressed', String(!shown));
  });
  checkKey();

  const secretId = id('pg-secret');
  secretInput.id = secretId;
  const credentials = h('section', { class: 'panel', 'aria-labelledby': 'pg-cred-title' },
    h('h2', { id: 'pg-cred-title' }, '1. Key'),
    active.length ? field({ label: 'API key', control: keySelect, error: selectNote }) : callout('warning', 'No active key.', 'Every key of this account is revoked or expired.'),
    h('h3', { class: 'subhead' }, 'Or paste a key and its secret (optional)'),
    field({ label: 'Full API key', control: keyInput, error: keyNote }),
    h('div', { class: 'field' },
      h('label', { for: secretId }, 'API secret'),
      h('div', { class: 'secret-line' }, secretInput, showSecret),
      h('p', { class: 'hint' }, 'Kept in this page’s memory only, like the Playground credential: never stored, never put in a URL, forgotten when you reload. Both are sent only to this console’s own /v1 API.')));

  // --- operation and its form ----------------------------------------------------------------
  const opGroupName = id('op');
  const opRadios = OPS.map((op) => {
    const input = h('input', { type: 'radio', name: opGroupName, value: op.id, checked: memory.op === op.id, 'data-testid': `pg-op-${op.id}` });
    return h('label', { class: 'seg' }, input, h('span', {}, op.label));
  });
  const opFieldset = h('fieldset', { class: 'segmented' }, h('legend', { class: 'sr-only' }, 'Operation'), opRadios);
  const formHost = h('div', {});
  const endpoint = h('p', { class: 'endpoint' });
  const sendBtn = h('button', { type: 'submit', class: 'btn btn-primary btn-send', 'data-testid': 'pg-send' }, 'Send request');
  const formErrors = h('div', { 'aria-live': 'polite' });
  const form = h('form', { class: 'form', novalidate: true }, formHost, formErrors, h('div', { class: 'send-row' }, endpoint, sendBtn));

  let currentForm = null;
  function buildForm() {
    const op = OPS.find((o) => o.id === memory.op) || OPS[0];
    currentForm = opForm(op, refreshSnippets, isAlive);
    replace(formHost, h('p', { class: 'muted' }, op.about), currentForm.el);
    formErrors.replaceChildren();
    refreshSnippets();
  }
  opFieldset.addEventListener('change', (e) => {
    if (e.target && e.target.name === opGroupName) {
      memory.op = e.target.value;
      buildForm();
      // The last answer belonged to another operation: don't let it pass for this one's.
      if (countdown) clearInterval(countdown);
      countdown = null;
      replace(responseHost, responsePlaceholder());
    }
  });

  const operation = h('section', { class: 'panel', 'aria-labelledby': 'pg-op-title' },
    h('h2', { id: 'pg-op-title' }, '2. Operation'),
    opFieldset,
    form);

  // --- request preview and response -----------------------------------------------------------
  const code = codeTabs([{ label: 'curl', text: '' }, { label: 'JavaScript', text: '' }, { label: 'Python', text: '' }], { testId: 'pg-snippet', label: 'The request as code' });
  const responsePlaceholder = () => h('p', { class: 'muted' }, 'Send a request to see the gateway’s answer here: status, latency, limit headers and body.');
  const responseHost = h('div', { 'data-testid': 'pg-response', 'aria-live': 'polite' }, responsePlaceholder());

  function request() {
    const op = OPS.find((o) => o.id === memory.op) || OPS[0];
    const values = currentForm ? currentForm.values() : {};
    return {
      op,
      method: op.method,
      path: op.path(values),
      body: op.body ? op.body(values) : undefined,
    };
  }
  function refreshSnippets() {
    if (!currentForm) return;
    const req = request();
    replace(endpoint, h('span', { class: `method method-${req.method.toLowerCase()}` }, req.method), ' ', h('code', {}, req.path));
    // Your integration sends the key and its secret, never a Playground credential.
    const selected = active.find((k) => k.id === keySelect.value);
    const shownKey = memory.key || (selected ? `${selected.prefix}…` : '');
    const s = snippets({ method: req.method, url: `${location.origin}${req.path}`, body: req.body, key: shownKey, secret: memory.secret });
    code.update([{ text: s.curl }, { text: s.javascript }, { text: s.python }]);
  }

  let countdown = null;
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    formErrors.replaceChildren();
    const problems = [];
    if (memory.key && !memory.secret) problems.push(['Paste the API secret too, or clear the pasted key to use the selected one.', secretInput]);
    if (!memory.key && !keySelect.value) problems.push(['Select a key.', keySelect]);
    const formProblems = currentForm.validate();
    problems.push(...formProblems);
    if (problems.length) {
      replace(formErrors, h('div', { class: 'callout callout-error', role: 'alert' },
        h('strong', {}, 'Not sent yet: '), h('ul', {}, problems.map(([m]) => h('li', {}, m)))));
      problems[0][1].focus();
      return;
    }
    const req = request();
    sendBtn.disabled = true;
    sendBtn.textContent = 'Sending…';
    let result;
    if (memory.key) {
      result = await v1({ method: req.method, path: req.path, body: req.body, key: memory.key, secret: memory.secret });
    } else {
      try {
        const credential = await playgroundCredential(keySelect.value);
        result = await v1({ method: req.method, path: req.path, body: req.body, credential });
        // Rotated or revoked since: the next send asks for a fresh one.
        if (result.status === 401) memory.credential = null;
      } catch (error) {
        sendBtn.disabled = false;
        sendBtn.textContent = 'Send request';
        replace(formErrors, errorBox(error, 'Could not get a Playground credential for this key.'));
        return;
      }
    }
    sendBtn.disabled = false;
    sendBtn.textContent = 'Send request';
    if (result.ok) ctx.playgroundUsed = true;
    if (result.json && typeof result.json.id === 'string' && result.json.id.startsWith('msg_')) memory.lastMessageId = result.json.id;
    if (countdown) clearInterval(countdown);
    countdown = null;
    const view = responseView(req, result);
    replace(responseHost, view.el);
    countdown = view.timer;
  });

  const layout = h('div', { class: 'playground' },
    h('div', { class: 'pg-left' }, credentials, operation),
    h('div', { class: 'pg-right' },
      h('section', { class: 'panel', 'aria-labelledby': 'pg-res-title' }, h('h2', { id: 'pg-res-title' }, '3. Response'), responseHost),
      h('section', { class: 'panel', 'aria-labelledby': 'pg-code-title' },
        h('h2', { id: 'pg-code-title' }, 'The same call in code'),
        h('p', { class: 'muted small' }, 'The secret is masked; load it from your server’s secret store, never from frontend code.'),
        code.el)));
  buildForm();
  return layout;
}

/** The form of one operation: { el, values(), validate() -> [[message, control]] }. */
function opForm(op, onChange, isAlive) {
  const getters = [];
  const validators = [];
  const el = h('div', { class: 'op-form' });
  for (const f of op.fields) {
    if (f.type === 'template') {
      const t = templatePicker(onChange, isAlive);
      el.append(t.el);
      getters.push(() => ['template', t.value()]);
      validators.push(t.validate);
    } else if (f.type === 'flow') {
      const fl = flowPicker(onChange, isAlive);
      el.append(fl.el);
      getters.push(() => ['flow', fl.value()]);
      validators.push(fl.validate);
    } else if (f.type === 'recipients') {
      const r = recipientsEditor(onChange);
      el.append(r.el);
      getters.push(() => ['recipients', r.value()]);
      validators.push(r.validate);
    } else if (f.type === 'kv') {
      const kv = kvEditor(f.label, f.value, onChange);
      el.append(kv.el);
      getters.push(() => [f.name, kv.value()]);
    } else if (f.type === 'checkbox') {
      const box = h('input', { type: 'checkbox', checked: Boolean(f.value), 'data-testid': `pg-${f.name}` });
      box.addEventListener('change', onChange);
      el.append(h('label', { class: 'check' }, box, ' ', f.label));
      getters.push(() => [f.name, box.checked]);
    } else {
      const control = f.type === 'textarea'
        ? h('textarea', { rows: '3', 'data-testid': `pg-${f.name}` })
        : h('input', { type: f.type === 'tel' ? 'tel' : f.type, autocomplete: 'off', spellcheck: 'false', 'data-testid': `pg-${f.name}`, ...(f.type === 'number' ? { min: '1', max: '200' } : {}) });
      control.value = f.fromMemory ? memory[f.fromMemory] || f.value : f.value;
      control.addEventListener('input', () => {
        setFieldError(control, null);
        onChange();
      });
      el.append(field({ label: f.label, control, hint: f.hint }));
      getters.push(() => [f.name, control.value.trim()]);
      validators.push(() => {
        const v = control.value.trim();
        let msg = null;
        if (!v && !f.optional) msg = `${f.label.replace(/ \(.*/, '')} is required.`;
        else if (v && f.type === 'tel' && !E164.test(v)) msg = `${v} is not an E.164 phone number (like +14155550101).`;
        if (msg) setFieldError(control, msg);
        return msg ? [[msg, control]] : [];
      });
    }
  }
  return {
    el,
    values: () => Object.fromEntries(getters.map((g) => g())),
    validate: () => validators.flatMap((v) => v()),
  };
}

function kvEditor(label, initial, onChange) {
  const rows = h('div', { class: 'kv-rows' });
  function add(k = '', v = '') {
    const key = h('input', { type: 'text', value: k, 'aria-label': 'Variable name', placeholder: 'name', spellcheck: 'false' });
    const val = h('input', { type: 'text', value: v, 'aria-label': 'Variable value', placeholder: 'value' });
    const rm = h('button', { type: 'button', class: 'icon-btn', 'aria-label': 'Remove variable' }, '×');
    const row = h('div', { class: 'kv-row' }, key, val, rm);
    key.addEventListener('input', onChange);
    val.addEventListener('input', onChange);
    rm.addEventListener('click', () => { row.remove(); onChange(); });
    rows.append(row);
    return key;
  }
  (initial || []).forEach(([k, v]) => add(k, v));
  const addBtn = h('button', { type: 'button', class: 'btn btn-small' }, '+ Add variable');
  addBtn.addEventListener('click', () => { add().focus(); onChange(); });
  return {
    el: h('fieldset', { class: 'fieldset' }, h('legend', {}, label), rows, addBtn),
    value: () => Object.fromEntries([...rows.children].map((r) => {
      const [k, v] = r.querySelectorAll('input');
      return [k.value.trim(), v.value];
    }).filter(([k]) => k)),
    setKeys(names, samples = {}) {
      rows.replaceChildren();
      names.forEach((n) => add(n, samples[n] || ''));
    },
  };
}

function templatePicker(onChange, isAlive) {
  const select = h('select', { 'data-testid': 'pg-template-select' }, h('option', { value: '' }, 'Loading templates…'));
  const name = h('input', { type: 'text', spellcheck: 'false', placeholder: 'order_update', 'data-testid': 'pg-template-name' });
  const language = h('input', { type: 'text', spellcheck: 'false', value: 'en', 'data-testid': 'pg-template-language' });
  const preview = h('p', { class: 'template-preview muted' });
  const vars = kvEditor('Variables', [], onChange);
  let templates = [];
  function pick() {
    const t = templates.find((x) => String(x.id || x.name) === select.value);
    if (!t) return;
    name.value = t.name || '';
    language.value = t.language || 'en';
    const found = Array.isArray(t.variables)
      ? t.variables
      : [...new Set([...(t.body || '').matchAll(/\{\{\s*([A-Za-z0-9_.-]+)\s*\}\}/g)].map((m) => m[1]))];
    vars.setKeys(found, SAMPLE_VALUES);
    preview.textContent = t.body ? `“${t.body}”` : '';
    onChange();
  }
  select.addEventListener('change', pick);
  name.addEventListener('input', onChange);
  language.addEventListener('input', onChange);
  // Templates come from the admin API, so loading them spends none of the key's requests.
  admin('GET', '/admin/templates').then((data) => {
    if (!isAlive()) return;
    templates = items(data);
    replace(select, 
      h('option', { value: '' }, templates.length ? 'Choose a template…' : 'No templates yet: type a name below'),
      templates.map((t) => h('option', { value: String(t.id || t.name) }, `${t.name} (${t.language || 'en'})`)));
    if (templates.length) {
      select.value = String(templates[0].id || templates[0].name);
      pick();
    }
  }).catch(() => {
    replace(select, h('option', { value: '' }, 'Templates could not be loaded: type a name below'));
  });
  return {
    el: h('div', {},
      field({ label: 'Template', control: select }),
      preview,
      h('div', { class: 'field-pair' },
        field({ label: 'Template name', control: name }),
        field({ label: 'Language', control: language })),
      vars.el),
    value: () => ({ name: name.value.trim(), language: language.value.trim(), variables: vars.value() }),
    validate: () => {
      if (name.value.trim()) return [];
      setFieldError(name, 'Choose or type a template name.');
      return [['Choose or type a template name.', name]];
    },
  };
}

function flowPicker(onChange, isAlive) {
  const select = h('select', { 'data-testid': 'pg-flow-select' }, h('option', { value: '' }, 'Loading flows…'));
  // Typing an id is only offered when the account's flows cannot be listed.
  const manual = h('input', { type: 'text', spellcheck: 'false', placeholder: 'flw_…', 'data-testid': 'pg-flow-id' });
  const manualField = field({ label: 'Flow id', control: manual });
  manualField.hidden = true;
  const steps = h('p', { class: 'muted small' });
  let flows = [];
  function pick() {
    manual.value = select.value;
    const f = flows.find((x) => x.id === select.value);
    steps.textContent = f ? `Starts at step “${f.start}”${f.keywords && f.keywords.length ? `; customers can also start it by writing ${f.keywords.map((k) => `“${k}”`).join(' or ')}` : ''}.` : '';
    onChange();
  }
  select.addEventListener('change', pick);
  manual.addEventListener('input', onChange);
  admin('GET', '/admin/flows').then((data) => {
    if (!isAlive()) return;
    flows = items(data);
    replace(select,
      h('option', { value: '' }, flows.length ? 'Choose a flow…' : 'No chatbot flows in this account yet'),
      flows.map((f) => h('option', { value: f.id }, f.name || f.id)));
    if (flows.length) {
      select.value = flows[0].id;
      pick();
    }
  }).catch(() => {
    replace(select, h('option', { value: '' }, 'Flows could not be loaded'));
    manualField.hidden = false;
  });
  return {
    el: h('div', {}, field({ label: 'Flow', control: select }), steps, manualField),
    value: () => manual.value.trim(),
    validate: () => {
      if (manual.value.trim()) return [];
      setFieldError(select, 'Choose a flow.');
      return [['Choose a flow.', manualField.hidden ? select : manual]];
    },
  };
}

// Plausible values for the example templates' variables, so a first send reads naturally.
const SAMPLE_VALUES = { name: 'Ada', order: 'A-1001', company: 'Acme Store', code: '428913', date: 'June 4', time: '10:30' };

const SAMPLE_RECIPIENTS = [
  ['+14155550101', 'Ada', 'crm-1'],
  ['+14155550102', 'Grace', 'crm-2'],
  ['+15550000002', 'Linus', 'crm-3'],
];

function recipientsEditor(onChange) {
  const body = h('tbody', {});
  const MAX = 10;
  const addBtn = h('button', { type: 'button', class: 'btn btn-small' }, '+ Add recipient');
  function add([to, name, ref] = ['', '', '']) {
    const n = body.children.length + 1;
    const toIn = h('input', { type: 'tel', value: to, 'aria-label': `Recipient ${n} phone`, placeholder: '+1…', spellcheck: 'false' });
    const nameIn = h('input', { type: 'text', value: name, 'aria-label': `Recipient ${n} name` });
    const refIn = h('input', { type: 'text', value: ref, 'aria-label': `Recipient ${n} reference`, spellcheck: 'false' });
    const rm = h('button', { type: 'button', class: 'icon-btn', 'aria-label': `Remove recipient ${n}` }, '×');
    [toIn, nameIn, refIn].forEach((i) => i.addEventListener('input', onChange));
    const row = h('tr', {}, h('td', {}, toIn), h('td', {}, nameIn), h('td', {}, refIn), h('td', {}, rm));
    rm.addEventListener('click', () => { row.remove(); addBtn.disabled = false; onChange(); });
    body.append(row);
    addBtn.disabled = body.children.length >= MAX;
    return toIn;
  }
  SAMPLE_RECIPIENTS.forEach((r) => add(r));
  addBtn.addEventListener('click', () => { add().focus(); onChange(); });
  return {
    el: h('fieldset', { class: 'fieldset' },
      h('legend', {}, `Recipients (up to ${MAX} here; the API takes 10,000)`),
      h('div', { class: 'table-scroll' }, h('table', { class: 'table table-compact table-inputs' },
        h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Phone'), h('th', { scope: 'col' }, 'name'), h('th', { scope: 'col' }, 'Reference'), h('th', { scope: 'col' }, h('span', { class: 'sr-only' }, 'Remove')))),
        body)),
      addBtn),
    value: () => [...body.children].map((row) => {
      const [to, name, ref] = row.querySelectorAll('input');
      const r = { to: to.value.trim(), variables: { name: name.value } };
      if (ref.value.trim()) r.reference = ref.value.trim();
      return r;
    }),
    validate: () => {
      const rows = [...body.children];
      if (!rows.length) return [['Add at least one recipient.', addBtn]];
      const bad = rows.map((row) => row.querySelector('input')).filter((i) => !E164.test(i.value.trim()));
      return bad.map((i) => [`Recipient phone “${i.value}” is not E.164 (like +14155550101).`, i]);
    },
  };
}

function statusKind(status) {
  if (status >= 200 && status < 300) return 'success';
  if (status === 429) return 'warning';
  if (status >= 400) return 'danger';
  return 'muted';
}

/** The answer: status, latency, a plain 429 notice, limits, headers, body. */
function responseView(req, res) {
  const headers = new Map(res.headers);
  const err = res.json && res.json.error ? res.json.error : null;
  const parts = [];
  parts.push(h('div', { class: 'res-status' },
    h('span', { class: ['status-pill', `status-${statusKind(res.status)}`], 'data-testid': 'pg-status' }, res.status ? `${res.status} ${res.statusText || ''}`.trim() : 'No answer'),
    h('span', { class: 'res-meta' }, `${Math.round(res.latencyMs)} ms`),
    h('span', { class: 'res-meta mono' }, `${req.method} ${req.path}`),
    headers.get('x-request-id') ? h('span', { class: 'res-meta mono', title: 'Request id: quote it when asking for support' }, headers.get('x-request-id')) : null));

  let timer = null;
  if (res.status === 429) {
    const retry = Number(headers.get('retry-after'));
    const remaining = h('strong', { 'data-testid': 'pg-retry-after' }, Number.isFinite(retry) ? `${retry} seconds` : 'a moment');
    const code = err && err.code ? err.code : 'rate_limited';
    parts.push(h('div', { class: 'callout callout-warning retry-box', role: 'alert' },
      h('p', { class: 'retry-title' }, code === 'daily_limit_exceeded' ? 'Daily limit reached.' : 'Rate limit reached.', ' Retry after ', remaining, '.'),
      h('p', {}, `Retry-After: ${headers.get('retry-after') ?? '—'} (${code}). `, HINTS[code] || '')));
    if (Number.isFinite(retry) && retry > 0) {
      let left = retry;
      timer = setInterval(() => {
        left -= 1;
        if (!remaining.isConnected || left <= 0) {
          clearInterval(timer);
          if (remaining.isConnected) remaining.textContent = '0 seconds — you can send again';
          return;
        }
        remaining.textContent = `${left} seconds`;
      }, 1000);
    }
  } else if (err) {
    parts.push(h('div', { class: 'callout callout-error', role: 'alert' },
      h('p', {}, h('strong', {}, err.code || 'error'), ': ', err.message || ''),
      HINTS[err.code] ? h('p', {}, HINTS[err.code]) : null));
  } else if (res.status === 0) {
    parts.push(errorBox(new Error(res.text || 'The request did not reach the gateway.'), 'Network error.'));
  }

  const limits = limitSummary(headers);
  if (limits) parts.push(limits);

  const headerRows = res.headers
    .slice()
    .sort(([a], [b]) => Number(LIMIT_HEADERS.has(b)) - Number(LIMIT_HEADERS.has(a)) || a.localeCompare(b))
    .map(([name, value]) => h('tr', { class: LIMIT_HEADERS.has(name) ? 'hl' : null },
      h('th', { scope: 'row', class: 'mono' }, name),
      h('td', { class: 'mono' }, value)));
  parts.push(h('details', { class: 'res-headers', open: true },
    h('summary', {}, `Response headers (${res.headers.length})`, h('span', { class: 'legend' }, h('span', { class: 'legend-swatch', 'aria-hidden': 'true' }), 'limit headers')),
    h('div', { class: 'table-scroll' }, h('table', { class: 'table table-compact headers-table', 'data-testid': 'pg-headers' }, h('tbody', {}, headerRows)))));

  parts.push(h('h3', { class: 'res-body-title' }, 'Body'));
  if (res.json !== null) parts.push(jsonView(res.json, { 'data-testid': 'pg-response-body' }));
  else parts.push(h('pre', { class: 'code', 'data-testid': 'pg-response-body' }, h('code', {}, res.text || '(empty)')));
  return { el: h('div', { class: 'response' }, parts), timer };
}

function limitSummary(headers) {
  const minLimit = headers.get('x-ratelimit-limit');
  const dayLimit = headers.get('x-dailylimit-limit');
  if (!minLimit && !dayLimit) return null;
  const items2 = [];
  if (minLimit) {
    const left = headers.get('x-ratelimit-remaining');
    const reset = headers.get('x-ratelimit-reset');
    const secs = Number(reset);
    items2.push(limitItem('This minute', left, minLimit, secs > 0 ? `window resets in ${secs} s` : 'nothing counted in this window yet'));
  }
  if (dayLimit) {
    items2.push(limitItem('Today (UTC)', headers.get('x-dailylimit-remaining'), dayLimit, 'resets at midnight UTC'));
  }
  return h('div', { class: 'limit-summary', 'data-testid': 'pg-limits' }, items2);
}

function limitItem(label, left, limit, sub) {
  const l = Number(left);
  const m = Number(limit);
  const low = Number.isFinite(l) && Number.isFinite(m) && m > 0 && l / m < 0.2;
  return h('div', { class: ['limit-item', low && 'limit-low'] },
    h('span', { class: 'limit-label' }, label),
    h('span', { class: 'limit-value' }, `${fmtNumber(l)} of ${fmtNumber(m)} left`),
    sub ? h('span', { class: 'limit-sub' }, sub) : null);
}
