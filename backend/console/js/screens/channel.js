// Channel: where the account's messages go — the built-in simulated WhatsApp channel, or Meta's
// WhatsApp Business Cloud API with the account's phone number and credentials. The access token
// and the app secret are write-only: the server answers them masked and the form never holds
// them after a save. "Test connection" asks Meta about the phone number and shows its answer.

import { admin } from '../api.js';
import { h, add, replace, field, setFieldError, fmtDate, badge } from '../dom.js';
import { toast, loading, errorBox, callout, copyButton } from '../ui.js';

export function render(root) {
  const host = h('div', {}, loading('Loading the channel settings…'));
  add(root,
    h('div', { class: 'page-head' },
      h('h1', {}, 'Channel'),
      h('p', { class: 'lead' }, 'Choose how messages reach your customers: the simulated WhatsApp channel for development, or your own number on the WhatsApp Business Cloud API.')),
    host);
  let alive = true;
  admin('GET', '/admin/channel')
    .then((view) => { if (alive) replace(host, form(view)); })
    .catch((error) => { if (alive) replace(host, errorBox(error, 'Could not load the channel settings.')); });
  return () => { alive = false; };
}

function input(name, props = {}) {
  return h('input', { name, type: 'text', class: 'mono', autocomplete: 'off', spellcheck: 'false', 'data-testid': `channel-${name}`, ...props });
}

function form(initial) {
  let view = initial;
  const kindSimulated = h('input', { type: 'radio', name: 'kind', value: 'simulated', 'data-testid': 'channel-kind-simulated' });
  const kindCloud = h('input', { type: 'radio', name: 'kind', value: 'whatsapp_cloud', 'data-testid': 'channel-kind-cloud' });
  const phone = input('phone_number_id', { inputmode: 'numeric', placeholder: '106540352242922' });
  const waba = input('waba_id', { inputmode: 'numeric', placeholder: '102290129340398' });
  const token = input('access_token', { type: 'password', placeholder: 'paste a new token to replace the stored one' });
  const secret = input('app_secret', { type: 'password', placeholder: 'paste a new secret to replace the stored one' });
  const verify = input('verify_token', { placeholder: 'generated when left empty' });
  const status = h('div', { 'aria-live': 'polite', 'data-testid': 'channel-status' });
  const testOut = h('div', { 'aria-live': 'polite', 'data-testid': 'channel-test-outcome' });
  const save = h('button', { type: 'submit', class: 'btn btn-primary', 'data-testid': 'channel-save' }, 'Save settings');
  const test = h('button', { type: 'button', class: 'btn', 'data-testid': 'channel-test' }, 'Test connection');
  const stored = h('div', { 'data-testid': 'channel-stored' });
  const cloudFields = h('fieldset', { class: 'fieldset' },
    h('legend', {}, 'WhatsApp Business Cloud API'),
    field({ label: 'Phone number ID', control: phone, hint: 'WhatsApp Manager → Phone numbers, or the App dashboard → WhatsApp → API Setup.' }),
    field({ label: 'WhatsApp Business account ID', control: waba }),
    field({ label: 'Access token', control: token, hint: 'A system-user token with whatsapp_business_messaging. Write-only: stored encrypted, shown masked.' }),
    field({ label: 'App secret', control: secret, hint: 'App dashboard → App settings → Basic. Verifies that callbacks come from Meta. Write-only.' }),
    field({ label: 'Webhook verify token', control: verify, hint: 'Enter it in Meta’s webhook settings beside the callback URL below.' }));

  function fill() {
    kindSimulated.checked = view.kind !== 'whatsapp_cloud';
    kindCloud.checked = view.kind === 'whatsapp_cloud';
    phone.value = view.phone_number_id || '';
    waba.value = view.waba_id || '';
    token.value = '';
    secret.value = '';
    verify.value = view.verify_token || '';
    const callbackUrl = `${location.origin}${view.webhook_path}`;
    replace(stored,
      h('dl', { class: 'kv' },
        h('dt', {}, 'Channel'), h('dd', {}, badge(view.kind === 'whatsapp_cloud' ? 'WhatsApp Cloud API' : 'Simulated', view.kind === 'whatsapp_cloud' ? 'plan' : 'muted')),
        h('dt', {}, 'Access token'), h('dd', { class: 'mono', 'data-testid': 'channel-token-masked' }, view.access_token || 'not set'),
        h('dt', {}, 'App secret'), h('dd', { class: 'mono', 'data-testid': 'channel-secret-masked' }, view.app_secret || 'not set'),
        h('dt', {}, 'Callback URL for Meta'), h('dd', {}, h('span', { class: 'mono', 'data-testid': 'channel-callback-url' }, callbackUrl), ' ', copyButton(() => callbackUrl, { what: 'callback URL' })),
        view.updated_at ? [h('dt', {}, 'Saved'), h('dd', {}, fmtDate(view.updated_at))] : null));
    toggle();
  }
  function toggle() {
    cloudFields.hidden = !kindCloud.checked;
    test.hidden = !kindCloud.checked;
  }
  kindSimulated.addEventListener('change', toggle);
  kindCloud.addEventListener('change', toggle);

  const el = h('form', { class: 'form panel', novalidate: true, 'data-testid': 'channel-form' },
    h('fieldset', { class: 'fieldset' },
      h('legend', {}, 'Send messages through'),
      h('label', { class: 'check' }, kindSimulated, ' ', h('strong', {}, 'Simulated WhatsApp'), h('span', { class: 'muted small' }, ' — nothing leaves the platform; sandbox numbers fail on purpose')),
      h('label', { class: 'check' }, kindCloud, ' ', h('strong', {}, 'WhatsApp Business Cloud API'), h('span', { class: 'muted small' }, ' — your number, through Meta'))),
    stored,
    cloudFields,
    callout('info', 'Customer-service window.', 'On the Cloud API, text and media go only to numbers that wrote to you in the last 24 hours; otherwise send an approved template (the API answers 422 outside_customer_service_window).'),
    status,
    h('div', { class: 'btn-row' }, save, test),
    testOut);

  el.addEventListener('submit', async (e) => {
    e.preventDefault();
    const body = { kind: kindCloud.checked ? 'whatsapp_cloud' : 'simulated' };
    if (kindCloud.checked) {
      for (const [ctl, key] of [[phone, 'phone_number_id'], [waba, 'waba_id']]) {
        const v = ctl.value.trim();
        setFieldError(ctl, v && !/^\d{1,32}$/.test(v) ? 'Digits only, as Meta shows it.' : null);
        if (v) body[key] = v;
      }
      if (token.value.trim()) body.access_token = token.value.trim();
      if (secret.value.trim()) body.app_secret = secret.value.trim();
      if (verify.value.trim()) body.verify_token = verify.value.trim();
    }
    save.disabled = true;
    status.replaceChildren();
    try {
      view = await admin('PUT', '/admin/channel', body);
      fill();
      replace(status, callout('success', 'Saved.', 'New messages go through this channel.'));
      toast('Channel settings saved.', 'success');
    } catch (error) {
      replace(status, errorBox(error, 'The settings were not saved.'));
    } finally {
      save.disabled = false;
    }
  });

  test.addEventListener('click', async () => {
    test.disabled = true;
    replace(testOut, loading('Asking Meta about the phone number…'));
    try {
      const report = await admin('POST', '/admin/channel/test', {});
      replace(testOut, callout(report.ok ? 'success' : 'error',
        report.ok ? 'Connected.' : 'Meta refused.',
        report.message,
        h('pre', { class: 'mono small' }, JSON.stringify(report.provider, null, 2))));
    } catch (error) {
      replace(testOut, errorBox(error, 'The test did not run.'));
    } finally {
      test.disabled = false;
    }
  });

  fill();
  return el;
}
