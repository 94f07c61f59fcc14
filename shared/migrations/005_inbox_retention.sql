-- The retention janitor deletes inbox rows by age.
CREATE INDEX inbox_received_at ON inbox (received_at);
