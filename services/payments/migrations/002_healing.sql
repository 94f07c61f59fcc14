-- Healing what processors and the broker lose: per-payment poll schedule, the credit safety net,
-- re-examination of events for payments not (yet) known, and operator reviews.

-- next_poll_at: when the poller may ask the processor next (NULL: never again). poll_attempts counts
-- polls since the last status change and drives the backoff.
ALTER TABLE payments
    ADD COLUMN next_poll_at     timestamptz DEFAULT now(),
    ADD COLUMN poll_attempts    integer NOT NULL DEFAULT 0,
    ADD COLUMN poll_failures    integer NOT NULL DEFAULT 0,
    ADD COLUMN last_poll_error  text,
    ADD COLUMN succeeded_at     timestamptz,
    ADD COLUMN credited_at      timestamptz,
    ADD COLUMN announce_count   integer NOT NULL DEFAULT 0,
    ADD COLUMN next_announce_at timestamptz;

UPDATE payments SET next_poll_at = NULL WHERE status NOT IN ('created', 'pending', 'failed', 'expired');
UPDATE payments SET succeeded_at = updated_at WHERE status = 'succeeded';
-- Payments that succeeded more than a week before this migration are taken as credited (reconciliation
-- covers them); recent ones are announced again once, and the ledger answers for each.
UPDATE payments SET credited_at = updated_at WHERE status = 'succeeded' AND updated_at < now() - interval '7 days';

CREATE INDEX payments_poll_due ON payments (integration_id, next_poll_at) WHERE next_poll_at IS NOT NULL;
CREATE INDEX payments_uncredited ON payments (succeeded_at) WHERE status = 'succeeded' AND credited_at IS NULL;
CREATE INDEX payments_needs_review ON payments (updated_at) WHERE status = 'needs_review';

-- What the event said, so an event for a payment not known yet can be applied later without its body.
ALTER TABLE processor_events
    ADD COLUMN amount_minor       bigint,
    ADD COLUMN currency           text,
    ADD COLUMN reason             text,
    ADD COLUMN reexamine_attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN next_reexamine_at  timestamptz;

-- Events stored as unknown before this migration carry no amounts: they stay as they are (not scheduled).
CREATE INDEX processor_events_unknown ON processor_events (next_reexamine_at) WHERE outcome = 'unknown_payment';
CREATE INDEX processor_events_body_kept ON processor_events (received_at) WHERE body IS NOT NULL;
CREATE INDEX sandbox_checkouts_created ON sandbox_checkouts (created_at);

-- An operator's decision on a payment held for review: at most one per payment.
CREATE TABLE payment_reviews (
    payment_id uuid PRIMARY KEY REFERENCES payments (id),
    decision   text NOT NULL CHECK (decision IN ('credit', 'reject')),
    decided_by text NOT NULL CHECK (decided_by <> ''),
    note       text NOT NULL CHECK (note <> ''),
    decided_at timestamptz NOT NULL DEFAULT now()
);
