-- Launch tokens already exchanged for a session (by jti): a launch link works once. A row is kept
-- until its token has expired, after which the token is refused anyway and the row is pruned.
CREATE TABLE used_launch_tokens (
    jti        text PRIMARY KEY,
    user_id    text NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX used_launch_tokens_expires_at ON used_launch_tokens (expires_at);
