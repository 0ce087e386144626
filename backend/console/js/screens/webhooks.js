// Webhooks: endpoints (URL, events, enabled), their signing secret shown once, a test event, secret
// rotation, and the delivery log with every attempt and a manual retry. Plus how to verify the
// Standard Webhooks signature in a few languages.

import { admin, items } from '../api.js';
import { h, add, replace, field, setFieldError, fmtDate, fmtRelative, badge } from '../dom.js';
import { EVENT_TYPES, loadWebhooks } from '../data.js';
import { openDialog, confirmDialog, toast, secretRow, onceWarning, loading, errorBox, codeTabs, callout } from '../ui.js';
import { planNotice } from './overview.js';

const POLL_MS = 3000;

export function render(root, ctx) {
  const listHost = h('div', {}, loading('Loading webhook endpoints…'));
  const logHost = h('div', {});
  const addBtn = h('button', { type: 'button', class: 'btn btn-primary', 'data-testid': 'add-webhook' }, '+ Add endpoint');
  // `outcomes`: the last test result per endpoint, kept across re-renders of the list.
  const state = { hooks: [], selected: null, alive: true, poll: null, outcomes: new Map() };

  add(root,
    h('div', { class: 'page-head page-head-row' },
      h('div', {},
        h('h1', {}, 'Webhooks'),
        h('p', { class: 'lead' }, 'Receive events in real time — message received, sent, delivered, read, failed — signed with your endpoint’s secret. Deliveries that fail are retried up to 5 times with growing delays.')),
      ctx.apiAllowed ? addBtn : null),
    ctx.apiAllowed ? null : planNotice(ctx),
    listHost,
    logHost,
    verificationPanel());

  addBtn.addEventListener('click', () => endpointDialog(null, refresh));

  async function refresh() {
    try {
      state.hooks = await loadWebhooks();
      if (!state.alive) return;
      drawList();
      if (state.selected && !state.hooks.some((w) => w.id === state.selected)) state.selected = null;
      if (!state.selected && state.hooks.length) state.selected = state.hooks[0].id;
      loadLog();
    } catch (error) {
      if (state.alive) replace(listHost, errorBox(error, 'Could not load the webhook endpoints.'));
    }
  }

  function drawList() {
    if (!state.hooks.length) {
      replace(listHost, h('div', { class: 'empty' },
        h('h2', {}, 'No endpoints yet'),
        ctx.apiAllowed
          ? h('p', {}, 'Add the URL of your server that should receive events. You get a signing secret once, to verify that each delivery really comes from WizMessage.')
          : h('p', {}, 'Webhooks can be set up once the account is on Wiz Bot or Wiz Pro.')));
      logHost.replaceChildren();
      return;
    }
    replace(listHost, h('ul', { class: 'hook-list', 'data-testid': 'webhook-list' }, state.hooks.map(hookCard)));
  }

  function hookCard(w) {
    const outcome = h('div', { class: 'test-outcome', 'aria-live': 'polite', 'data-testid': 'test-outcome' },
      state.outcomes.has(w.id) ? testOutcome(state.outcomes.get(w.id)) : null);
    const events = Array.isArray(w.events) ? w.events : [];
    const buttons = [];
    const test = h('button', { type: 'button', class: 'btn btn-small', 'data-testid': 'send-test' }, 'Send test event');
    test.addEventListener('click', () => sendTest(w, test, outcome));
    const log = h('button', { type: 'button', class: 'btn btn-small', 'aria-pressed': String(state.selected === w.id) }, 'Delivery log');
    log.addEventListener('click', () => {
      state.selected = w.id;
      drawList();
      loadLog().then(() => document.getElementById('delivery-log-title')?.focus());
    });
    const edit = h('button', { type: 'button', class: 'btn btn-small' }, 'Edit');
    edit.addEventListener('click', () => endpointDialog(w, refresh));
    const rotate = h('button', { type: 'button', class: 'btn btn-small' }, 'Rotate secret');
    rotate.addEventListener('click', () => rotateSecret(w));
    const del = h('button', { type: 'button', class: 'btn btn-small btn-danger-ghost' }, 'Delete');
    del.addEventListener('click', () => deleteHook(w, refresh));
    if (ctx.apiAllowed) buttons.push(test);
    buttons.push(log, edit);
    if (ctx.apiAllowed) buttons.push(rotate);
    buttons.push(del);
    return h('li', { class: ['hook', state.selected === w.id && 'hook-selected'], 'data-webhook-id': w.id },
      h('div', { class: 'hook-head' },
        h('p', { class: 'hook-url mono' }, w.url),
        w.enabled === false ? badge('Disabled', 'muted') : badge('Enabled', 'success')),
      w.description ? h('p', { class: 'hook-desc' }, w.description) : null,
      h('ul', { class: 'chips', 'aria-label': 'Subscribed events' },
        events.includes('*') ? h('li', { class: 'chip' }, 'All events') : events.map((e) => h('li', { class: 'chip mono' }, e))),
      w.enabled === false && w.disabled_reason ? h('p', { class: 'callout callout-warning hook-note' }, h('strong', {}, 'Disabled by WizMessage: '), w.disabled_reason, '. Fix the endpoint, then edit it and tick “Enabled” to resume its deliveries.') : null,
      w.previous_secret_expires_at && new Date(w.previous_secret_expires_at) > new Date() ? h('p', { class: 'muted small' }, `Secret rotated: the old secret also signs until ${fmtDate(w.previous_secret_expires_at)}.`) : null,
      w.created_at ? h('p', { class: 'muted small' }, `Created ${fmtDate(w.created_at)}`) : null,
      h('div', { class: 'btn-row' }, buttons),
      outcome);
  }

  async function sendTest(w, btn, outcome) {
    btn.disabled = true;
    replace(outcome, h('p', { class: 'loading' }, h('span', { class: 'spinner', 'aria-hidden': 'true' }), 'Sending a test event…'));
    try {
      // The backend makes the attempt while we wait and answers with its outcome.
      const answer = await admin('POST', `/admin/webhooks/${encodeURIComponent(w.id)}/test`);
      if (!state.alive) return;
      state.selected = w.id;
      state.outcomes.set(w.id, answer || {});
      drawList();
      loadLog();
    } catch (error) {
      replace(outcome, errorBox(error, 'The test event was not sent.'));
    } finally {
      btn.disabled = false;
    }
  }

  function testOutcome(t) {
    const ok = t.success === true || (t.status_code >= 200 && t.status_code < 300);
    return h('div', { class: ['callout', ok ? 'callout-success' : 'callout-error'], role: ok ? 'status' : 'alert' },
      h('p', {},
        h('strong', {}, ok ? 'Test event delivered: ' : 'Test event failed: '),
        t.status_code ? `HTTP ${t.status_code}` : t.error || t.outcome || 'no answer',
        typeof t.latency_ms === 'number' ? ` in ${Math.round(t.latency_ms)} ms` : '',
        t.event_id ? h('span', { class: 'muted small mono' }, ` (${t.event_id})`) : null,
        ok ? '.' : '. The attempt is in the delivery log below.'),
      !ok && t.status_code && t.error ? h('p', {}, t.error) : null,
      t.response ? h('pre', { class: 'code code-small' }, h('code', {}, t.response)) : null);
  }

  async function rotateSecret(w) {
    const ok = await confirmDialog({
      title: 'Rotate the signing secret?',
      message: 'A new secret is generated and shown once. For a while both the old and the new secret sign each delivery, so you can update your server without missing events.',
      confirmLabel: 'Rotate secret',
    });
    if (!ok) return;
    try {
      const answer = await admin('POST', `/admin/webhooks/${encodeURIComponent(w.id)}/rotate-secret`);
      showSecret('New signing secret', answer && answer.secret, w.url, answer && answer.previous_secret_expires_at);
      refresh();
    } catch (error) {
      toast(`Could not rotate the secret: ${error.message}`, 'error');
    }
  }

  async function loadLog() {
    clearTimeout(state.poll);
    const hook = state.hooks.find((w) => w.id === state.selected);
    if (!hook) {
      logHost.replaceChildren();
      return;
    }
    let deliveries;
    try {
      deliveries = items(await admin('GET', `/admin/webhooks/${encodeURIComponent(hook.id)}/deliveries`));
    } catch (error) {
      if (state.alive) replace(logHost, panelWrap(hook, errorBox(error, 'Could not load the delivery log.')));
      return;
    }
    if (!state.alive) return;
    replace(logHost, panelWrap(hook, deliveryTable(deliveries)));
    // While something is still pending, keep the log fresh.
    if (deliveries.some((d) => d.status === 'pending')) state.poll = setTimeout(loadLog, POLL_MS);
  }

  function panelWrap(hook, content) {
    const again = h('button', { type: 'button', class: 'btn btn-small' }, 'Refresh');
    again.addEventListener('click', loadLog);
    return h('section', { class: 'panel', 'aria-labelledby': 'delivery-log-title' },
      h('div', { class: 'panel-head' },
        h('div', {},
          h('h2', { id: 'delivery-log-title', tabindex: '-1' }, 'Delivery log'),
          h('p', { class: 'muted small mono hook-url' }, hook.url)),
        again),
      content);
  }

  function deliveryTable(deliveries) {
    if (!deliveries.length) return h('p', { class: 'muted', 'data-testid': 'delivery-log' }, 'No deliveries yet. Send a test event, or send a message from the Playground.');
    return h('div', { class: 'table-scroll' }, h('table', { class: 'table deliveries', 'data-testid': 'delivery-log' },
      h('caption', { class: 'sr-only' }, 'Deliveries to this endpoint, newest first'),
      h('thead', {}, h('tr', {}, ['Event', 'Status', 'Attempts', 'Last attempt', ''].map((t) => h('th', { scope: 'col' }, t)))),
      deliveries.map((d) => deliveryRows(d))));
  }

  function deliveryRows(d) {
    const hook = state.hooks.find((w) => w.id === state.selected);
    const hookEnabled = !hook || hook.enabled !== false;
    const attempts = Array.isArray(d.attempts) ? d.attempts : [];
    const last = attempts[attempts.length - 1];
    const retry = h('button', { type: 'button', class: 'btn btn-small', 'data-testid': 'retry-delivery', title: d.status === 'succeeded' ? 'Send this event to the endpoint again' : 'Attempt delivery now instead of waiting for the next scheduled retry' }, d.status === 'succeeded' ? 'Resend' : 'Retry now');
    retry.addEventListener('click', async () => {
      retry.disabled = true;
      try {
        await admin('POST', `/admin/deliveries/${encodeURIComponent(d.id)}/retry`);
        toast('Retry queued.', 'success');
        setTimeout(loadLog, 800);
      } catch (error) {
        toast(`Could not retry: ${error.message}`, 'error');
        retry.disabled = false;
      }
    });
    const kind = d.status === 'succeeded' ? 'success' : d.status === 'failed' ? 'danger' : 'warning';
    const detail = h('tr', { class: 'attempts-row' }, h('td', { colspan: '5' },
      h('details', {},
        h('summary', {}, `Attempts (${attempts.length})`),
        attempts.length ? h('ol', { class: 'attempts' }, attempts.map((a) => h('li', {},
          h('div', { class: 'attempt-head' },
            h('span', { class: ['status-pill', a.status_code >= 200 && a.status_code < 300 ? 'status-success' : 'status-danger'] }, a.status_code ? String(a.status_code) : (a.outcome || 'no answer').replace('_', ' ')),
            h('span', {}, typeof a.latency_ms === 'number' ? `${Math.round(a.latency_ms)} ms` : ''),
            h('span', { class: 'muted' }, fmtDate(a.at))),
          a.error ? h('p', { class: 'attempt-error' }, a.error) : null,
          a.response ? h('pre', { class: 'code code-small' }, h('code', {}, String(a.response))) : null)))
          : h('p', { class: 'muted' }, d.next_attempt_at ? `First attempt scheduled ${fmtRelative(d.next_attempt_at)}.` : 'Not attempted yet.'))));
    return h('tbody', { 'data-delivery-id': d.id },
      h('tr', {},
        h('td', { 'data-label': 'Event' }, h('span', { class: 'mono' }, d.event_type || ''), h('br'), h('span', { class: 'muted small mono' }, d.event_id || d.id)),
        h('td', { 'data-label': 'Status' }, badge(d.status || 'pending', kind),
          d.status === 'pending' && d.next_attempt_at ? h('span', { class: 'muted small next-try' }, `next try ${fmtWhen(d.next_attempt_at)}`) : null),
        h('td', { 'data-label': 'Attempts', 'data-testid': 'attempt-count' }, String(attempts.length)),
        h('td', { 'data-label': 'Last attempt', 'data-testid': 'last-attempt' }, last
          ? [h('span', { class: 'mono', title: last.error || '' }, last.status_code ? `HTTP ${last.status_code}` : shorten(last.error || last.outcome || 'no answer', 70)), ' · ', typeof last.latency_ms === 'number' ? `${Math.round(last.latency_ms)} ms` : '', ' · ', h('span', { class: 'muted' }, fmtRelative(last.at))]
          : h('span', { class: 'muted' }, '—')),
        h('td', { class: 'actions' }, ctx.apiAllowed && hookEnabled ? retry : null)),
      detail);
  }

  refresh();
  return () => {
    state.alive = false;
    clearTimeout(state.poll);
  };
}

function shorten(text, max) {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/** "in 4 min" for a future time, else "now". */
function fmtWhen(value) {
  const ms = new Date(value).getTime() - Date.now();
  if (!Number.isFinite(ms) || ms <= 1000) return 'now';
  const secs = Math.round(ms / 1000);
  if (secs < 90) return `in ${secs} s`;
  if (secs < 90 * 60) return `in ${Math.round(secs / 60)} min`;
  return `in ${Math.round(secs / 3600)} h`;
}

function endpointDialog(hook, refresh) {
  const editing = Boolean(hook);
  const url = h('input', { type: 'url', value: editing ? hook.url : '', required: true, placeholder: 'https://example.com/webhooks/wizmessage', spellcheck: 'false', autocomplete: 'off', 'data-testid': 'webhook-url' });
  const description = h('input', { type: 'text', value: editing ? hook.description || '' : '', maxlength: '200', 'data-testid': 'webhook-description' });
  const enabled = h('input', { type: 'checkbox', checked: editing ? hook.enabled !== false : true, 'data-testid': 'webhook-enabled' });
  const current = editing && Array.isArray(hook.events) ? hook.events : ['*'];
  const all = h('input', { type: 'checkbox', checked: current.includes('*'), 'data-testid': 'event-all' });
  const boxes = EVENT_TYPES.map(([type, about]) => {
    const box = h('input', { type: 'checkbox', value: type, checked: current.includes('*') || current.includes(type), disabled: current.includes('*'), 'data-testid': `event-${type}` });
    return { type, box, el: h('label', { class: 'check event-check' }, box, h('span', {}, h('code', {}, type), h('span', { class: 'muted small' }, about))) };
  });
  const eventsError = h('p', { class: 'field-error', 'aria-live': 'polite' });
  all.addEventListener('change', () => {
    boxes.forEach((b) => { b.box.disabled = all.checked; b.box.checked = all.checked || b.box.checked; });
    validateEvents();
  });
  boxes.forEach((b) => b.box.addEventListener('change', validateEvents));
  function selectedEvents() {
    if (all.checked) return ['*'];
    return boxes.filter((b) => b.box.checked).map((b) => b.type);
  }
  function validateEvents() {
    const ok = selectedEvents().length > 0;
    eventsError.textContent = ok ? '' : 'Choose at least one event.';
    return ok;
  }
  function urlError() {
    const v = url.value.trim();
    if (!v) return 'Enter the URL of your endpoint.';
    let parsed;
    try {
      parsed = new URL(v);
    } catch {
      return 'Not a valid URL. It starts with https:// (or http:// for local testing).';
    }
    if (parsed.protocol !== 'https:' && parsed.protocol !== 'http:') return 'Use an https:// URL.';
    if (parsed.username || parsed.password) return 'Leave credentials out of the URL; verify the signature instead.';
    return null;
  }
  url.addEventListener('input', () => setFieldError(url, url.value ? urlError() : null));
  url.addEventListener('blur', () => setFieldError(url, urlError()));

  const status = h('div', { 'aria-live': 'polite' });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary', 'data-testid': 'webhook-submit' }, editing ? 'Save changes' : 'Add endpoint');
  const cancel = h('button', { type: 'button', class: 'btn' }, 'Cancel');
  const form = h('form', { class: 'form', novalidate: true, id: `hook-form-${Date.now()}` },
    field({ label: 'Endpoint URL', control: url, hint: 'Must answer 2xx within 15 seconds. A 410 Gone disables the endpoint.' }),
    field({ label: 'Description (optional)', control: description }),
    h('fieldset', { class: 'fieldset' },
      h('legend', {}, 'Events to send'),
      h('label', { class: 'check' }, all, ' ', h('strong', {}, 'All events'), h('span', { class: 'muted small' }, ' — including types added later')),
      h('div', { class: 'event-grid' }, boxes.map((b) => b.el)),
      eventsError),
    h('label', { class: 'check' }, enabled, ' Enabled: deliver events to this endpoint'),
    status);
  submit.setAttribute('form', form.id);
  const dlg = openDialog({ title: editing ? 'Edit webhook endpoint' : 'Add webhook endpoint', content: form, actions: [cancel, submit], wide: true });
  cancel.addEventListener('click', () => dlg.close());

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const uerr = urlError();
    setFieldError(url, uerr);
    const eventsOk = validateEvents();
    if (uerr) {
      url.focus();
      return;
    }
    if (!eventsOk) return;
    const body = { url: url.value.trim(), events: selectedEvents(), description: description.value.trim(), enabled: enabled.checked };
    submit.disabled = true;
    status.replaceChildren();
    try {
      if (editing) {
        await admin('PATCH', `/admin/webhooks/${encodeURIComponent(hook.id)}`, body);
        dlg.close();
        toast('Endpoint saved.', 'success');
      } else {
        const created = await admin('POST', '/admin/webhooks', body);
        dlg.close();
        showSecret('Your webhook signing secret', created && (created.secret || (created.webhook && created.webhook.secret)), body.url);
      }
      refresh();
    } catch (error) {
      replace(status, errorBox(error, editing ? 'The endpoint was not saved.' : 'The endpoint was not added.'));
      submit.disabled = false;
    }
  });
}

function showSecret(title, secret, url, previousUntil) {
  const done = h('button', { type: 'button', class: 'btn btn-primary', 'data-testid': 'secret-done' }, 'I have stored the secret — close');
  const dlg = openDialog({
    title,
    content: [
      onceWarning('Store this secret on the server behind the endpoint and use it to verify the webhook-signature header of every delivery. It cannot be shown again; if it is lost, rotate it.'),
      h('p', { class: 'muted small mono hook-url' }, url),
      previousUntil ? h('p', {}, `Until ${fmtDate(previousUntil)} every delivery carries two signatures, one per secret, so your server can switch over without missing events.`) : null,
      secretRow({ label: 'Signing secret', value: secret || '(the server did not return a secret)', testId: 'webhook-secret' }),
    ],
    actions: [done],
    wide: true,
  });
  done.addEventListener('click', () => dlg.close());
}

async function deleteHook(w, refresh) {
  const ok = await confirmDialog({
    title: 'Delete this endpoint?',
    message: `${w.url} stops receiving events immediately, and its pending deliveries are dropped.`,
    confirmLabel: 'Delete endpoint',
    danger: true,
  });
  if (!ok) return;
  try {
    await admin('DELETE', `/admin/webhooks/${encodeURIComponent(w.id)}`);
    toast('Endpoint deleted.', 'success');
  } catch (error) {
    toast(`Could not delete: ${error.message}`, 'error');
  }
  refresh();
}

const VERIFY = [
  {
    label: 'Python',
    text: `import base64, hashlib, hmac, time

def verify(secret: str, headers, body: bytes) -> bool:
    """secret is whsec_...; headers are the request's; body is the raw bytes."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    msg_id = headers["webhook-id"]
    timestamp = headers["webhook-timestamp"]
    if abs(time.time() - int(timestamp)) > 300:
        return False  # too old or from the future: possible replay
    signed = f"{msg_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    # Several signatures are sent during a secret rotation: accept any match.
    return any(
        hmac.compare_digest(expected, sig.split(",", 1)[1])
        for sig in headers["webhook-signature"].split(" ")
        if sig.startswith("v1,")
    )
# Or: pip install standardwebhooks; Webhook(secret).verify(body, headers)`,
  },
  {
    label: 'Node.js',
    text: `import crypto from 'node:crypto';

// secret is whsec_...; body is the raw request body (a Buffer or string, not parsed JSON).
export function verify(secret, headers, body) {
  const key = Buffer.from(secret.replace(/^whsec_/, ''), 'base64');
  const id = headers['webhook-id'];
  const timestamp = headers['webhook-timestamp'];
  if (Math.abs(Date.now() / 1000 - Number(timestamp)) > 300) return false; // replay guard
  const expected = crypto.createHmac('sha256', key)
    .update(\`\${id}.\${timestamp}.\${body}\`)
    .digest();
  // Several signatures are sent during a secret rotation: accept any match.
  return headers['webhook-signature'].split(' ').some((sig) => {
    const [version, value] = sig.split(',');
    const given = Buffer.from(value || '', 'base64');
    return version === 'v1' && given.length === expected.length && crypto.timingSafeEqual(given, expected);
  });
}
// Or: npm install standardwebhooks; new Webhook(secret).verify(body, headers)`,
  },
  {
    label: 'Go',
    text: `import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Verify checks a delivery; secret is "whsec_...", body the raw request body.
func Verify(secret string, h http.Header, body []byte) bool {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		return false
	}
	id, ts := h.Get("webhook-id"), h.Get("webhook-timestamp")
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || time.Since(time.Unix(sec, 0)).Abs() > 5*time.Minute {
		return false // replay guard
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "."))
	mac.Write(body)
	expected := base64.StdEncoding.EncodeToString(mac.Sum(nil))
	// Several signatures are sent during a secret rotation: accept any match.
	for _, sig := range strings.Split(h.Get("webhook-signature"), " ") {
		if v, ok := strings.CutPrefix(sig, "v1,"); ok && hmac.Equal([]byte(v), []byte(expected)) {
			return true
		}
	}
	return false
}`,
  },
];

function verificationPanel() {
  const tabs = codeTabs(VERIFY, { testId: 'verify-snippet', label: 'Signature verification' });
  return h('section', { class: 'panel', 'aria-labelledby': 'verify-title' },
    h('h2', { id: 'verify-title' }, 'Verify the signature'),
    h('p', {}, 'Every delivery follows the Standard Webhooks format: headers ', h('code', {}, 'webhook-id'), ', ', h('code', {}, 'webhook-timestamp'), ' and ',
      h('code', {}, 'webhook-signature: v1,<base64 HMAC-SHA256>'), ' over ', h('code', {}, '{id}.{timestamp}.{body}'), '. The official standardwebhooks and Svix libraries verify it as is. Deliveries can repeat: use ', h('code', {}, 'webhook-id'), ' to ignore duplicates.'),
    tabs.el);
}
