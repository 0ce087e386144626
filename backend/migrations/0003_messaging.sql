-- Messaging: templates, messages and their status timeline, bulk batches, chatbot flows and
-- runs, idempotency keys. Portable SQL (SQLite and PostgreSQL): TEXT ids, BIGINT unix-millisecond
-- times, TEXT JSON, BIGINT 0/1 flags. No foreign keys to `contacts`: contacts may be deleted while
-- their message history stays.

CREATE TABLE templates (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    name        TEXT NOT NULL,
    language    TEXT NOT NULL,
    body        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE UNIQUE INDEX templates_name ON templates (account_id, name, language);

-- Which accounts already got their example templates and demo flow, so that deleting every
-- template does not bring the examples back.
CREATE TABLE messaging_seeds (
    account_id  TEXT PRIMARY KEY REFERENCES accounts(id),
    seeded_at   BIGINT NOT NULL
);

CREATE TABLE batches (
    id           TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL REFERENCES accounts(id),
    status       TEXT NOT NULL,           -- running | completed | cancelled
    type         TEXT NOT NULL,           -- text | template
    spec         TEXT NOT NULL,           -- JSON: the message as requested (before rendering)
    total        BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    started_at   BIGINT,                  -- first message handed to the channel
    finished_at  BIGINT,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX batches_account ON batches (account_id, id);

-- One row per message, both directions. The status timeline is the set of *_at columns
-- (created_at is `queued` for outbound and `received` for inbound), so a transition is one
-- conditional UPDATE that can never move a status backwards.
CREATE TABLE messages (
    id                   TEXT PRIMARY KEY,
    account_id           TEXT NOT NULL REFERENCES accounts(id),
    direction            TEXT NOT NULL,   -- outbound | inbound
    contact_id           TEXT,            -- bulk recipients are linked to a contact when sent
    phone                TEXT NOT NULL,   -- `to` of an outbound, `from` of an inbound message
    type                 TEXT NOT NULL,   -- text | template | media | interactive | button
    content              TEXT NOT NULL,   -- JSON, rendered, fixed at creation
    status               TEXT NOT NULL,   -- queued | sent | delivered | read | failed | received
    error_code           TEXT,
    error_message        TEXT,
    batch_id             TEXT,
    batch_index          BIGINT,          -- the recipient's index in the bulk request
    reference            TEXT,            -- the client's reference for a bulk recipient
    flow_id              TEXT,            -- set on chatbot messages
    channel              TEXT NOT NULL,
    provider_message_id  TEXT,
    dispatch_at          BIGINT,          -- waiting for the dispatcher; NULL once claimed
    dispatched_at        BIGINT,          -- claimed and handed to the channel
    next_report_at       BIGINT,          -- when the channel's next status report is due
    created_at           BIGINT NOT NULL,
    sent_at              BIGINT,
    delivered_at         BIGINT,
    read_at              BIGINT,
    failed_at            BIGINT,
    updated_at           BIGINT NOT NULL
);
CREATE INDEX messages_account ON messages (account_id, id);
CREATE INDEX messages_contact ON messages (contact_id, id);
CREATE INDEX messages_batch ON messages (batch_id, id);
CREATE INDEX messages_batch_status ON messages (batch_id, status);
CREATE INDEX messages_dispatch ON messages (account_id, dispatch_at) WHERE dispatch_at IS NOT NULL;
CREATE INDEX messages_reports ON messages (next_report_at) WHERE next_report_at IS NOT NULL;
CREATE INDEX messages_claimed ON messages (dispatched_at)
    WHERE provider_message_id IS NULL AND dispatched_at IS NOT NULL;

CREATE TABLE flows (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    name        TEXT NOT NULL,
    definition  TEXT NOT NULL,            -- JSON: keywords, start, steps
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX flows_account ON flows (account_id, id);

-- A contact's place in a flow. The public view (`contacts.chatbot`: flow_id, step, paused) is
-- written in the same transaction; this row also keeps the trigger's variables for later steps.
CREATE TABLE chatbot_runs (
    contact_id  TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    flow_id     TEXT NOT NULL,
    step        TEXT NOT NULL,
    paused      BIGINT NOT NULL,
    variables   TEXT NOT NULL,            -- JSON object
    started_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX chatbot_runs_flow ON chatbot_runs (flow_id);

-- `Idempotency-Key` reservations and the first answer. A row without status_code is a request
-- still running; rows older than 24 h are swept.
CREATE TABLE idempotency_keys (
    account_id     TEXT NOT NULL,
    idem_key       TEXT NOT NULL,
    request_hash   TEXT NOT NULL,
    status_code    BIGINT,
    response_body  TEXT,
    created_at     BIGINT NOT NULL,
    PRIMARY KEY (account_id, idem_key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
