#!/usr/bin/env bash
# Make sure PostgreSQL and RabbitMQ answer on this machine; start them if they are installed here
# but stopped. Exits non-zero with a clear message if either still does not answer.
set -u
pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q; }
rabbit_up() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }

if ! pg_up && command -v pg_ctlcluster >/dev/null; then
  echo "PostgreSQL is not answering; starting it" >&2
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start || true
fi
if ! rabbit_up && command -v rabbitmq-server >/dev/null; then
  echo "RabbitMQ is not answering; starting it" >&2
  rabbitmq-server -detached || true
fi
for _ in $(seq 1 60); do
  pg_up && rabbit_up && break
  sleep 1
done
pg_up || { echo "error: PostgreSQL does not answer on 127.0.0.1:5432" >&2; exit 1; }
# The tests run a few stacks at once (each service's pool and listeners, the operator's commands):
# PostgreSQL's default of 100 connections is too few. Raised once, on a server of this machine.
WANT_CONNECTIONS=300
have=$(psql -h 127.0.0.1 -U postgres -d postgres -Atc "SHOW max_connections" 2>/dev/null || echo 0)
if [ "${have:-0}" -lt "$WANT_CONNECTIONS" ] && command -v pg_ctlcluster >/dev/null; then
  echo "PostgreSQL allows ${have:-?} connections; raising it to $WANT_CONNECTIONS (a restart)" >&2
  psql -h 127.0.0.1 -U postgres -d postgres -qc "ALTER SYSTEM SET max_connections = $WANT_CONNECTIONS" \
    && pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main restart || true
  for _ in $(seq 1 60); do pg_up && break; sleep 1; done
  pg_up || { echo "error: PostgreSQL does not answer on 127.0.0.1:5432 after the restart" >&2; exit 1; }
fi
rabbit_up || { echo "error: RabbitMQ does not answer on 127.0.0.1:5672" >&2; exit 1; }
# The AMQP port opens before the node finishes booting; wait until it is really running.
if command -v rabbitmqctl >/dev/null; then
  rabbitmqctl await_startup --timeout 60 >/dev/null 2>&1 || { echo "error: RabbitMQ did not finish starting" >&2; exit 1; }
fi
