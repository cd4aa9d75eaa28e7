# Build stage: the whole workspace (migrations are embedded into the binary at compile
# time, so they are copied too).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p gateway

# Runtime stage: a slim Debian with only the binary, run as an unprivileged user.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/parley --create-home parley
COPY --from=build /src/target/release/gateway /usr/local/bin/gateway
USER parley
WORKDIR /var/lib/parley
ENV PARLEY_LISTEN=0.0.0.0:8080 \
    PARLEY_DATA_DIR=/var/lib/parley
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --retries=3 CMD ["gateway", "healthcheck"]
ENTRYPOINT ["gateway"]
CMD ["serve"]
