-- Whose money a payment is: fixed when the checkout is created, from the integration's environment,
-- and carried on every event it announces (test money never reaches a real balance).
ALTER TABLE payments
    ADD COLUMN environment text NOT NULL DEFAULT 'production' CHECK (environment IN ('production', 'test'));
