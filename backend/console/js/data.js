// Reading the admin API's records into one shape the screens share, tolerant of the field names
// the SPEC leaves open (e.g. where a key's usage today is reported).

import { admin, items } from './api.js';

function num(...values) {
  for (const v of values) {
    if (typeof v === 'number' && Number.isFinite(v)) return v;
    if (typeof v === 'string' && v !== '' && Number.isFinite(Number(v))) return Number(v);
  }
  return null;
}

export function normalizeKey(k) {
  const usage = k.usage && typeof k.usage === 'object' ? k.usage : {};
  return {
    id: k.id,
    name: k.name || '',
    prefix: k.prefix || k.key_prefix || '',
    status: k.status || (k.revoked_at ? 'revoked' : 'active'),
    ratePerMinute: num(k.rate_limit_per_minute, k.rate_limit),
    dailyLimit: num(k.daily_limit),
    whitelist: Array.isArray(k.ip_whitelist) ? k.ip_whitelist : [],
    createdAt: k.created_at,
    lastUsedAt: k.last_used_at,
    expiresAt: k.expires_at,
    today: num(k.usage_today, k.today_usage, k.requests_today, k.today, usage.today, usage.count) ?? 0,
    raw: k,
  };
}

export async function loadKeys() {
  return items(await admin('GET', '/admin/keys')).map(normalizeKey);
}

export async function loadWebhooks() {
  return items(await admin('GET', '/admin/webhooks'));
}

/**
 * A key's usage (`GET /admin/keys/{id}/usage`): today's count, 30 days per UTC day, the last
 * 60 minutes per minute, today's refusals by error code. Normalised to
 * { today, days: [{label, date, count}] x30, minutes: [{label, at, count}] x60, refusals: {code: n} }.
 */
export function normalizeUsage(u) {
  const data = u && u.data && !Array.isArray(u.data) ? u.data : u || {};
  const dayList = data.days || data.daily || data.per_day || data.last_30_days || [];
  const minuteList = data.minutes || data.per_minute || data.last_60_minutes || data.last_hour || [];
  const refusals = data.refusals || data.refused || data.refusals_today || data.refused_by_code || {};

  const dayCounts = new Map();
  for (const d of toEntries(dayList, 'date')) {
    const key = typeof d.at === 'number' ? new Date(toMillis(d.at)).toISOString().slice(0, 10) : String(d.at).slice(0, 10);
    dayCounts.set(key, (dayCounts.get(key) || 0) + d.count);
  }
  const days = [];
  const now = new Date();
  const todayUtc = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate());
  for (let i = 29; i >= 0; i -= 1) {
    const date = new Date(todayUtc - i * 86400000);
    const key = date.toISOString().slice(0, 10);
    days.push({ date, key, count: dayCounts.get(key) || 0 });
  }

  // Minutes: keyed by the minute's start (RFC 3339 or unix seconds/ms), or a plain 60-long
  // array of counts ending with the current minute.
  const minuteCounts = new Map();
  let plain = null;
  if (Array.isArray(minuteList) && minuteList.every((m) => typeof m === 'number')) {
    plain = minuteList.slice(-60);
  } else {
    for (const m of toEntries(minuteList, 'minute')) {
      const t = toMillis(m.at);
      if (t !== null) minuteCounts.set(Math.floor(t / 60000), m.count);
    }
  }
  const minutes = [];
  const nowMinute = Math.floor(Date.now() / 60000);
  for (let i = 59; i >= 0; i -= 1) {
    const m = nowMinute - i;
    const count = plain ? plain[plain.length - 1 - i] || 0 : minuteCounts.get(m) || 0;
    minutes.push({ at: new Date(m * 60000), count });
  }

  const refusalMap = {};
  if (Array.isArray(refusals)) {
    for (const r of refusals) refusalMap[r.code || r.reason] = num(r.count, r.n) || 0;
  } else {
    for (const [code, n] of Object.entries(refusals)) refusalMap[code] = num(n) || 0;
  }

  const today = num(data.today, data.today_count, data.count_today) ?? days[days.length - 1].count;
  return { today, days, minutes, refusals: refusalMap };
}

function toMillis(at) {
  if (typeof at === 'number') return at > 1e11 ? at : at * 1000;
  const t = Date.parse(at);
  return Number.isNaN(t) ? null : t;
}

function toEntries(list, timeField) {
  if (Array.isArray(list)) {
    return list.map((e) => ({
      at: e[timeField] ?? e.date ?? e.day ?? e.minute ?? e.at ?? e.start ?? e.t ?? e.ts,
      count: num(e.count, e.requests, e.accepted, e.n, e.value) || 0,
    }));
  }
  if (list && typeof list === 'object') {
    return Object.entries(list).map(([at, count]) => ({ at: /^\d+$/.test(at) ? Number(at) : at, count: num(count) || 0 }));
  }
  return [];
}

/** Adds several keys' usage into one account-wide series. */
export function sumUsage(list) {
  const base = normalizeUsage({});
  for (const u of list) {
    base.today += u.today;
    u.days.forEach((d, i) => { base.days[i].count += d.count; });
    u.minutes.forEach((m, i) => { base.minutes[i].count += m.count; });
    for (const [code, n] of Object.entries(u.refusals)) base.refusals[code] = (base.refusals[code] || 0) + n;
  }
  return base;
}

export const REFUSAL_LABELS = {
  missing_credentials: 'Missing credentials',
  malformed_credentials: 'Malformed credentials',
  invalid_credentials: 'Wrong key or secret',
  key_revoked: 'Key revoked',
  key_expired: 'Key expired',
  plan_required: 'Plan does not include API',
  ip_not_allowed: 'IP not whitelisted',
  rate_limited: 'Per-minute limit hit',
  daily_limit_exceeded: 'Daily limit hit',
  too_many_failed_attempts: 'Too many failed attempts',
};

export const EVENT_TYPES = [
  ['message.received', 'A customer sent a message'],
  ['message.sent', 'A message left for WhatsApp'],
  ['message.delivered', 'A message reached the phone'],
  ['message.read', 'The customer read a message'],
  ['message.failed', 'A message could not be delivered'],
  ['batch.completed', 'A bulk send finished'],
  ['contact.created', 'A contact was created'],
  ['contact.updated', 'A contact changed'],
  ['chatbot.handover', 'The chatbot handed a chat to a human'],
];
