// The console's two ways to talk to the server, both same-origin:
//  - admin(): the session-authenticated `/admin` API (cookie + X-CSRF-Token on every change);
//  - v1(): a live `/v1` call through the gateway with the key and secret the user pasted,
//    used by the Playground only. Credentials are passed in per call and never stored.

let csrfToken = null;
const lostHandlers = new Set();

export function setCsrf(token) {
  csrfToken = token || null;
}

/** Called with the error when an admin call finds the session gone (expired or logged out). */
export function onSessionLost(handler) {
  lostHandlers.add(handler);
}

export class ApiError extends Error {
  constructor(status, body, headers) {
    const err = body && body.error ? body.error : {};
    super(err.message || (status ? `HTTP ${status}` : 'The server could not be reached.'));
    this.status = status;
    this.code = err.code || (status ? `http_${status}` : 'network_error');
    this.requestId = err.request_id || (headers && headers.get('x-request-id')) || '';
    this.retryAfter = headers ? Number(headers.get('retry-after')) || null : null;
    this.body = body;
  }
}

async function readBody(response) {
  const text = await response.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return { raw: text };
  }
}

const SAFE = new Set(['GET', 'HEAD']);

/** One admin API call; resolves to the parsed JSON body (null for 204), throws ApiError. */
export async function admin(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (!SAFE.has(method) && csrfToken) headers['X-CSRF-Token'] = csrfToken;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'same-origin',
      cache: 'no-store',
      redirect: 'error',
    });
  } catch {
    throw new ApiError(0, null, null);
  }
  const data = await readBody(response);
  if (!response.ok) {
    const error = new ApiError(response.status, data, response.headers);
    // A wrong password at login is a 401 too, but not a lost session.
    const loginCall = method === 'POST' && path === '/admin/session';
    if (response.status === 401 && !loginCall) {
      for (const handler of lostHandlers) handler(error);
    }
    throw error;
  }
  return data;
}

/** A list answer is `{"data":[...]}` (SPEC §7 style) or a bare array; accept both. */
export function items(data) {
  if (Array.isArray(data)) return data;
  if (data && Array.isArray(data.data)) return data.data;
  if (data && Array.isArray(data.items)) return data.items;
  return [];
}

/**
 * A live `/v1` call with API key + secret (Bearer + X-Api-Secret, SPEC §3). Never throws for
 * HTTP errors: the Playground shows every answer as it came, with status, latency and headers.
 */
export async function v1({ method, path, body, key, secret, credential, idempotencyKey }) {
  // A Playground credential stands alone; a pasted key goes with its secret.
  const headers = credential
    ? { Accept: 'application/json', Authorization: `Bearer ${credential}` }
    : { Accept: 'application/json', Authorization: `Bearer ${key}`, 'X-Api-Secret': secret };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (idempotencyKey) headers['Idempotency-Key'] = idempotencyKey;
  const started = performance.now();
  try {
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      // The API authenticates by key, not by cookie: don't send the console session along.
      credentials: 'omit',
      cache: 'no-store',
      redirect: 'error',
    });
    const text = await response.text();
    const latencyMs = performance.now() - started;
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = null;
    }
    return {
      ok: response.ok,
      status: response.status,
      statusText: response.statusText,
      headers: [...response.headers.entries()],
      latencyMs,
      text,
      json,
    };
  } catch (e) {
    return { ok: false, status: 0, statusText: 'Network error', headers: [], latencyMs: performance.now() - started, text: String(e && e.message ? e.message : e), json: null };
  }
}

export const PLAN_NAMES = { free: 'Free', wiz_bot: 'Wiz Bot', wiz_pro: 'Wiz Pro' };

/** API management (keys, Playground, webhooks) needs Wiz Bot or Wiz Pro (SPEC §3). */
export function planAllowsApi(plan) {
  return plan === 'wiz_bot' || plan === 'wiz_pro';
}
