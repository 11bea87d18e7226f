# syntax=docker/dockerfile:1
#
# Anomos container images, built from the workspace root:
#
#   docker build --target tracker -t anomos-tracker .
#   docker build --target peer    -t anomos .
#
# One builder stage compiles both binaries once; two small runtime targets
# share the same base layers and each carries one binary, its entrypoint and
# a health check on its own operator port. Two targets rather than one image
# with both binaries: a peer host never needs the tracker (and the other way
# round), each image's HEALTHCHECK knows its port, and `docker run IMAGE
# --help` does the obvious thing. See deploy/README.md.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# ---- builder ---------------------------------------------------------------
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        pkg-config libssl-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Cache mounts keep the registry and the target dir between builds; the
# binaries are copied out because the cache mount is not part of the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p tracker -p peer \
    && install -D -m 0755 target/release/anomos-tracker /out/anomos-tracker \
    && install -D -m 0755 target/release/anomos /out/anomos

# ---- runtime base ----------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# libssl3: the binaries link the system OpenSSL; ca-certificates: a peer
# given no tracker pin checks the tracker against the system CAs.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        libssl3 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 anomos \
    && useradd --system --uid 10001 --gid anomos --home-dir /data \
        --shell /usr/sbin/nologin anomos \
    && install -d -o anomos -g anomos -m 0700 /data \
    && install -d -o anomos -g anomos -m 0755 /config
# The health probe is plain bash (/dev/tcp): no curl in the image.
COPY --chmod=0755 deploy/docker/healthcheck.sh /usr/local/bin/anomos-healthcheck
# Identities, the tracker's certificate, admin token and ledger live here.
VOLUME ["/data"]
WORKDIR /data
# Numeric, so Kubernetes can tell runAsNonRoot holds without a passwd lookup.
USER 10001:10001
STOPSIGNAL SIGTERM

# ---- tracker ---------------------------------------------------------------
FROM runtime AS tracker
COPY --from=builder /out/anomos-tracker /usr/local/bin/anomos-tracker
# Writes tracker.pin and peer.toml for the peers (compose's init step).
COPY --chmod=0755 deploy/docker/peer-config.sh /usr/local/bin/anomos-peer-config
# The operator listener binds all interfaces inside the container so that
# Prometheus can scrape it over a private network; publish only 8443.
ENV ANOMOS_HEALTH_PORT=9090
EXPOSE 8443/tcp 9090/tcp
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["anomos-healthcheck"]
ENTRYPOINT ["anomos-tracker"]
CMD ["--data-dir", "/data", "--listen", "0.0.0.0:8443", "--metrics", "0.0.0.0:9090"]

# ---- peer (relay, seed, get, make-torrent) ---------------------------------
FROM runtime AS peer
COPY --from=builder /out/anomos /usr/local/bin/anomos
ENV ANOMOS_HEALTH_PORT=9100
EXPOSE 7000/tcp 9100/tcp
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["anomos-healthcheck"]
ENTRYPOINT ["anomos"]
# Default: a relay configured by /config/peer.toml (tracker URL and pin).
CMD ["relay", "--config", "/config/peer.toml", "--data-dir", "/data", \
     "--listen", "0.0.0.0:7000", "--metrics", "0.0.0.0:9100"]
