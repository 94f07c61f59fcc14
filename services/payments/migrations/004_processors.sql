-- Real processors: a payment is found by any of the processor's ids, money can come back (refunds,
-- disputes), refunds are asked for through an intent, and a create that cannot be repeated safely is
-- attempted once.

-- The processor's other ids of a payment, by kind ({"payment_intent": "pi_…", "capture": "…"}), and
-- the reverse lookup every event uses.
ALTER TABLE payments
    ADD COLUMN processor_ids      jsonb NOT NULL DEFAULT '{}',
    -- Of the amount charged, what the processor has confirmed going back (refunds, disputes lost or
    -- open), less what came back to the operator.
    ADD COLUMN returned_minor     bigint NOT NULL DEFAULT 0,
    -- When the one create of a processor without idempotency was sent (see Capabilities).
    ADD COLUMN create_attempted_at timestamptz;
ALTER TABLE payments ADD CONSTRAINT payments_returned_within_charge
    CHECK (returned_minor >= 0 AND returned_minor <= charge_minor);

CREATE TABLE payment_processor_ids (
    integration_id text NOT NULL,
    processor_id   text NOT NULL,
    payment_id     uuid NOT NULL REFERENCES payments (id),
    PRIMARY KEY (integration_id, processor_id)
);

-- Events name their payment by our reference, the processor's reference or another id of it.
ALTER TABLE processor_events
    ALTER COLUMN processor_reference DROP NOT NULL,
    ADD COLUMN merchant_reference text,
    ADD COLUMN payment_ids        jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN cause_id           text;

-- One row per refund or dispute the processor told us about, whatever events (and how many copies)
-- told it: each moves money at most once. ``debits`` counts how often the money was taken back.
CREATE TABLE payment_returns (
    integration_id text NOT NULL,
    cause          text NOT NULL CHECK (cause IN ('refund', 'dispute')),
    cause_id       text NOT NULL,
    payment_id     uuid NOT NULL REFERENCES payments (id),
    state          text NOT NULL CHECK (state IN ('refunded', 'refund_failed', 'opened', 'won', 'lost')),
    amount_minor   bigint NOT NULL CHECK (amount_minor > 0),
    debited        boolean NOT NULL,
    debits         integer NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (integration_id, cause, cause_id)
);
CREATE INDEX payment_returns_payment ON payment_returns (payment_id);

-- An operator's refund request: the intent, carried to the processor by the refund dispatcher with
-- ``id`` as the idempotency key (requested → accepted by the processor → confirmed by its event, or
-- refused). The ledger moves only when the processor confirms the refund.
CREATE TABLE refund_requests (
    id                  uuid PRIMARY KEY,
    payment_id          uuid NOT NULL REFERENCES payments (id),
    amount_minor        bigint NOT NULL CHECK (amount_minor > 0),
    currency            char(3) NOT NULL,
    requested_by        text NOT NULL CHECK (requested_by <> ''),
    why                 text NOT NULL CHECK (why <> ''),
    state               text NOT NULL DEFAULT 'requested'
                        CHECK (state IN ('requested', 'accepted', 'confirmed', 'refused')),
    processor_refund_id text,
    processor_status    text,
    error               text,
    attempts            integer NOT NULL DEFAULT 0,
    next_attempt_at     timestamptz NOT NULL DEFAULT now(),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refund_requests_due ON refund_requests (next_attempt_at) WHERE state = 'requested';
CREATE INDEX refund_requests_payment ON refund_requests (payment_id);

-- A payment the driver approved is open until we complete it.
DROP INDEX payments_open;
CREATE INDEX payments_open ON payments (updated_at) WHERE status IN ('created', 'pending', 'approved');
