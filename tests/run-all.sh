#!/usr/bin/env bash
# Runs the whole spansink test suite on a fresh machine: installs what the tests need
# (a Python virtualenv with the official OpenTelemetry SDK and the Helm SDK), builds,
# then runs every test. Fast unit tests first, end-to-end tests (tests/ crate) last.
#
# Environment:
#   CARGO_TARGET_DIR   build directory (default: $HOME/.cache/spansink-target)
#   SPANSINK_VENV      virtualenv to create/reuse (default: $HOME/.cache/spansink-venv)
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/spansink-target}
venv=${SPANSINK_VENV:-$HOME/.cache/spansink-venv}

# Python packages used by the tests, pinned so results do not drift.
py_packages=(
  "opentelemetry-sdk==1.45.2"
  "opentelemetry-exporter-otlp-proto-grpc==1.45.2"
  "opentelemetry-exporter-otlp-proto-http==1.45.2"
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

echo "== build"
cargo build --workspace --all-targets

echo "== unit and component tests"
cargo test --workspace --exclude spansink-tests

echo "== end-to-end tests"
cargo test -p spansink-tests
