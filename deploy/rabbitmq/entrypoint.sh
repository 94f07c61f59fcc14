#!/bin/bash
# docker-compose only: wraps the official image's entrypoint.
#
# RabbitMQ seeds no default user when definitions are imported at boot, and a committed definitions
# file must not carry passwords. So this writes the users and their permissions, from the
# environment, into /etc/rabbitmq/definitions.d/00-users.json (imported before 10-topology.json),
# readable only by the broker, and then starts the broker. It runs on every start, so changing a
# password in .env and restarting the container applies it.
#
#   RABBITMQ_APP_USER        the services' user (default: evtopup)
#   RABBITMQ_APP_PASSWORD    its password (required)
#   RABBITMQ_ADMIN_PASSWORD  password of "admin", the management UI administrator (required)
set -euo pipefail

defs_dir=/etc/rabbitmq/definitions.d
vhost=evtopup
app_user=${RABBITMQ_APP_USER:-evtopup}

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

user_json=$(json_string "$app_user" RABBITMQ_APP_USER)
app_password_json=$(json_string "${RABBITMQ_APP_PASSWORD:-}" RABBITMQ_APP_PASSWORD)
admin_password_json=$(json_string "${RABBITMQ_ADMIN_PASSWORD:-}" RABBITMQ_ADMIN_PASSWORD)

mkdir -p "$defs_dir"
tmp=$(mktemp "$defs_dir/.00-users.XXXXXX")
trap 'rm -f "$tmp"' EXIT
cat >"$tmp" <<JSON
{
  "vhosts": [{"name": "$vhost", "description": "evtopup services", "tags": []}],
  "users": [
    {"name": $user_json, "password": $app_password_json, "tags": []},
    {"name": "admin", "password": $admin_password_json, "tags": ["administrator"]}
  ],
  "permissions": [
    {"user": $user_json, "vhost": "$vhost", "configure": ".*", "write": ".*", "read": ".*"},
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
