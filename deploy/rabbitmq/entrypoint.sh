#!/bin/bash
# docker-compose only: wraps the official image's entrypoint.
#
# RabbitMQ seeds no default user when definitions are imported at boot, and a committed definitions
# file must not carry passwords. So this writes the users, with their passwords from the environment,
# into /etc/rabbitmq/definitions.d/00-users.json, readable only by the broker, and then starts the
# broker. The directory is imported file by file in name order, so the users exist before
# 10-topology.json (deploy/rabbitmq/definitions.json) grants the three service users their
# permissions: those live only there, equal to shared/broker_access.py SERVICE_PERMISSIONS (a unit
# test keeps them so). This file grants only the operator's and the administrator's.
# It runs on every start, so changing a password in .env and restarting the container applies it.
#
#   RABBITMQ_OPERATOR_USER       the operator's user: `evtopup setup`, dead-letter tools (default: evtopup)
#   RABBITMQ_OPERATOR_PASSWORD   its password (required; EVTOPUP__AMQP__PASSWORD)
#   RABBITMQ_PAGE_PASSWORD       password of evtopup_page (required; EVTOPUP__AMQP__PAGE_PASSWORD)
#   RABBITMQ_PAYMENTS_PASSWORD   password of evtopup_payments (required; EVTOPUP__AMQP__PAYMENTS_PASSWORD)
#   RABBITMQ_CREDITING_PASSWORD  password of evtopup_crediting (required; EVTOPUP__AMQP__CREDITING_PASSWORD)
#   RABBITMQ_ADMIN_PASSWORD      password of "admin", the management UI administrator (required)
#
# The service user names are fixed (the configuration's defaults, amqp.<service>_username), because
# definitions.json names them in its permissions.
set -euo pipefail

defs_dir=${EVTOPUP_DEFINITIONS_DIR:-/etc/rabbitmq/definitions.d}  # overridable for tests
vhost=evtopup
operator_user=${RABBITMQ_OPERATOR_USER:-evtopup}

fail() {
    echo "evtopup rabbitmq entrypoint: $*" >&2
    exit 64
}

# A JSON string literal for $1 (named $2 in errors).
json_string() {
    local value=$1
    [[ -n $value ]] || fail "$2 is empty"
    [[ $value != *[[:cntrl:]]* ]] || fail "$2 contains a control character"
    value=${value//\\/\\\\}
    value=${value//\"/\\\"}
    printf '"%s"' "$value"
}

operator_json=$(json_string "$operator_user" RABBITMQ_OPERATOR_USER)
case $operator_user in
    evtopup_page | evtopup_payments | evtopup_crediting | admin)
        fail "RABBITMQ_OPERATOR_USER must not be a service's user or admin" ;;
esac
operator_password_json=$(json_string "${RABBITMQ_OPERATOR_PASSWORD:-}" RABBITMQ_OPERATOR_PASSWORD)
page_password_json=$(json_string "${RABBITMQ_PAGE_PASSWORD:-}" RABBITMQ_PAGE_PASSWORD)
payments_password_json=$(json_string "${RABBITMQ_PAYMENTS_PASSWORD:-}" RABBITMQ_PAYMENTS_PASSWORD)
crediting_password_json=$(json_string "${RABBITMQ_CREDITING_PASSWORD:-}" RABBITMQ_CREDITING_PASSWORD)
admin_password_json=$(json_string "${RABBITMQ_ADMIN_PASSWORD:-}" RABBITMQ_ADMIN_PASSWORD)

mkdir -p "$defs_dir"
tmp=$(mktemp "$defs_dir/.00-users.XXXXXX")
trap 'rm -f "$tmp"' EXIT
cat >"$tmp" <<JSON
{
  "vhosts": [{"name": "$vhost", "description": "evtopup services", "tags": []}],
  "users": [
    {"name": $operator_json, "password": $operator_password_json, "tags": []},
    {"name": "evtopup_page", "password": $page_password_json, "tags": []},
    {"name": "evtopup_payments", "password": $payments_password_json, "tags": []},
    {"name": "evtopup_crediting", "password": $crediting_password_json, "tags": []},
    {"name": "admin", "password": $admin_password_json, "tags": ["administrator"]}
  ],
  "permissions": [
    {"user": $operator_json, "vhost": "$vhost", "configure": ".*", "write": ".*", "read": ".*"},
    {"user": "admin", "vhost": "$vhost", "configure": ".*", "write": ".*", "read": ".*"}
  ]
}
JSON
if [[ $(id -u) == 0 ]]; then
    chown rabbitmq:rabbitmq "$tmp"
fi
chmod 0400 "$tmp"
mv -f "$tmp" "$defs_dir/00-users.json"
trap - EXIT

exec docker-entrypoint.sh "$@"
