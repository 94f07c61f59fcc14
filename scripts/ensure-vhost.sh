#!/usr/bin/env bash
# Create a RabbitMQ virtual host (if missing), give USER full rights on it, and set evtopup's broker
# policies (delivery limit, dead-lettering, alternate exchange) from their one definition in
# shared/amqp.py: ensure-vhost.sh VHOST [USER]. DELIVERY_LIMIT overrides the default limit.
set -eu
vhost=$1
user=${2:-guest}
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON_BIN:-$repo/.venv/bin/python}
if ! rabbitmqctl -q list_vhosts name | grep -qxF "$vhost"; then
  rabbitmqctl -q add_vhost "$vhost"
fi
rabbitmqctl -q set_permissions -p "$vhost" "$user" '.*' '.*' '.*'
(cd "$repo" && "$python" -m shared.amqp "$vhost" ${DELIVERY_LIMIT:+--delivery-limit "$DELIVERY_LIMIT"})
