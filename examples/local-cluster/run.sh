#!/usr/bin/env bash
# Builds fedzip and runs a coordinator cluster and training clients on this
# machine with `fedzip local`: all on 127.0.0.1, over mTLS with encrypted
# gossip. Kill any node, even the leader (see README.md): the others go on.
# It stops when training ends, or on Ctrl-C.
#
#   NODES=3 CLIENTS=10 ROUNDS=30 examples/local-cluster/run.sh
#   RESTART=1 examples/local-cluster/run.sh     # a killed node starts again
set -euo pipefail
NODES="${NODES:-3}"
CLIENTS="${CLIENTS:-10}"
ROUNDS="${ROUNDS:-30}"
CODEC="${CODEC:-topk1}"
BASE_PORT="${BASE_PORT:-17000}"
WORK="${WORK:-$(mktemp -d -t fedzip-example.XXXX)}"
extra=()
if [ -n "${RESTART:-}" ]; then extra+=(--restart); fi
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

# The binary goes beside the work folder, not into it: fedzip local uses
# only a new or empty folder, or one it made.
BIN="${BIN:-$(mktemp -d -t fedzip-bin.XXXX)}"
echo "building fedzip into $BIN"
(cd "$root" && go build -o "$BIN/fedzip" ./cmd/fedzip)
# exec: Ctrl-C reaches fedzip local, which stops every process it started.
exec "$BIN/fedzip" local --nodes "$NODES" --clients "$CLIENTS" --rounds "$ROUNDS" --upload-codec "$CODEC" \
    --base-port "$BASE_PORT" --work "$WORK" ${extra[@]+"${extra[@]}"}
