-- The relay publishes row by row: a claim is a lease (next_attempt_at in the future), a failed row
-- backs off by pushing next_attempt_at further, and a row that can never be published is parked
-- with its reason instead of holding back the others.
ALTER TABLE outbox
    ADD COLUMN attempts        integer NOT NULL DEFAULT 0,
    ADD COLUMN next_attempt_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN last_error      text,
    ADD COLUMN parked_at       timestamptz,
    ADD COLUMN parked_reason   text;

CREATE INDEX outbox_relayable ON outbox (id) WHERE parked_at IS NULL;
