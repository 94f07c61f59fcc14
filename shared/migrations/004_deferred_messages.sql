-- Messages of a known type in a contract version newer than this code knows (the producer was
-- deployed first): kept, acked, and processed once the consumer understands them.
CREATE TABLE deferred_messages (
    queue         text NOT NULL,
    message_id    uuid NOT NULL,
    message_type  text NOT NULL,
    version       integer NOT NULL,
    routing_key   text NOT NULL,
    body          bytea NOT NULL,
    reason        text NOT NULL,
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (queue, message_id)
);

CREATE INDEX deferred_messages_first_seen ON deferred_messages (queue, first_seen_at);
