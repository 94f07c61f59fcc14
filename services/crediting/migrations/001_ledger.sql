-- Double-entry ledger. A transfer's postings sum to zero; its id is derived from what caused it
-- (the payment), so a redelivered event finds the transfer instead of posting twice.
CREATE TABLE transfers (
    id             text PRIMARY KEY,
    kind           text NOT NULL,
    payment_id     uuid NOT NULL,
    order_id       uuid NOT NULL,
    user_id        text NOT NULL,
    amount_minor   bigint NOT NULL CHECK (amount_minor >= 0),
    bonus_minor    bigint NOT NULL CHECK (bonus_minor >= 0),
    fee_minor      bigint NOT NULL CHECK (fee_minor >= 0),
    currency       char(3) NOT NULL,
    correlation_id text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (payment_id, kind)
);

CREATE TABLE postings (
    id           bigserial PRIMARY KEY,
    transfer_id  text NOT NULL REFERENCES transfers (id),
    account      text NOT NULL,
    entry_kind   text NOT NULL,
    -- Signed: positive credits the account, negative debits it.
    amount_minor bigint NOT NULL CHECK (amount_minor <> 0),
    currency     char(3) NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX postings_account ON postings (account, id);
CREATE INDEX postings_transfer ON postings (transfer_id);

-- Materialised balances of driver accounts only: system accounts (processor clearing, fee revenue,
-- bonus expense) are summed from postings when needed, so no hot row serialises every credit.
CREATE TABLE user_balances (
    user_id       text NOT NULL,
    currency      char(3) NOT NULL,
    balance_minor bigint NOT NULL CHECK (balance_minor >= 0),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, currency)
);
