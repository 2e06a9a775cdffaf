# A local stand-in for the official rabbitmq:*-management image, used by
# scripts/compose-test.sh only (no image can be pulled on the test machine). Debian's own
# RabbitMQ on the local Debian base, with the management plugin, `guest` allowed from
# other containers (as the official image allows it), data in /var/lib/rabbitmq.
# `rabbitmq-diagnostics` is on PATH, so the compose file's own healthcheck runs unchanged.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d \
 && apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends rabbitmq-server \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
 && rabbitmq-plugins enable --offline rabbitmq_management >/dev/null
COPY rabbitmq.conf /etc/rabbitmq/rabbitmq.conf
COPY rabbitmq-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
VOLUME /var/lib/rabbitmq
EXPOSE 5672 15672
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["rabbitmq-server"]
