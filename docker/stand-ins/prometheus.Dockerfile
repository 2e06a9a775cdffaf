# A local stand-in for the official prom/prometheus image, used by scripts/compose-test.sh
# only (no image can be pulled on the test machine). Debian's own Prometheus on the local
# Debian base, run the way the official image runs it: the binary as the entrypoint (the
# compose file's `command` is its flags), the configuration at
# /etc/prometheus/prometheus.yml (mounted by the compose file), samples in /prometheus,
# not as root. `wget` is on PATH, so the compose file's own healthcheck runs unchanged.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d \
 && apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus wget \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
 && mkdir -p /prometheus && chown nobody:nogroup /prometheus
USER nobody
VOLUME /prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
