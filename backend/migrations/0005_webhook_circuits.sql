-- Fair webhook delivery (SPEC §10): each endpoint's circuit breaker, shared by every backend on
-- the database. After a failed attempt the endpoint is left alone until `circuit_until` (a backoff
-- that doubles with each consecutive failure), then one probe delivery at a time goes out until
-- one succeeds; endpoints that never succeeded also get one delivery at a time.
ALTER TABLE webhook_endpoints ADD COLUMN consecutive_failures BIGINT NOT NULL DEFAULT 0;
ALTER TABLE webhook_endpoints ADD COLUMN circuit_until BIGINT;
ALTER TABLE webhook_endpoints ADD COLUMN last_success_at BIGINT;
-- Claims go endpoint by endpoint: each one's oldest due deliveries.
CREATE INDEX webhook_deliveries_endpoint_due ON webhook_deliveries (endpoint_id, next_attempt_at)
    WHERE status = 'pending';
