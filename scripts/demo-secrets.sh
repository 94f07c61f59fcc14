#!/usr/bin/env bash
# Write random demo secrets to the file named by $1 (mode 600): each one that the file lacks, so a
# file from an older version gains the new ones and keeps the rest.
set -eu
file=$1
mkdir -p "$(dirname "$file")"
umask 077
touch "$file"
rand() { python3 -c 'import secrets; print(secrets.token_urlsafe(32))'; }
add() {
  grep -q "^$1=" "$file" || { echo "$1=$2" >> "$file"; added=1; }
}
added=0
add EVTOPUP__LAUNCH__SECRET "$(rand)"
add EVTOPUP__CREDITING__API_TOKEN "$(rand)"
# The AMPECO simulator's API token (`make run-ampeco`); unused with the built-in ledger.
add EVTOPUP__CSMS__API_TOKEN "$(rand)"
add EVTOPUP__INTEGRATIONS__SANDBOX_DEMO__API_KEY "$(rand)"
add EVTOPUP__INTEGRATIONS__SANDBOX_DEMO__WEBHOOK_SECRET "$(rand)"
# The operator's account on the local broker is its stock one; set your own for any real broker.
add EVTOPUP__AMQP__PASSWORD "${EVTOPUP__AMQP__PASSWORD:-guest}"
# Each service's own broker user (created by `evtopup broker-users`).
add EVTOPUP__AMQP__PAGE_PASSWORD "$(rand)"
add EVTOPUP__AMQP__PAYMENTS_PASSWORD "$(rand)"
add EVTOPUP__AMQP__CREDITING_PASSWORD "$(rand)"
[ "$added" = 1 ] && echo "demo secrets written to $file" >&2
exit 0
