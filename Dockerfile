# netsentinel: multi-stage build; the runtime image holds only the binary and runs as a non-root user.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY migrations ./migrations
COPY benches ./benches
COPY examples ./examples
RUN cargo build --release --locked --bin netsentinel

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/netsentinel --create-home netsentinel
COPY --from=build /src/target/release/netsentinel /usr/local/bin/netsentinel
USER netsentinel
WORKDIR /var/lib/netsentinel
ENV NETSENTINEL_ADDR=0.0.0.0:8080 \
    NETSENTINEL_DATA_DIR=/var/lib/netsentinel/data
VOLUME ["/var/lib/netsentinel/data"]
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["netsentinel"]
CMD ["serve"]
