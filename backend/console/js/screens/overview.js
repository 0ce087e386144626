// Overview: what the developer API is, the plan requirement, the three getting-started steps with
// this account's progress, the four-step architecture picture and the key-handling tip.

import { PLAN_NAMES } from '../api.js';
import { h, add, s } from '../dom.js';

/** A small bar-chart icon (an emoji would need a colour-emoji font the machine may lack). */
function chartIcon() {
  return s('svg', { class: 'icon', viewBox: '0 0 20 20', width: '18', height: '18', 'aria-hidden': 'true' },
    s('rect', { x: '2', y: '10', width: '4', height: '8', rx: '1' }),
    s('rect', { x: '8', y: '5', width: '4', height: '13', rx: '1' }),
    s('rect', { x: '14', y: '2', width: '4', height: '16', rx: '1' }));
}
import { loadKeys, loadWebhooks } from '../data.js';

const STEPS = [
  {
    title: 'Generate Keys',
    text: 'Create a new API key, set rate limits and IP whitelists, and copy the Secret Key (it is only shown once).',
    route: 'keys',
    action: 'Create an API key',
    doneAction: 'Manage keys',
  },
  {
    title: 'Test in Playground',
    text: 'Open the Playground tab, select your key, configure message parameters, and send a live test request.',
    route: 'playground',
    action: 'Open the Playground',
    doneAction: 'Open the Playground',
  },
  {
    title: 'Configure Webhooks',
    text: 'Set up a webhook URL to receive events, and use the generated Webhook Secret to verify payload signatures.',
    route: 'webhooks',
    action: 'Add a webhook',
    doneAction: 'Manage webhooks',
  },
];

const ARCHITECTURE = [
  { actor: 'Admin', title: 'Generate Keys', text: 'Admin creates API key and secret.' },
  { actor: 'Developer', title: 'Integrate API', text: 'Developer uses keys in external software.' },
  { actor: 'System', title: 'Event Occurs', text: 'Message sent or delivered triggers a webhook.' },
  { actor: 'System', title: 'Webhook Delivery', text: 'Payload signed and sent to developer server (up to 5 retries).' },
];

export function planNotice(ctx) {
  const plan = ctx.plan;
  const current = PLAN_NAMES[plan] || plan || 'unknown';
  return h('section', { class: ['callout', ctx.apiAllowed ? 'callout-info' : 'callout-warning', 'plan-notice'], 'aria-label': 'Plan requirement', 'data-testid': 'plan-notice' },
    h('p', {},
      chartIcon(), ' ',
      h('strong', {}, 'Plan Requirement: '),
      'API Management requires Wiz Bot or Wiz Pro. API calls and webhook deliveries are unlimited — no monthly message cap applies to API usage.'),
    ctx.apiAllowed
      ? h('p', { class: 'plan-current' }, 'Your account is on ', h('strong', {}, current), ': API management is included.')
      : h('p', { class: 'plan-current' },
        'Your account is on the ', h('strong', {}, current), ' plan, so API keys cannot be created and existing keys are refused by the gateway. ',
        'Ask your WizMessage administrator to move the account to Wiz Bot or Wiz Pro; these screens unlock as soon as the plan has changed.'));
}

export function keyTip() {
  return h('aside', { class: 'callout callout-tip', 'aria-label': 'Tip' },
    h('p', {},
      h('strong', {}, 'Tip: '),
      'Treat API keys like passwords. Never commit them to Git repositories or hardcode them in frontend code. If a key is leaked, revoke or rotate it immediately.'));
}

function stepCard(step, index, status) {
  const done = status === true;
  const stateText = status === null ? 'Checking…' : status === undefined ? 'Unknown' : done ? 'Done' : 'To do';
  return h('li', { class: ['step', done && 'step-done'], 'data-testid': `step-${index + 1}` },
    h('div', { class: 'step-num', 'aria-hidden': 'true' }, done ? '✓' : String(index + 1)),
    h('div', { class: 'step-body' },
      h('div', { class: 'step-top' },
        h('p', { class: 'step-kicker' }, `Step ${index + 1}`),
        h('span', { class: ['badge', done ? 'badge-success' : 'badge-muted'], 'data-testid': `step-${index + 1}-status` }, stateText)),
      h('h3', {}, step.title),
      h('p', {}, step.text),
      h('div', { class: 'step-foot' },
        h('a', { class: ['btn', 'btn-small', !done && status !== null && 'btn-primary'], href: `#/${step.route}` }, done ? step.doneAction : step.action))));
}

function architecture() {
  return h('section', { class: 'panel', 'aria-labelledby': 'arch-title' },
    h('h2', { id: 'arch-title' }, 'API & Webhook Architecture'),
    h('ol', { class: 'arch' },
      ARCHITECTURE.map((a, i) => h('li', { class: ['arch-step', `arch-${a.actor.toLowerCase()}`] },
        h('div', { class: 'arch-num', 'aria-hidden': 'true' }, String(i + 1)),
        h('p', { class: 'arch-actor' }, a.actor),
        h('h3', {}, a.title),
        h('p', {}, a.text)))));
}

function formats() {
  const rows = [
    ['API Key Format', 'Prefixed with ', h('code', {}, 'pk_live_'), ' (e.g., ', h('code', {}, 'pk_live_abcd1234…'), '). The first 12 characters are plain text for identification; the full key is hashed via SHA-256.'],
    ['API Secret Format', 'Prefixed with ', h('code', {}, 'sk_live_'), ' (e.g., ', h('code', {}, 'sk_live_xyz9876…'), '). Shown only once upon creation.'],
    ['Rate Limit', 'Maximum allowed requests per minute per key (defaults to 60).'],
    ['Daily Limit', 'Hard daily cap on total requests per key (defaults to 1000).'],
  ];
  return h('section', { class: 'panel', 'aria-labelledby': 'formats-title' },
    h('h2', { id: 'formats-title' }, 'Keys and limits'),
    h('dl', { class: 'formats' }, rows.map(([term, ...desc]) => [h('dt', {}, term), h('dd', {}, desc)])));
}

export function render(root, ctx) {
  const progress = [null, null, null];
  const stepsList = h('ol', { class: 'steps' });
  const summary = h('p', { class: 'muted', 'aria-live': 'polite' });
  function drawSteps() {
    stepsList.replaceChildren(...STEPS.map((s, i) => stepCard(s, i, progress[i])));
    const known = progress.filter((p) => p !== null && p !== undefined);
    summary.textContent = known.length === 3 ? `${progress.filter(Boolean).length} of 3 steps done.` : '';
  }
  drawSteps();

  add(root,
    h('div', { class: 'page-head' },
      h('h1', {}, 'Developer API'),
      h('p', { class: 'lead' },
        'Connect your existing systems — your e-commerce store, CRM, helpdesk, or custom application — to drive chatbot actions, manage contacts, and send bulk messages programmatically. ',
        'Keys are hashed for safe storage, secrets are shown only once, and every key can be restricted by IP whitelist and by rate and daily request limits.')),
    planNotice(ctx),
    h('section', { class: 'panel', 'aria-labelledby': 'steps-title' },
      h('div', { class: 'panel-head' }, h('h2', { id: 'steps-title' }, 'Get started in three steps'), summary),
      stepsList),
    architecture(),
    keyTip(),
    formats());

  let alive = true;
  loadKeys().then((keys) => {
    if (!alive) return;
    progress[0] = keys.length > 0;
    progress[1] = ctx.playgroundUsed || keys.some((k) => k.lastUsedAt || k.today > 0);
    drawSteps();
  }).catch(() => {
    if (!alive) return;
    progress[0] = undefined;
    progress[1] = ctx.playgroundUsed ? true : undefined;
    drawSteps();
  });
  loadWebhooks().then((hooks) => {
    if (!alive) return;
    progress[2] = hooks.length > 0;
    drawSteps();
  }).catch(() => {
    if (!alive) return;
    progress[2] = undefined;
    drawSteps();
  });
  return () => { alive = false; };
}
