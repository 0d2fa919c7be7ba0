# syntax=docker/dockerfile:1
# Multi-stage: build with the Rust toolchain, run on distroless (glibc, no shell) as non-root.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock clippy.toml config.example.yaml ./
COPY src src
COPY benches benches
COPY deploy deploy
RUN cargo build --release --locked --bin bentogate \
 && mkdir -p /out/var/lib/bentogate

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/bentogate /usr/local/bin/bentogate
COPY --from=build /src/deploy/container.yaml /etc/bentogate/config.yaml
COPY --from=build --chown=nonroot:nonroot /out/var/lib/bentogate /var/lib/bentogate
USER nonroot
EXPOSE 8080 9901
VOLUME ["/var/lib/bentogate"]
ENTRYPOINT ["/usr/local/bin/bentogate"]
CMD ["serve", "--config", "/etc/bentogate/config.yaml"]
