-- What a driver's receipt shows beyond the order's terms: the processor's reference for the payment
-- and when it succeeded (both from payment.succeeded; NULL until then, and for orders paid before
-- this migration).
ALTER TABLE orders ADD COLUMN processor_reference text, ADD COLUMN paid_at timestamptz;
-- The driver's history: their top-ups, newest first, a page at a time (keyset on created_at, id).
CREATE INDEX orders_user_history ON orders (user_id, created_at DESC, id DESC) WHERE payment_id IS NOT NULL;
