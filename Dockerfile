# One image for the five orderflow services and the `orderflow` CLI. The compose file runs
# each service from it with a different command (`order-service`, `payment-service`, …).
#
#   docker compose build                       # builds from source (the `source` stage)
#   docker build --build-arg BINARIES=prebuilt # copies binaries built on the host from dist/
#
# BINARIES picks the stage the runtime stage copies the binaries from; the stages not
# picked (with `prebuilt`: chef, planner and source) are skipped. The runtime stage is the
# same either way: a small Debian with a non-root user and CA certificates, no compiler,
# no shell tools beyond Debian's base.

ARG BINARIES=source
ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# --- the binaries built from source (what users get) ---------------------------------
# Three steps, so that a change to the sources does not rebuild the dependencies
# (librdkafka, compiled from C by rdkafka-sys, takes minutes): cargo-chef writes a recipe
# of the workspace's manifests (`planner`), the dependencies are built from that recipe
# alone in a layer of their own (`cook`), and only then are the sources copied and built.
# The cooked layer is reused as long as Cargo.toml / Cargo.lock do not change.
FROM ${RUST_IMAGE} AS chef
RUN cargo install cargo-chef --version 0.1.78 --locked
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS source
COPY --from=planner /src/recipe.json recipe.json
# librdkafka needs a C toolchain and make: both are in the official Rust image.
RUN cargo chef cook --release --locked --workspace --bins --recipe-path recipe.json
COPY . .
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
# CA certificates, so that a service can reach a broker or database over TLS (amqps://,
# Kafka over SSL, a managed PostgreSQL).
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
 && useradd --system --uid 10001 --user-group --create-home --home-dir /var/lib/orderflow orderflow
COPY --from=binaries /out/ /usr/local/bin/
USER orderflow
WORKDIR /var/lib/orderflow
# Listen on every interface inside the container; logs as JSON lines.
ENV ORDERFLOW_HTTP_ADDR=0.0.0.0:8080 \
    ORDERFLOW_LOG_FORMAT=json
EXPOSE 8080
CMD ["order-service"]
