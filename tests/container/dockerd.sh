#!/usr/bin/env bash
# Makes a Docker daemon available to the container tests: installs Debian's docker.io if
# there is no dockerd, and starts one if none answers. Prints the PID of the dockerd it
# started (nothing if one was already running), so the caller can stop exactly that one.
#
# Environment:
#   SPANSINK_DOCKERD_LOG   log of a dockerd started here (default: /tmp/spansink-dockerd.log)
set -euo pipefail

sudo_cmd=""
[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"

if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
  echo "== installing docker.io" >&2
  $sudo_cmd apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends docker.io >&2
fi

if docker info >/dev/null 2>&1; then
  echo "== using the running Docker daemon" >&2
  exit 0
fi

log=${SPANSINK_DOCKERD_LOG:-/tmp/spansink-dockerd.log}
echo "== starting dockerd (log: $log)" >&2
# setsid: the daemon must not get the terminal's signals meant for the test run; its
# output goes to the log so that this script's stdout (the PID) closes.
if [ -n "$sudo_cmd" ]; then
  $sudo_cmd setsid dockerd >"$log" 2>&1 </dev/null &
else
  setsid dockerd >"$log" 2>&1 </dev/null &
fi
pid=$!
for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then
    echo "$pid"
    exit 0
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "dockerd exited at start; its log ($log):" >&2
    tail -n 30 "$log" >&2
    exit 1
  fi
  sleep 1
done
echo "dockerd did not answer within 60 s; its log ($log):" >&2
tail -n 30 "$log" >&2
kill "$pid" 2>/dev/null || true
exit 1
