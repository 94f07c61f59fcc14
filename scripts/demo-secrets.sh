#!/usr/bin/env bash
# Write random demo secrets to the file named by $1 (mode 600) unless it already exists.
set -eu
file=$1
[ -f "$file" ] && exit 0
mkdir -p "$(dirname "$file")"
umask 077
rand() { python3 -c 'import secrets; print(secrets.token_urlsafe(32))'; }
{
  echo "EVTOPUP__LAUNCH__SECRET=$(rand)"
  echo "EVTOPUP__CREDITING__API_TOKEN=$(rand)"
  echo "EVTOPUP__INTEGRATIONS__SANDBOX_DEMO__API_KEY=$(rand)"
  echo "EVTOPUP__INTEGRATIONS__SANDBOX_DEMO__WEBHOOK_SECRET=$(rand)"
  # The local broker's stock account; set your own for any real broker.
  echo "EVTOPUP__AMQP__PASSWORD=${EVTOPUP__AMQP__PASSWORD:-guest}"
} > "$file"
echo "demo secrets written to $file" >&2
