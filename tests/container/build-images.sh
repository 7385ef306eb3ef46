#!/usr/bin/env bash
# Builds the exporter and operator images for the container tests with the repository's own
# Dockerfile, offline: no registry is reachable, so
#   - the release binaries are built on the host (cargo), stripped and staged in .prebuilt/
#     (the Dockerfile's PREBUILT build argument copies them instead of running cargo);
#   - the runtime base is made from this machine's Debian 12 files: the shared libraries the
#     two binaries load (per ldd), CA certificates, /etc/passwd and /etc/group with the
#     distroless `nonroot` user 65532, and /tmp: what gcr.io/distroless/cc-debian12 holds;
#   - the builder base is busybox (Debian busybox-static): a shell with cp for the build stage.
# Both bases are imported with `docker import` under a tag that is the hash of their content,
# so an unchanged base (and the image layers on top of it) is reused on the next run.
#
# Needs a running Docker daemon (tests/container/dockerd.sh). Environment:
#   SPANSINK_TEST_EXPORTER_IMAGE  tag of the exporter image (default spansink-test/spansink-exporter:<version>)
#   SPANSINK_TEST_OPERATOR_IMAGE  tag of the operator image (default spansink-test/spansink-operator:<version>)
#   CARGO_TARGET_DIR              cargo's build directory (default $HOME/.cache/spansink-target)
set -euo pipefail
cd "$(dirname "$0")/../.."

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/spansink-target}
version=$(awk -F'"' '/^version = / { print $2; exit }' Cargo.toml)
exporter_image=${SPANSINK_TEST_EXPORTER_IMAGE:-spansink-test/spansink-exporter:$version}
operator_image=${SPANSINK_TEST_OPERATOR_IMAGE:-spansink-test/spansink-operator:$version}
bins=(spansink-exporter spansink-operator)

docker info >/dev/null 2>&1 || {
  echo "no Docker daemon answers: start one (tests/container/dockerd.sh does)" >&2
  exit 1
}
if [ ! -x /bin/busybox ] || ! /bin/busybox --list | grep -qx sh; then
  echo "== installing busybox-static (the offline builder base)"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends busybox-static
fi

echo "== release build (${bins[*]})"
start=$SECONDS
cargo build --release --locked -p spansink-exporter -p spansink-operator
echo "release build: $((SECONDS - start)) s"

rm -rf .prebuilt
mkdir -p .prebuilt
for b in "${bins[@]}"; do
  # Strip at copy time: the release profile keeps line tables for backtraces and profiling;
  # the image does not need them (and changing the profile would rebuild everything).
  strip --strip-all -o ".prebuilt/$b" "$CARGO_TARGET_DIR/release/$b"
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Imports the directory $1 as image $2:<hash of its tar> unless that exists; prints the name.
import_dir() {
  local dir=$1 repo=$2 tar="$work/$(basename "$1").tar"
  # Deterministic tar (sorted, fixed times, numeric root owner) so the hash names the content;
  # the nonroot user's home is appended owned by 65532, as in distroless.
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$dir" \
    --exclude=./home/nonroot -cf "$tar" .
  if [ -d "$dir/home/nonroot" ]; then
    tar --mtime=@0 --owner=65532 --group=65532 --numeric-owner -C "$dir" -rf "$tar" ./home/nonroot
  fi
  local name="$repo:$(sha256sum "$tar" | cut -c1-16)"
  if ! docker image inspect "$name" >/dev/null 2>&1; then
    docker import --message "spansink test base, made by tests/container/build-images.sh" \
      "$tar" "$name" >/dev/null
  fi
  echo "$name"
}

echo "== runtime base (host Debian files the binaries need)"
rt="$work/runtime"
mkdir -p "$rt/etc/ssl/certs" "$rt/tmp" "$rt/home/nonroot"
chmod 1777 "$rt/tmp"
libs=$(for b in "${bins[@]}"; do ldd ".prebuilt/$b"; done)
if grep -q 'not found' <<<"$libs"; then
  echo "a shared library the binaries need is missing on this machine:" >&2
  grep 'not found' <<<"$libs" >&2
  exit 1
fi
# Only what gcr.io/distroless/cc-debian12 ships (libc6, libgcc-s1, libstdc++6, libgomp1,
# libssl3): a binary that needs more would start here and fail on the upstream base.
distroless_cc='^(linux-vdso\.so\.1|/lib64/ld-linux-x86-64\.so\.2|lib(c|m|mvec|dl|pthread|rt|resolv|util|anl|gcc_s|stdc\+\+|gomp|ssl|crypto)\.so\.[0-9.]+)$'
extra=$(awk '{ print $1 }' <<<"$libs" | grep -v ':$' | sort -u | grep -Ev "$distroless_cc" || true)
if [ -n "$extra" ]; then
  echo "the binaries need libraries that gcr.io/distroless/cc-debian12 does not have:" >&2
  echo "$extra" >&2
  exit 1
fi
# `name => /path (addr)` and the loader's `/lib64/ld-linux-x86-64.so.2 (addr)`; vdso has no file.
for lib in $(awk '$2 == "=>" { print $3 } $1 ~ /^\// { print $1 }' <<<"$libs" | sort -u); do
  mkdir -p "$rt$(dirname "$lib")"
  cp -L "$lib" "$rt$lib"
done
cp -L /etc/ssl/certs/ca-certificates.crt "$rt/etc/ssl/certs/ca-certificates.crt"
cp -L /etc/os-release "$rt/etc/os-release"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$rt/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' >"$rt/etc/group"
printf 'hosts: files dns\n' >"$rt/etc/nsswitch.conf"
runtime_base=$(import_dir "$rt" spansink-test/runtime-base)
echo "$runtime_base"

echo "== builder base (busybox)"
bb="$work/builder"
mkdir -p "$bb/bin" "$bb/tmp"
chmod 1777 "$bb/tmp"
cp /bin/busybox "$bb/bin/busybox"
for applet in $(/bin/busybox --list); do
  [ -e "$bb/bin/$applet" ] || ln -s busybox "$bb/bin/$applet"
done
builder_base=$(import_dir "$bb" spansink-test/builder-base)
echo "$builder_base"

# The legacy builder: dockerd 20.10 with the v28 CLI has no buildx plugin here.
build() {
  local target=$1 tag=$2 start=$SECONDS
  echo "== docker build --target $target -t $tag"
  # VERSION is left to the Dockerfile's default: the tests check it against the workspace.
  DOCKER_BUILDKIT=0 docker build --target "$target" -t "$tag" \
    --build-arg BUILDER_IMAGE="$builder_base" \
    --build-arg RUNTIME_IMAGE="$runtime_base" \
    --build-arg PREBUILT=.prebuilt \
    .
  echo "$tag: $(docker image inspect -f '{{.Size}}' "$tag") bytes, built in $((SECONDS - start)) s"
}
build exporter "$exporter_image"
build operator "$operator_image"
