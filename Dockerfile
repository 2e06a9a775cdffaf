# One image for the five orderflow services and the `orderflow` CLI. The compose file runs
# each service from it with a different command (`order-service`, `payment-service`, …).
#
#   docker-compose build                       # builds from source (the `source` stage)
#   docker build --build-arg BINARIES=prebuilt # copies binaries built on the host from dist/
#
# BINARIES picks the stage the runtime stage copies the binaries from; the stage not
# picked is skipped. The runtime stage is the same either way: a small Debian with a
# non-root user, no compiler, no shell tools beyond Debian's base.

ARG BINARIES=source
ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# --- the binaries built from source (what users get) ---------------------------------
FROM ${RUST_IMAGE} AS source
WORKDIR /src
COPY . .
# librdkafka is compiled from source by rdkafka-sys (needs a C toolchain and make: both
# are in the official Rust image).
RUN cargo build --release --locked --workspace --bins \
 && mkdir -p /out \
 && cp target/release/order-service target/release/payment-service \
       target/release/points-service target/release/sms-service \
       target/release/logging-service target/release/orderflow /out/

# --- the binaries built on the host (the compose test: no HTTPS to crates.io inside) ---
FROM ${RUNTIME_IMAGE} AS prebuilt
COPY dist/ /out/

FROM ${BINARIES} AS binaries

# --- what runs -------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE} AS runtime
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /var/lib/orderflow orderflow
COPY --from=binaries /out/ /usr/local/bin/
USER orderflow
WORKDIR /var/lib/orderflow
# Listen on every interface inside the container; logs as JSON lines.
ENV ORDERFLOW_HTTP_ADDR=0.0.0.0:8080 \
    ORDERFLOW_LOG_FORMAT=json
EXPOSE 8080
CMD ["order-service"]
