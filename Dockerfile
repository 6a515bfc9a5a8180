# Multi-stage build: compile in the Rust image, run from a small Debian base.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY static ./static
COPY examples ./examples
RUN cargo build --release --locked --bin courier

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data courier \
    && mkdir -p /data && chown courier /data
COPY --from=build /src/target/release/courier /usr/local/bin/courier
USER courier
ENV LOG_FORMAT=json
VOLUME ["/data"]
EXPOSE 5000
HEALTHCHECK --interval=30s --timeout=3s CMD ["/bin/bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/5000"]
ENTRYPOINT ["/usr/local/bin/courier"]
# The data folder is an argument, not DATA_DIR, so `docker run IMAGE --ephemeral` replaces it.
CMD ["--data-dir", "/data"]
