-- Deliveries: the intent to carry a ledger transfer to an external CSMS (AMPECO), written in the
-- same transaction as the transfer and carried out by the dispatcher, never inside a transaction.
-- A row is `pending` (due at next_attempt_at), `sending` (claimed; sent_at is committed just before
-- the call, so a row without it was never sent), `uncertain` (the answer was lost: only evidence or
-- the operator settles it), `delivered`, `failed` (refused for good: the operator decides), or
-- `abandoned` (a failed one the operator gave up on: its transfer was reversed in the ledger).
CREATE TABLE deliveries (
    id              bigserial PRIMARY KEY,
    transfer_id     text NOT NULL UNIQUE REFERENCES transfers (id),
    user_id         text NOT NULL,
    direction       text NOT NULL CHECK (direction IN ('credit', 'debit')),
    amount_minor    bigint NOT NULL CHECK (amount_minor > 0),
    currency        char(3) NOT NULL,
    reason          text NOT NULL,
    app_info        text NOT NULL,
    state           text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'sending', 'uncertain', 'delivered', 'failed', 'abandoned')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_until     timestamptz,
    -- The user's CSMS balance read just before the call (NULL: not disclosed), and when the call
    -- went out; both committed before the call is made.
    balance_before  numeric,
    sent_at         timestamptz,
    uncertain_since timestamptz,
    -- When an uncertain delivery was handed to the operator (uncertain_resolve_after_s passed).
    escalated_at    timestamptz,
    settled_at      timestamptz,
    settled_by      text CHECK (settled_by IN ('response', 'notification', 'balance', 'operator')),
    balance_after   numeric,
    last_outcome    text,
    correlation_id  text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
-- At most one call in flight per user, held by the database itself: a sent call whose outcome is
-- unknown keeps the user's later deliveries waiting, so AMPECO's evidence stays unambiguous.
CREATE UNIQUE INDEX deliveries_one_in_flight_per_user ON deliveries (user_id) WHERE state IN ('sending', 'uncertain');
CREATE INDEX deliveries_due ON deliveries (next_attempt_at, id) WHERE state = 'pending';
CREATE INDEX deliveries_open_by_user ON deliveries (user_id, id) WHERE state IN ('pending', 'sending', 'uncertain');
CREATE INDEX deliveries_in_flight ON deliveries (state, lease_until) WHERE state IN ('sending', 'uncertain');
CREATE INDEX deliveries_by_user_sent ON deliveries (user_id, sent_at) WHERE sent_at IS NOT NULL;

-- Every change of a delivery's state that was not its own call's answer: evidence settlements and
-- each operator action (who, why), never updated or deleted.
CREATE TABLE delivery_actions (
    id          bigserial PRIMARY KEY,
    delivery_id bigint NOT NULL REFERENCES deliveries (id),
    action      text NOT NULL,
    from_state  text NOT NULL,
    to_state    text NOT NULL,
    actor       text NOT NULL,
    why         text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX delivery_actions_delivery ON delivery_actions (delivery_id, id);

-- userBalance.changed notifications received (signature checked); the hash of what the change is
-- (user, amounts, type, time) makes a duplicate or a replay a no-op, however it is serialised.
-- delivery_id: the delivery this change is the evidence of, once matched.
CREATE TABLE csms_notifications (
    id              bigserial PRIMARY KEY,
    identity_sha256 bytea NOT NULL UNIQUE,
    user_id         text NOT NULL,
    credit          numeric NOT NULL,
    debit           numeric NOT NULL,
    updated_balance numeric NOT NULL,
    currency        char(3) NOT NULL,
    change_type     text NOT NULL,
    transaction_id  bigint,
    occurred_at     timestamptz NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    delivery_id     bigint UNIQUE REFERENCES deliveries (id)
);
CREATE INDEX csms_notifications_user ON csms_notifications (user_id, occurred_at);
CREATE INDEX csms_notifications_received ON csms_notifications (received_at);

-- The notification subscriptions made for us, and the token each was created with: AMPECO signs a
-- subscription's notifications with that token, so it is kept as their key. NULL: the configured
-- static API token (never copied into the database).
CREATE TABLE csms_subscriptions (
    id           text PRIMARY KEY,
    callback_url text NOT NULL,
    signing_key  text,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- Operator corrections (`evtopup adjust`) are transfers of their own kind, not tied to a payment.
ALTER TABLE transfers ALTER COLUMN payment_id DROP NOT NULL;
ALTER TABLE transfers ALTER COLUMN order_id DROP NOT NULL;
ALTER TABLE transfers ADD COLUMN reason text;
-- Who posted a correction (the operator's name; never sent to the CSMS, where the driver sees it).
ALTER TABLE transfers ADD COLUMN actor text;

-- The dispatchers LISTEN here: a new delivery is tried as soon as its transaction commits.
CREATE FUNCTION notify_deliveries() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('deliveries', '');
    RETURN NULL;
END $$;
CREATE TRIGGER deliveries_notify AFTER INSERT ON deliveries FOR EACH STATEMENT EXECUTE FUNCTION notify_deliveries();
