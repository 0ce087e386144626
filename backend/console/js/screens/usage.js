// Usage: requests per day (30 days) and per minute (last hour), and today's refusals by reason,
// for one key or the whole account (the sum of its keys).

import { admin } from '../api.js';
import { h, add, replace, field, fmtNumber, fmtDay } from '../dom.js';
import { loadKeys, normalizeUsage, sumUsage, REFUSAL_LABELS } from '../data.js';
import { barChart, categoryBars } from '../charts.js';
import { loading, errorBox } from '../ui.js';

const REFRESH_MS = 30000;

export function render(root, ctx) {
  const scope = h('select', { 'data-testid': 'usage-scope' }, h('option', { value: '' }, 'Whole account'));
  const refreshBtn = h('button', { type: 'button', class: 'btn btn-small' }, 'Refresh');
  const updated = h('span', { class: 'muted small', 'aria-live': 'polite' });
  const body = h('div', { class: 'usage-body' }, loading('Loading usage…'));

  add(root,
    h('div', { class: 'page-head' },
      h('h1', {}, 'Usage'),
      h('p', { class: 'lead' }, 'Accepted requests per key, as counted by the gateways, and the requests they refused today. Refused requests never count against a limit; a bulk send counts as one request.')),
    h('div', { class: 'toolbar' },
      field({ label: 'Show usage for', control: scope, className: 'field-inline' }),
      h('div', { class: 'toolbar-end' }, updated, refreshBtn)),
    body);

  let keys = [];
  const usageById = new Map();
  let alive = true;
  let timer = null;

  async function load() {
    try {
      keys = await loadKeys();
      const results = await Promise.all(keys.map((k) =>
        admin('GET', `/admin/keys/${encodeURIComponent(k.id)}/usage`)
          .then((u) => [k.id, normalizeUsage(u)])
          .catch(() => [k.id, null])));
      if (!alive) return;
      usageById.clear();
      for (const [id, u] of results) if (u) usageById.set(id, u);
      fillScope();
      draw();
      updated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
    } catch (error) {
      if (alive) replace(body, errorBox(error, 'Could not load usage.'));
    }
  }

  function fillScope() {
    const chosen = scope.value;
    replace(scope, h('option', { value: '' }, 'Whole account'),
      keys.map((k) => h('option', { value: k.id }, `${k.name} (${k.prefix}…)${k.status !== 'active' ? ` — ${k.status}` : ''}`)));
    if (keys.some((k) => k.id === chosen)) scope.value = chosen;
  }

  function draw() {
    if (!keys.length) {
      replace(body, h('div', { class: 'empty' },
        h('h2', {}, 'No usage yet'),
        h('p', {}, ctx.apiAllowed ? 'Create an API key and send a request from the Playground: it shows up here within seconds.' : 'Usage appears once the account is on Wiz Bot or Wiz Pro and has API keys.'),
        ctx.apiAllowed ? h('a', { class: 'btn btn-primary', href: '#/keys' }, 'Go to API Keys') : null));
      return;
    }
    const key = keys.find((k) => k.id === scope.value) || null;
    const usage = key ? usageById.get(key.id) : sumUsage([...usageById.values()]);
    if (!usage) {
      replace(body, errorBox(new Error('The usage of this key could not be loaded.'), 'No data.'));
      return;
    }
    const limit = key ? key.dailyLimit : null;
    const total30 = usage.days.reduce((a, d) => a + d.count, 0);
    const lastHour = usage.minutes.reduce((a, m) => a + m.count, 0);
    const refusedTotal = Object.values(usage.refusals).reduce((a, n) => a + n, 0);
    const peak = Math.max(0, ...usage.minutes.map((m) => m.count));

    const tiles = h('div', { class: 'tiles' },
      tile('Requests today', fmtNumber(usage.today), limit ? `of ${fmtNumber(limit)} allowed per day` : 'all keys, UTC day', 'usage-today'),
      tile('Last 30 days', fmtNumber(total30), 'accepted requests'),
      tile('Last hour', fmtNumber(lastHour), key && key.ratePerMinute ? `peak ${fmtNumber(peak)}/min of ${fmtNumber(key.ratePerMinute)}` : `peak ${fmtNumber(peak)} per minute`),
      tile('Refused today', fmtNumber(refusedTotal), refusedTotal ? 'see reasons below' : 'nothing refused', 'usage-refused', refusedTotal ? 'warn' : null));

    const days = barChart({
      points: usage.days.map((d) => ({ value: d.count, label: fmtDay(d.date), title: d.date.toLocaleDateString(undefined, { weekday: 'short', month: 'short', day: 'numeric', timeZone: 'UTC' }), kind: limit && d.count >= limit ? 'full' : null })),
      ariaLabel: `Requests per day over the last 30 days${key ? ` for ${key.name}` : ''}`,
      tickEvery: 5,
      testId: 'chart-days',
    });
    const minutes = barChart({
      points: usage.minutes.map((m) => ({ value: m.count, label: m.at.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' }), title: m.at.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' }), kind: key && key.ratePerMinute && m.count >= key.ratePerMinute ? 'full' : null })),
      ariaLabel: `Requests per minute over the last hour${key ? ` for ${key.name}` : ''}`,
      tickEvery: 10,
      testId: 'chart-minutes',
    });
    const refusals = categoryBars({
      entries: Object.entries(usage.refusals)
        .filter(([, n]) => n > 0)
        .sort((a, b) => b[1] - a[1])
        .map(([code, n]) => ({ label: REFUSAL_LABELS[code] || code, code, value: n, kind: code.includes('limit') || code === 'rate_limited' ? 'warn' : 'danger' })),
      empty: 'No request was refused today.',
      testId: 'chart-refusals',
    });

    replace(body, 
      tiles,
      h('div', { class: 'chart-grid' },
        panel('Requests per day', 'Last 30 days, UTC', days),
        panel('Requests per minute', 'Last 60 minutes', minutes)),
      panel('Refused requests today, by reason', 'Requests the gateway turned away, by the error code the caller received. They do not count against any limit.', refusals));
  }

  scope.addEventListener('change', draw);
  refreshBtn.addEventListener('click', load);
  load();
  timer = setInterval(() => { if (document.visibilityState === 'visible') load(); }, REFRESH_MS);
  return () => {
    alive = false;
    clearInterval(timer);
  };
}

function tile(label, value, sub, testId, kind) {
  return h('div', { class: ['tile', kind && `tile-${kind}`], 'data-testid': testId },
    h('p', { class: 'tile-label' }, label),
    h('p', { class: 'tile-value' }, value),
    h('p', { class: 'tile-sub' }, sub));
}

function panel(title, sub, content) {
  return h('section', { class: 'panel' },
    h('h2', {}, title),
    sub ? h('p', { class: 'muted small' }, sub) : null,
    content);
}
