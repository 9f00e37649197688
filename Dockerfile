# syntax=docker/dockerfile:1
# cxpulse container image: a locked release build on Debian bookworm, run on
# bookworm-slim with exactly the shared libraries the binary links.
#
#   docker build -t ghcr.io/cxpulse/cxpulse:$(version) .
#
# The builder and the runtime are the same Debian release, so the OpenSSL and
# zlib the binary was linked against are the ones it loads.
# deploy/checks/image_libs.py (run by scripts/check-deploy) compares the
# binary's `ldd` with the packages the runtime stage installs.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
# librdkafka (rdkafka-sys runs its ./configure and make), zstd and jemalloc
# (tikv-jemallocator) are compiled from source with gcc (librdkafka's
# configure also probes g++); OpenSSL and zlib are linked dynamically from
# Debian, found by pkg-config.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      gcc g++ make pkg-config libssl-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto proto
COPY src src
# Cargo checks that every declared [[test]] and [[bench]] file exists.
COPY benches benches
COPY tests tests
# Shown as cxpulse_build_info{revision}: docker build --build-arg CXPULSE_REVISION=$(git rev-parse HEAD)
ARG CXPULSE_REVISION=unknown
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin cxpulse \
 && install -D -m 0755 target/release/cxpulse /out/cxpulse

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# One package per library the binary loads (`ldd`): libssl.so.3 and
# libcrypto.so.3 (libssl3), libz.so.1 (zlib1g), libgcc_s.so.1 (libgcc-s1),
# libc, libm and the loader (libc6). ca-certificates lets TLS to brokers with
# a public CA work without ssl.ca.location.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libssl3 zlib1g libgcc-s1 libc6 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/cxpulse /usr/local/bin/cxpulse
# The documented defaults, so `docker run IMAGE` starts; Kubernetes mounts its
# own cxpulse.toml over this directory.
COPY config/default.toml /etc/cxpulse/cxpulse.toml
# Non-root, numeric (so runAsNonRoot can be verified); nothing is written to
# the filesystem, which may be mounted read-only.
USER 65532:65532
EXPOSE 9898
ENTRYPOINT ["cxpulse"]
CMD ["run", "--config", "/etc/cxpulse/cxpulse.toml"]
