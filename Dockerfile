# Container images of spansink: `--target exporter` (spansink-exporter) and `--target operator`
# (spansink-operator). With network, from the repository top:
#
#   docker build --target exporter -t ghcr.io/spansink/spansink-exporter:0.1.0 .
#   docker build --target operator -t ghcr.io/spansink/spansink-operator:0.1.0 .
#
# Both targets share the `build` stage, so the second command reuses the first one's cargo build.
#
# Offline (no registry, as in tests/container/build-images.sh): the base images are build
# arguments, and PREBUILT names a directory inside the build context that holds release
# binaries built and stripped on the host. The build stage then copies them instead of running
# cargo; it only needs a POSIX shell with cp/mkdir (the tests use a busybox image). The runtime
# stages are the same either way, so the image the tests run is the image users build.
#
#   docker build --build-arg BUILDER_IMAGE=<local shell image> \
#     --build-arg RUNTIME_IMAGE=<local distroless-like image> --build-arg PREBUILT=.prebuilt ...
#
# The runtime base must provide what distroless/cc-debian12 does: glibc, libgcc_s, OpenSSL 3
# (librdkafka links it), zlib, CA certificates, a `nonroot` user 65532 and /tmp. Nothing in the
# runtime stages runs a shell, so a base without one works.

# rustc of the toolchain the workspace is built and tested with; bookworm = glibc 2.36 = cc-debian12.
ARG BUILDER_IMAGE=docker.io/library/rust:1.95-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${BUILDER_IMAGE} AS build
# Empty: build from source. Otherwise: a directory of the build context with stripped
# `spansink-exporter` and `spansink-operator` binaries, copied as they are.
ARG PREBUILT=
WORKDIR /src
COPY . .
RUN set -eu; \
    mkdir -p /out/bin /out/data; \
    if [ -n "$PREBUILT" ]; then \
      cp "$PREBUILT/spansink-exporter" "$PREBUILT/spansink-operator" /out/bin/; \
    else \
      cargo build --release --locked --bin spansink-exporter --bin spansink-operator; \
      cp target/release/spansink-exporter target/release/spansink-operator /out/bin/; \
      strip /out/bin/spansink-exporter /out/bin/spansink-operator; \
    fi

FROM ${RUNTIME_IMAGE} AS exporter
# Keep in step with the workspace version (a container test compares them).
ARG VERSION=0.1.0
ARG SOURCE=https://github.com/spansink/spansink
LABEL org.opencontainers.image.title="spansink-exporter" \
      org.opencontainers.image.description="Receives OpenTelemetry traces (OTLP gRPC/HTTP) and writes them to backends through a configurable sink chain" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/bin/spansink-exporter /usr/local/bin/spansink-exporter
# The data volume's mount point, writable by the exporter when no volume is mounted; the
# working directory, so `run` without --config (the embedded quickstart) writes ./spans there.
COPY --from=build --chown=65532:65532 /out/data /var/lib/spansink
WORKDIR /var/lib/spansink
USER 65532:65532
EXPOSE 4317 4318 8888
ENTRYPOINT ["/usr/local/bin/spansink-exporter"]
# What the operator's Deployment passes as args (operator/src/reconcile.rs: CONFIG_DIR/CONFIG_KEY).
CMD ["run", "--config", "/etc/spansink/config.yaml"]

FROM ${RUNTIME_IMAGE} AS operator
ARG VERSION=0.1.0
ARG SOURCE=https://github.com/spansink/spansink
LABEL org.opencontainers.image.title="spansink-operator" \
      org.opencontainers.image.description="Kubernetes operator that runs SpanSink resources as spansink exporter Deployments" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/bin/spansink-operator /usr/local/bin/spansink-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/spansink-operator"]
