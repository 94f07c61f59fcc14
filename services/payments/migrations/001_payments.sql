-- Payments at processors, and every processor event received (raw body kept for audit).
CREATE TABLE payments (
    id                  uuid PRIMARY KEY,
    order_id            uuid NOT NULL UNIQUE,
    user_id             text NOT NULL,
    integration_id      text NOT NULL,
    processor           text NOT NULL,
    method              text NOT NULL,
    amount_minor        bigint NOT NULL CHECK (amount_minor > 0),
    bonus_minor         bigint NOT NULL CHECK (bonus_minor >= 0),
    fee_minor           bigint NOT NULL CHECK (fee_minor >= 0),
    -- What the processor charges the driver: the top-up amount plus the method's fee.
    charge_minor        bigint NOT NULL CHECK (charge_minor = amount_minor + fee_minor),
    currency            char(3) NOT NULL,
    status              text NOT NULL,
    status_reason       text,
    processor_reference text,
    redirect_url        text,
    correlation_id      text NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (integration_id, processor_reference)
);
CREATE INDEX payments_open ON payments (updated_at) WHERE status IN ('created', 'pending');

CREATE TABLE processor_events (
    id                  bigserial PRIMARY KEY,
    integration_id      text NOT NULL,
    event_id            text NOT NULL,
    processor_reference text NOT NULL,
    kind                text NOT NULL,
    payment_id          uuid REFERENCES payments (id),
    outcome             text NOT NULL DEFAULT 'received',
    body                bytea,
    received_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (integration_id, event_id)
);

-- State of the built-in sandbox processor (the pretend remote side): its checkouts.
CREATE TABLE sandbox_checkouts (
    reference       text PRIMARY KEY,
    integration_id  text NOT NULL,
    idempotency_key text NOT NULL,
    amount_minor    bigint NOT NULL CHECK (amount_minor > 0),
    currency        char(3) NOT NULL,
    method          text NOT NULL,
    return_url      text NOT NULL,
    status          text NOT NULL DEFAULT 'pending',
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (integration_id, idempotency_key)
);
