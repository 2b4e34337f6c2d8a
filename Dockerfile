# check=skip=FromPlatformFlagConstDisallowed
# Build in the Rust image; run as a non-root user in a slim image (the default target), or as a
# Forge Container (`--target forge-container`, docs/guide/running-on-atlassian.md).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY atlassian-connect.json ./
COPY crates crates
COPY migrations migrations
COPY src src
# Cargo.toml names this target; the manifest does not load without it.
COPY bench bench
RUN cargo build --release --locked --bin connect-axum

# A Forge Container: build it with `docker buildx build --platform linux/amd64 --target
# forge-container .` (the flag makes the build stage amd64 too, so that its binary runs here; the
# constant platform is deliberate, Forge runs nothing else, hence the check skipped on line 1).
# Forge runs it as UID/GID 1000 on a read-only root filesystem, with no volume: distroless (glibc
# and libgcc for the binary, no shell, no package manager); container mode writes no file (its
# store is in memory, its log lines Forge's JSON on stdout). FORGE_EGRESS_PROXY_URL, which Forge
# sets, switches it on.
FROM --platform=linux/amd64 gcr.io/distroless/cc-debian12:nonroot AS forge-container
COPY --from=build /src/target/release/connect-axum /usr/local/bin/connect-axum
USER 1000:1000
# Forge's health probe is an HTTP GET of the manifest's health route (/healthz): distroless has no
# shell for a HEALTHCHECK. Forge sends traffic to SERVER_PORT only, 8080 when unset.
# mimalloc's eagerly committed arenas keep ~11 MiB resident that the server never uses (idle
# 30 MiB against 19 MiB without them, bench/container.sh): too much of 64Mi. Read at process
# start, before main, so it is set here.
ENV SERVER_PORT=8080 \
    MIMALLOC_ARENA_EAGER_COMMIT=0
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/connect-axum"]

FROM debian:bookworm-slim AS server
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --create-home --home-dir /app app
COPY --from=build /src/target/release/connect-axum /usr/local/bin/connect-axum
USER app
WORKDIR /app
# /metrics is served on METRICS_PORT only, for a scraper inside the container network: publish
# PORT, never METRICS_PORT.
ENV BIND=0.0.0.0 \
    LOG_FORMAT=json \
    METRICS_PORT=9100 \
    PORT=3000
EXPOSE 3000
CMD ["connect-axum"]
