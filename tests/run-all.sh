#!/usr/bin/env bash
# Runs the whole spansink test suite on a fresh machine: installs what the tests need
# (C build packages for librdkafka; a Python virtualenv with the official OpenTelemetry
# SDK, the Helm SDK and the moto S3 server; Docker), builds, builds the container images
# with the repository's Dockerfile, then runs every test. Fast unit and component tests
# first, end-to-end and container tests (tests/ crate) last.
#
# Environment:
#   CARGO_TARGET_DIR   build directory (default: $HOME/.cache/spansink-target)
#   SPANSINK_TANSU     set here to the tansu broker built into $HOME/.cache/spansink-tools
#   SPANSINK_VENV      virtualenv to create/reuse (default: $HOME/.cache/spansink-venv)
#   SPANSINK_TEST_EXPORTER_IMAGE, SPANSINK_TEST_OPERATOR_IMAGE
#                      tags of the images the container tests build and run
#                      (default: spansink-test/spansink-{exporter,operator}:<version>)
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/spansink-target}
venv=${SPANSINK_VENV:-$HOME/.cache/spansink-venv}

# System packages: librdkafka (bundled, built by rdkafka-sys) needs OpenSSL and zlib headers;
# promtool (Debian prometheus) lints the exporter's /metrics; the sink tests start real
# PostgreSQL, Redis, RabbitMQ and ClickHouse servers themselves, on free loopback ports
# (the packages' own services are not used); the openssl CLI makes the TLS tests' certificates;
# the curl CLI is the receiver security tests' independent HTTP client, and the gzip and
# zstd CLIs compress its bodies (tests/tests/receiver_security.rs).
apt_packages=(build-essential pkg-config libssl-dev zlib1g-dev python3-venv prometheus
  postgresql redis-server rabbitmq-server clickhouse-server clickhouse-client openssl
  curl gzip zstd)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing system packages: ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Python packages used by the tests, pinned so results do not drift: the official
# OpenTelemetry SDK (end-to-end client), the Helm SDK (chart lint/render), moto (S3 server),
# osmem-server (OpenSearch API emulator: no real Elasticsearch/OpenSearch installs here),
# chdb (embedded current ClickHouse, checks the default DDL the old apt server cannot run),
# confluent-kafka (the Kafka tests' independent consumer, exporter/tests/servers/kafka_client.py).
py_packages=(
  "opentelemetry-sdk==1.45.2"
  "opentelemetry-exporter-otlp-proto-grpc==1.45.2"
  "opentelemetry-exporter-otlp-proto-http==1.45.2"
  "helm-python-sdk==0.2.2"
  "moto[server]==5.2.5"
  "osmem-server==0.1.6"
  "chdb==4.4.0"
  "confluent-kafka==2.16.1"
)

if [ ! -x "$venv/bin/python" ]; then
  echo "== creating Python virtualenv $venv"
  python3 -m venv "$venv"
fi
stamp="$venv/.spansink-packages"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "${py_packages[*]}" ]; then
  echo "== installing Python test packages"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${py_packages[@]}"
  echo "${py_packages[*]}" > "$stamp"
fi
export SPANSINK_PYTHON="$venv/bin/python"
export SPANSINK_VENV="$venv"

# tansu, a Kafka-protocol broker in Rust (exporter/tests/sink_kafka_broker.rs), built once
# into a cache outside the clone with its own target directory (~15-25 min on 2 cores);
# dynostore gives it the memory:// and s3:// storage engines.
tools=$HOME/.cache/spansink-tools
tansu_root=$tools/tansu-0.6.0
if [ ! -x "$tansu_root/bin/tansu" ]; then
  echo "== building tansu 0.6.0 into $tansu_root (log: $tools/tansu-build.log)"
  mkdir -p "$tools"
  CARGO_TARGET_DIR="$tools/tansu-build" cargo install --locked tansu@0.6.0 --features dynostore \
    --root "$tansu_root" > "$tools/tansu-build.log" 2>&1 \
    || { tail -30 "$tools/tansu-build.log"; exit 1; }
fi
export SPANSINK_TANSU="$tansu_root/bin/tansu"

log=$(mktemp)
dockerd_pid=""
cleanup() {
  rm -f "$log"
  # Only the daemon this script started, by its PID; its containers go with it.
  if [ -n "$dockerd_pid" ]; then
    echo "== stopping dockerd $dockerd_pid"
    kill "$dockerd_pid" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 1; done
  fi
}
trap cleanup EXIT

# Docker for the container tests: installed if missing, a daemon started if none answers.
dockerd_pid=$(bash tests/container/dockerd.sh)

echo "== build"
cargo build --workspace --all-targets

# Release binaries, local base images and both images from the Dockerfile (tests/container/).
version=$(awk -F'"' '/^version = / { print $2; exit }' Cargo.toml)
export SPANSINK_TEST_EXPORTER_IMAGE=${SPANSINK_TEST_EXPORTER_IMAGE:-spansink-test/spansink-exporter:$version}
export SPANSINK_TEST_OPERATOR_IMAGE=${SPANSINK_TEST_OPERATOR_IMAGE:-spansink-test/spansink-operator:$version}
bash tests/container/build-images.sh
# Containers a killed earlier run left behind (they hold ports and volumes).
stale=$(docker ps -aq --filter label=dev.spansink.test)
[ -z "$stale" ] || docker rm -f -v $stale >/dev/null

echo "== unit and component tests"
cargo test --workspace --exclude spansink-tests 2>&1 | tee -a "$log"

echo "== end-to-end tests"
cargo test -p spansink-tests --tests 2>&1 | tee -a "$log"

# One closing line for the whole suite (set -o pipefail has already stopped on a failure).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "summary: %d passed, %d failed\n", p, f }' "$log"
