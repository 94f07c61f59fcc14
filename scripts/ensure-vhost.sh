#!/usr/bin/env bash
# Create a RabbitMQ virtual host (if missing) and give USER full rights on it: ensure-vhost.sh VHOST [USER]
set -eu
vhost=$1
user=${2:-guest}
if ! rabbitmqctl -q list_vhosts name | grep -qxF "$vhost"; then
  rabbitmqctl -q add_vhost "$vhost"
fi
rabbitmqctl -q set_permissions -p "$vhost" "$user" '.*' '.*' '.*'
