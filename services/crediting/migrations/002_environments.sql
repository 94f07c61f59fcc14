-- Test money is kept apart: every transfer and driver balance belongs to one environment, and a test
-- integration's credits never touch a driver's real balance.
ALTER TABLE transfers
    ADD COLUMN environment text NOT NULL DEFAULT 'production' CHECK (environment IN ('production', 'test'));
ALTER TABLE user_balances
    ADD COLUMN environment text NOT NULL DEFAULT 'production' CHECK (environment IN ('production', 'test'));
ALTER TABLE user_balances DROP CONSTRAINT user_balances_pkey;
ALTER TABLE user_balances ADD PRIMARY KEY (user_id, currency, environment);
