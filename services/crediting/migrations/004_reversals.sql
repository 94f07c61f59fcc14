-- Money can come back from a payment several times (partial refunds, disputes): transfers are keyed
-- by their cause alone (their id: "refund:<integration>:<refund id>", "dispute:…", "undo:…"), no
-- longer one per payment and kind.
ALTER TABLE transfers DROP CONSTRAINT IF EXISTS transfers_payment_id_kind_key;
CREATE INDEX IF NOT EXISTS transfers_payment ON transfers (payment_id) WHERE payment_id IS NOT NULL;
