# Build stage. Dependencies are built in a layer of their own from the manifests and the
# lock file alone (Parley's crates replaced by empty ones), so a change to Parley's own
# code rebuilds only Parley, not the ~390 crates it depends on.
#
# The base images are build arguments so that an operator can pin them by digest (see
# `.env.example`): `RUST_IMAGE=rust:1.95-bookworm@sha256:…`.
ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim
FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates/channel-connector/Cargo.toml crates/channel-connector/Cargo.toml
COPY crates/conversation-store/Cargo.toml crates/conversation-store/Cargo.toml
COPY crates/fuzz-targets/Cargo.toml crates/fuzz-targets/Cargo.toml
COPY crates/gateway/Cargo.toml crates/gateway/Cargo.toml
COPY crates/interaction-router/Cargo.toml crates/interaction-router/Cargo.toml
COPY crates/loadgen/Cargo.toml crates/loadgen/Cargo.toml
COPY crates/notification-templates/Cargo.toml crates/notification-templates/Cargo.toml
COPY crates/parley-core/Cargo.toml crates/parley-core/Cargo.toml
COPY crates/pg-cluster/Cargo.toml crates/pg-cluster/Cargo.toml
COPY crates/sms-sim/Cargo.toml crates/sms-sim/Cargo.toml
COPY crates/test-support/Cargo.toml crates/test-support/Cargo.toml
COPY crates/whatsapp-sim/Cargo.toml crates/whatsapp-sim/Cargo.toml
RUN for dir in crates/*/; do mkdir -p "$dir/src" && touch "$dir/src/lib.rs"; done \
    && printf 'fn main() {}\n' > crates/gateway/src/main.rs \
    && printf 'fn main() {}\n' > crates/loadgen/src/main.rs \
    && mkdir -p crates/loadgen/benches tests/api \
    && printf 'fn main() {}\n' > crates/loadgen/benches/hot_paths.rs \
    && touch tests/api/main.rs \
    && cargo build --release --locked -p gateway
# Parley itself (migrations are embedded into the binary at compile time, so they are
# copied too). Its sources are touched so that cargo never takes the empty crates above
# for them, whatever times the build context carries.
COPY . .
RUN find crates tests -name '*.rs' -exec touch {} + \
    && cargo build --release --locked -p gateway

# Runtime stage: a slim Debian with only the binary, run as an unprivileged user.
FROM ${RUNTIME_IMAGE}
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
