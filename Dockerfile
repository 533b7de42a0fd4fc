# syntax=docker/dockerfile:1.7
#
# grok2api container image: one binary, every role.
#
#   docker build -t grok2api .
#   docker run --rm -p 8000:8000 grok2api serve           # everything in one process
#   docker run --rm grok2api gateway|worker|scheduler|migrate|sim|keygen|config --defaults
#
# The build stage keeps the cargo registry and the target directory in BuildKit cache
# mounts, so a rebuild after a source change recompiles only the workspace crates, not the
# dependencies. The runtime stage is distroless (glibc, CA certificates, no shell, no package
# manager) and runs as an unprivileged user; probe it over HTTP (/healthz, /readyz) from
# Compose or Kubernetes rather than with a HEALTHCHECK, since there is no curl inside.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS build
# cmake and clang: aws-lc-rs (the TLS crypto provider) builds its C sources with them.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake clang pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin grok2api \
    && install -D -m 0755 target/release/grok2api /out/grok2api \
    && install -d -m 0750 /out/data

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
LABEL org.opencontainers.image.title="grok2api" \
      org.opencontainers.image.description="A pool of Grok web accounts served as an OpenAI-compatible API" \
      org.opencontainers.image.licenses="MIT"
COPY --from=build /out/grok2api /usr/local/bin/grok2api
# Writable state for the one-process shape (SQLite, generated keys, local media). Mount a
# volume here to keep it; the distributed roles keep their state in PostgreSQL and S3.
COPY --from=build --chown=65532:65532 /out/data /data
WORKDIR /data
ENV GROK2API_BACKEND__DATA_DIR=/data \
    GROK2API_LOG__FORMAT=json
USER 65532:65532
# 8000: gateway (API, /metrics, /healthz, /readyz). 9100: the metrics listener of worker and
# scheduler (GROK2API_METRICS__LISTEN). 8300: the upstream simulator (`sim`).
EXPOSE 8000 9100 8300
STOPSIGNAL SIGTERM
ENTRYPOINT ["grok2api"]
CMD ["serve"]
