#!/usr/bin/env bash
# gen.sh regenerates the Go code for transport/proto into transport/fedzippb.
#
#   transport/gen.sh           regenerate and overwrite the committed files
#   transport/gen.sh --check   regenerate into a temporary directory and fail
#                              (exit 1, with a diff) if the committed files differ
#
# Pinned tools (the generated headers record them too; change them here only):
#   protoc              libprotoc 3.21.12 (Debian 12 package protobuf-compiler)
#   protoc-gen-go       google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
#   protoc-gen-go-grpc  google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.1
#
# The plugins are installed with `go install` into a temporary GOBIN, so the
# script needs Go and network access to the module proxy (or a warm module
# cache), and protoc from apt: `apt-get install -y protobuf-compiler`. When
# protoc is missing and the script runs as root with apt-get available, it
# installs it.
set -euo pipefail

PROTOC_VERSION="libprotoc 3.21.12"
PROTOC_GEN_GO="google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12"
PROTOC_GEN_GO_GRPC="google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.1"
MODULE="github.com/fedzip/fedzip"
PROTOS=(fedzip/v1/fedzip.proto)
GENERATED=(fedzip.pb.go fedzip_grpc.pb.go)

check=0
case "${1:-}" in
  "") ;;
  --check) check=1 ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
pkgdir="$root/transport/fedzippb"

if ! command -v protoc >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get install -y protobuf-compiler >/dev/null ||
      { apt-get update >/dev/null && apt-get install -y protobuf-compiler >/dev/null; }
  else
    echo "gen.sh: protoc not found; install it: apt-get install -y protobuf-compiler" >&2
    exit 1
  fi
fi
if [ "$(protoc --version)" != "$PROTOC_VERSION" ]; then
  echo "gen.sh: want protoc '$PROTOC_VERSION', have '$(protoc --version)'" >&2
  exit 1
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin" "$tmp/out"
# One `go install` per module: they are pinned independently.
(cd "$tmp" && GOBIN="$tmp/bin" go install "$PROTOC_GEN_GO")
(cd "$tmp" && GOBIN="$tmp/bin" go install "$PROTOC_GEN_GO_GRPC")

# Well-known types (google/protobuf/timestamp.proto) come with Debian's protoc.
includes=(-I "$root/transport/proto")
for d in /usr/include /usr/local/include; do
  if [ -f "$d/google/protobuf/timestamp.proto" ]; then includes+=(-I "$d"); break; fi
done

protoc "${includes[@]}" \
  --plugin=protoc-gen-go="$tmp/bin/protoc-gen-go" \
  --plugin=protoc-gen-go-grpc="$tmp/bin/protoc-gen-go-grpc" \
  --go_out="$tmp/out" --go_opt=module="$MODULE" \
  --go-grpc_out="$tmp/out" --go-grpc_opt=module="$MODULE" \
  "${PROTOS[@]}"

gen="$tmp/out/transport/fedzippb"
if [ "$check" = 1 ]; then
  status=0
  for f in "${GENERATED[@]}"; do
    if ! diff -u "$pkgdir/$f" "$gen/$f"; then status=1; fi
  done
  # Generated files that no .proto produces any more are stale.
  for f in "$pkgdir"/*.pb.go; do
    [ -e "$f" ] || continue
    if [ ! -e "$gen/$(basename "$f")" ]; then echo "gen.sh: stale $f"; status=1; fi
  done
  if [ "$status" != 0 ]; then
    echo "gen.sh: transport/fedzippb is out of date; run transport/gen.sh" >&2
  fi
  exit "$status"
fi

mkdir -p "$pkgdir"
rm -f "$pkgdir"/*.pb.go
for f in "${GENERATED[@]}"; do cp "$gen/$f" "$pkgdir/$f"; done
echo "gen.sh: wrote ${GENERATED[*]} to transport/fedzippb"
