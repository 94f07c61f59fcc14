-- Returns (unroutable) are counted apart from other failures: a row is parked after its own
-- returns, not after a broker outage's failed attempts plus one return.
ALTER TABLE outbox ADD COLUMN returns integer NOT NULL DEFAULT 0;
