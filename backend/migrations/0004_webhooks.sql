-- Webhooks (SPEC §8): the endpoints customers register, the outbox of deliveries fanned out from
-- `events`, and every attempt. Portable SQL (SQLite and PostgreSQL): TEXT ids, BIGINT
-- unix-millisecond times, TEXT JSON, BIGINT 0/1 flags.

CREATE TABLE webhook_endpoints (
    id                     TEXT PRIMARY KEY,            -- whk_...
    account_id             TEXT NOT NULL REFERENCES accounts(id),
    url                    TEXT NOT NULL,
    description            TEXT NOT NULL,
    events                 TEXT NOT NULL,               -- JSON array of event types, or ["*"]
    enabled                BIGINT NOT NULL,
    -- Needed in the clear to sign; never logged, never returned except at creation/rotation.
    secret                 TEXT NOT NULL,
    previous_secret        TEXT,                        -- still signs until previous_secret_until
    previous_secret_until  BIGINT,
    failing_since          BIGINT,                      -- first failure since the last success
    disabled_at            BIGINT,
    disabled_reason        TEXT,
    created_at             BIGINT NOT NULL,
    updated_at             BIGINT NOT NULL
);
CREATE INDEX webhook_endpoints_account ON webhook_endpoints (account_id, id);

-- What happened to an endpoint besides deliveries: disabled (410, failing too long), re-enabled,
-- secret rotated.
CREATE TABLE webhook_endpoint_log (
    id           TEXT PRIMARY KEY,
    endpoint_id  TEXT NOT NULL,
    at           BIGINT NOT NULL,
    message      TEXT NOT NULL
);
CREATE INDEX webhook_endpoint_log_endpoint ON webhook_endpoint_log (endpoint_id, id);

-- Events already fanned out. The marker is inserted with ON CONFLICT DO NOTHING in the same
-- transaction as the deliveries, so two fan-outs (restarts, several backends) never both win.
CREATE TABLE webhook_fanout (
    event_id    TEXT PRIMARY KEY,
    created_at  BIGINT NOT NULL                          -- the event's, for the resume point
);
CREATE INDEX webhook_fanout_created ON webhook_fanout (created_at);

-- The fan-out reads new events in (created_at, id) order.
CREATE INDEX webhook_events_created ON events (created_at, id);

-- The outbox: one row per (endpoint, event). A worker claims a due row by setting locked_until
-- (a lease); if it dies, the lease expires and the row is due again.
CREATE TABLE webhook_deliveries (
    id               TEXT PRIMARY KEY,                   -- dlv_...
    account_id       TEXT NOT NULL,
    endpoint_id      TEXT NOT NULL,
    event_id         TEXT NOT NULL,                      -- also the webhook-id header
    event_type       TEXT NOT NULL,
    payload          TEXT,                               -- body when not from `events` (webhook.test)
    status           TEXT NOT NULL,                      -- pending | succeeded | failed
    attempt_count    BIGINT NOT NULL,
    next_attempt_at  BIGINT,                             -- set while pending
    locked_until     BIGINT,
    locked_by        TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);
CREATE UNIQUE INDEX webhook_deliveries_once ON webhook_deliveries (endpoint_id, event_id);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, id);
CREATE INDEX webhook_deliveries_lock ON webhook_deliveries (locked_by) WHERE locked_by IS NOT NULL;

CREATE TABLE webhook_attempts (
    id           TEXT PRIMARY KEY,
    delivery_id  TEXT NOT NULL,
    endpoint_id  TEXT NOT NULL,
    at           BIGINT NOT NULL,
    outcome      TEXT NOT NULL,                          -- success | http_error | timeout | ...
    status_code  BIGINT,
    latency_ms   BIGINT NOT NULL,
    error        TEXT,
    response     TEXT                                    -- first 1 KiB of the response body
);
CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id, id);
CREATE INDEX webhook_attempts_endpoint ON webhook_attempts (endpoint_id);
