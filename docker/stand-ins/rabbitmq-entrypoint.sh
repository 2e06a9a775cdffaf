#!/bin/sh
# Runs RabbitMQ in the foreground as the rabbitmq user, its data in the mounted volume.
set -eu
mkdir -p /var/lib/rabbitmq /var/log/rabbitmq
chown -R rabbitmq:rabbitmq /var/lib/rabbitmq /var/log/rabbitmq
if [ "${1:-}" = rabbitmq-server ]; then
  shift
  export HOME=/var/lib/rabbitmq RABBITMQ_LOGS=-
  exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups /usr/lib/rabbitmq/bin/rabbitmq-server "$@"
fi
exec "$@"
