-- Per-account channel settings (simulated by default, or the WhatsApp Business Cloud API), the
-- status reports that arrive before the send that caused them is recorded, and the indexes the
-- Cloud API channel needs.

-- One row per account that has configured a channel; no row = `simulated`. The access token and
-- the app secret are sealed with the backend's secrets key (never stored in the clear).
CREATE TABLE channel_settings (
    account_id         TEXT PRIMARY KEY REFERENCES accounts(id),
    kind               TEXT NOT NULL,     -- simulated | whatsapp_cloud
    phone_number_id    TEXT,
    waba_id            TEXT,
    access_token       TEXT,              -- sealed
    access_token_last4 TEXT,              -- shown masked in the console
    app_secret         TEXT,              -- sealed
    verify_token       TEXT,              -- the webhook handshake token given to Meta
    updated_at         BIGINT NOT NULL
);

-- A Cloud API status callback can outrun the transaction that records the send's wamid; such a
-- report waits here and is applied once the wamid is known (or dropped after a day).
CREATE TABLE channel_pending_reports (
    id                   TEXT PRIMARY KEY,
    account_id           TEXT NOT NULL,
    provider_message_id  TEXT NOT NULL,
    status               TEXT NOT NULL,
    at                   BIGINT NOT NULL,
    error_code           TEXT,
    error_message        TEXT,
    created_at           BIGINT NOT NULL
);
CREATE INDEX channel_pending_reports_wamid ON channel_pending_reports (provider_message_id);
CREATE INDEX channel_pending_reports_created ON channel_pending_reports (created_at);

-- Status callbacks and inbound duplicates find messages by the provider's id; the 24-hour
-- customer-service window is the newest inbound message from the number.
CREATE INDEX messages_provider_id ON messages (account_id, provider_message_id)
    WHERE provider_message_id IS NOT NULL;
CREATE INDEX messages_inbound_phone ON messages (account_id, phone, created_at)
    WHERE direction = 'inbound';

-- Sends the provider refused for throughput (Cloud API 130429 / HTTP 429) and re-queued.
ALTER TABLE messages ADD COLUMN throttle_retries BIGINT NOT NULL DEFAULT 0;
