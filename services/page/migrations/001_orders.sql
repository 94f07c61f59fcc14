-- Top-up orders, one per (user, Idempotency-Key). Prices are fixed on the server when the order is made.
CREATE TABLE orders (
    id              uuid PRIMARY KEY,
    user_id         text NOT NULL,
    idempotency_key text NOT NULL,
    request_hash    text NOT NULL,
    package_id      text,
    amount_minor    bigint NOT NULL CHECK (amount_minor > 0),
    bonus_minor     bigint NOT NULL CHECK (bonus_minor >= 0),
    fee_minor       bigint NOT NULL CHECK (fee_minor >= 0),
    currency        char(3) NOT NULL,
    method          text NOT NULL,
    integration_id  text NOT NULL,
    status          text NOT NULL DEFAULT 'pending',
    status_reason   text,
    payment_id      uuid,
    redirect_url    text,
    balance_minor   bigint,
    correlation_id  text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, idempotency_key)
);
