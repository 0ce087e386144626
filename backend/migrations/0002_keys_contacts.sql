-- API keys, their usage, and contacts. Portable SQL (SQLite and PostgreSQL) like 0001.

-- Only hashes of the key and the secret are stored, plus the key's first 12 characters for
-- identification. `version` is taken from counters.key_version on every change, so a gateway
-- asking for "changes after version v" gets exactly the rows with version > v.
CREATE TABLE api_keys (
    id                     TEXT PRIMARY KEY,
    account_id             TEXT NOT NULL REFERENCES accounts(id),
    name                   TEXT NOT NULL,
    prefix                 TEXT NOT NULL,
    key_hash               TEXT NOT NULL UNIQUE,
    secret_hash            TEXT NOT NULL,
    -- The pair replaced by the last rotation, valid until prev_valid_until (unix ms).
    prev_key_hash          TEXT,
    prev_secret_hash       TEXT,
    prev_valid_until       BIGINT,
    -- 'active' or 'revoked'; expiry is derived from expires_at.
    status                 TEXT NOT NULL,
    rate_limit_per_minute  BIGINT NOT NULL,
    daily_limit            BIGINT NOT NULL,
    -- JSON array of addresses / CIDRs; empty = any.
    ip_whitelist           TEXT NOT NULL,
    expires_at             BIGINT,
    created_at             BIGINT NOT NULL,
    updated_at             BIGINT NOT NULL,
    revoked_at             BIGINT,
    last_used_at           BIGINT,
    version                BIGINT NOT NULL
);
CREATE INDEX api_keys_account ON api_keys (account_id, id);
CREATE INDEX api_keys_version ON api_keys (version);

-- Accepted requests per key per UTC minute (`minute` = unix seconds of its start); kept 2 days.
CREATE TABLE key_usage_minute (
    key_id    TEXT NOT NULL,
    minute    BIGINT NOT NULL,
    accepted  BIGINT NOT NULL,
    PRIMARY KEY (key_id, minute)
);
CREATE INDEX key_usage_minute_age ON key_usage_minute (minute);

-- Accepted requests per key per UTC day (`day` = 'YYYY-MM-DD').
CREATE TABLE key_usage_day (
    key_id    TEXT NOT NULL,
    day       TEXT NOT NULL,
    accepted  BIGINT NOT NULL,
    PRIMARY KEY (key_id, day)
);

-- Refusals attributable to a key, per UTC day and error code.
CREATE TABLE key_refusals_day (
    key_id  TEXT NOT NULL,
    day     TEXT NOT NULL,
    code    TEXT NOT NULL,
    count   BIGINT NOT NULL,
    PRIMARY KEY (key_id, day, code)
);

CREATE TABLE contacts (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    phone       TEXT NOT NULL,
    name        TEXT,
    -- JSON array of strings (mirrored in contact_tags for filtering).
    tags        TEXT NOT NULL,
    -- JSON object of string/number/bool values.
    attributes  TEXT NOT NULL,
    opted_in    BOOLEAN NOT NULL,
    -- JSON {"flow_id","step","paused"} or NULL.
    chatbot     TEXT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    UNIQUE (account_id, phone)
);
CREATE INDEX contacts_account ON contacts (account_id, id);

-- One row per (contact, tag): an exact, indexable tag filter without engine-specific JSON
-- functions.
CREATE TABLE contact_tags (
    account_id  TEXT NOT NULL,
    tag         TEXT NOT NULL,
    contact_id  TEXT NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
    PRIMARY KEY (account_id, tag, contact_id)
);
CREATE INDEX contact_tags_contact ON contact_tags (contact_id);

-- Versions start at 1: `since=0` means "send a full snapshot", so a gateway that got version 0
-- from an empty key table would otherwise be answered at once, forever, instead of long-polling.
UPDATE counters SET value = value + 1 WHERE name = 'key_version' AND value = 0;
