-- Plumbing every service database has: the transactional outbox and the consumer inbox.
CREATE TABLE outbox (
    id             bigserial PRIMARY KEY,
    message_id     uuid NOT NULL UNIQUE,
    routing_key    text NOT NULL,
    correlation_id text NOT NULL,
    body           bytea NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE inbox (
    message_id   uuid PRIMARY KEY,
    message_type text NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now()
);
