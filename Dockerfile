# syntax=docker/dockerfile:1
#
# palisade as a sidecar image. Build from the repository root:
#
#   docker build -t palisade:0.1.0 .
#
# Stage 1 builds the release binary in the official Rust image, pinned to
# the toolchain in rust-toolchain.toml (tests/deploy.rs keeps the two equal),
# guided by the committed profile pgo/palisade.profdata (bench/pgo.sh).
# Stage 2 is distroless "cc" (glibc, libgcc, CA certificates; no shell, no
# package manager), running as the image's non-root user 65532.
#
# The image carries a default policy at /etc/palisade/policy.toml, which
# PALISADE_CONFIG points at: the repository's policy.toml with one change,
# the admin listener on 0.0.0.0:9901 instead of 127.0.0.1:9901, so that the
# kubelet's probes and Prometheus can reach /healthz, /readyz and /metrics
# on the pod's address. Deployments mount their own policy over the
# directory /etc/palisade (a directory mount, never a subPath, so hot reload
# sees ConfigMap updates). No HEALTHCHECK: orchestrators probe the admin
# listener (see deploy/kubernetes/).
#
# The builder is Debian bookworm, whose glibc the distroless debian12 image
# carries: move the two together (e.g. trixie with cc-debian13).
# For reproducible builds, pin both base images by digest as well.

ARG RUST_VERSION=1.95.0

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY policy.toml ./
COPY pgo ./pgo
# The profile-guided build (bench/pgo.sh makes the profile, pgo/palisade.profdata,
# by running palisade under load): the compiler lays out and inlines the
# request path for the branches it takes. The cache mounts keep the crate
# registry and target/ between builds; the binary is copied out of the
# cached target/ in the same step.
ENV RUSTFLAGS="-Cprofile-use=/src/pgo/palisade.profdata"
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin palisade \
    && install -D -m 0755 target/release/palisade /out/palisade
# The default policy: the shipped one with the admin listener on every
# interface. The grep fails the build if the substitution did not apply.
RUN sed 's|^listen = "127.0.0.1:9901"|listen = "0.0.0.0:9901"|' policy.toml > /out/policy.toml \
    && grep -q '^listen = "0.0.0.0:9901"' /out/policy.toml

FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="palisade" \
      org.opencontainers.image.description="A reverse-proxy sidecar that enforces auth, rate limits, timeouts and request hygiene from one policy file" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"
COPY --from=build /out/palisade /usr/local/bin/palisade
COPY --from=build /out/policy.toml /etc/palisade/policy.toml
ENV PALISADE_CONFIG=/etc/palisade/policy.toml
USER 65532:65532
# 8080: server.listen (the traffic port); 9901: admin.listen (probes, /metrics).
EXPOSE 8080 9901
ENTRYPOINT ["palisade"]
CMD ["run"]
