-- The version of the operator's terms (operator.terms_version) in force when the order was made:
-- what the driver accepted by continuing. NULL: the operator published no version.
ALTER TABLE orders ADD COLUMN terms_version text;
