# syntax=docker/dockerfile:1
# bentogate's image: built with the Rust toolchain, run on distroless (glibc, no shell, no package
# manager) as the numeric non-root user 65532, so the kubelet can verify runAsNonRoot.
#
# Base images are pinned by digest: a rebuild gets the bytes that were reviewed. To move to newer
# ones, pull the tag and take its digest (`docker buildx imagetools inspect IMAGE:TAG`), then run
# deploy/lint/run.sh (hadolint) before committing.
#   docker build -t bentogate .
#   docker run --rm -p 8080:8080 -p 9902:9902 bentogate
FROM rust:1.89-slim-bookworm@sha256:d7fc7de78bb8c1469933aeecbf801314d30d7d6e9f0578bba4cfa285bfa37fe6 AS build
WORKDIR /src
# No debug info and no symbols in the shipped binary (the repository's release profile keeps line
# tables for profiling).
ENV CARGO_PROFILE_RELEASE_DEBUG=0 \
    CARGO_PROFILE_RELEASE_STRIP=symbols
# The dependencies alone first, on stub sources: this layer is rebuilt only when Cargo.toml or
# Cargo.lock change, not on every change to bentogate's own code.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && for bench in auth_hot_path routing forwarding pipeline; do echo 'fn main() {}' > "benches/$bench.rs"; done \
 && cargo build --release --locked --bin bentogate \
 && rm -rf src benches target/release/bentogate target/release/deps/bentogate-* \
           target/release/deps/libbentogate-* target/release/.fingerprint/bentogate-*
COPY clippy.toml config.example.yaml ./
COPY src src
COPY benches benches
COPY deploy/container.yaml deploy/container.yaml
RUN cargo build --release --locked --bin bentogate \
 && mkdir -p /out/var/lib/bentogate

FROM gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f
COPY --from=build /src/target/release/bentogate /usr/local/bin/bentogate
# The image's configuration, and beside it the example that config errors point to
# ("config.example.yaml documents every key"), in the working directory.
COPY --from=build /src/deploy/container.yaml /etc/bentogate/config.yaml
COPY --from=build /src/config.example.yaml /etc/bentogate/config.example.yaml
COPY --from=build --chown=65532:65532 /out/var/lib/bentogate /var/lib/bentogate
WORKDIR /etc/bentogate
# `serve`, `check` and every token command read this file unless --config says otherwise.
ENV BENTOGATE_CONFIG=/etc/bentogate/config.yaml
USER 65532:65532
# 8080: the proxy. 9902: probes and metrics only. The token API stays on 127.0.0.1:9901.
EXPOSE 8080 9902
VOLUME ["/var/lib/bentogate"]
ENTRYPOINT ["/usr/local/bin/bentogate"]
CMD ["serve"]
