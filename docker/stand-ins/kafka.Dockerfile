# A local stand-in for the official apache/kafka image, used by scripts/compose-test.sh
# only (no image can be pulled on the test machine): tansu, a Kafka-protocol broker, built
# on the host by scripts/lib/brokers.sh (ensure_tansu_binary) and copied in. It reads
# LISTENER_URL, ADVERTISED_LISTENER_URL and STORAGE_ENGINE (docker/compose.test.yml sets
# them); it has no /opt/kafka tools, so the override gives it its own healthcheck.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
COPY tansu /usr/local/bin/tansu
ENV LISTENER_URL=tcp://0.0.0.0:9092 \
    ADVERTISED_LISTENER_URL=tcp://kafka:9092 \
    STORAGE_ENGINE=memory://tansu/
EXPOSE 9092
ENTRYPOINT ["/usr/local/bin/tansu"]
CMD ["broker"]
