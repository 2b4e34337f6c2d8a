# Build in the Rust image, run as a non-root user in a slim one.
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

FROM debian:bookworm-slim
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
