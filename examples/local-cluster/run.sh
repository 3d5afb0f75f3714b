#!/usr/bin/env bash
# Starts a fedzip coordinator cluster and training clients on this machine,
# all on 127.0.0.1, over mTLS with gossip membership. Watch the coordinators'
# logs; kill the leader (see README.md) and watch training go on.
#
#   NODES=3 CLIENTS=10 ROUNDS=30 examples/local-cluster/run.sh
set -euo pipefail
NODES="${NODES:-3}"
CLIENTS="${CLIENTS:-10}"
ROUNDS="${ROUNDS:-30}"
CODEC="${CODEC:-topk1}"
WORK="${WORK:-$(mktemp -d -t fedzip-example.XXXX)}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

echo "building fedzip into $WORK"
(cd "$root" && go build -o "$WORK/fedzip" ./cmd/fedzip)
B="$WORK/fedzip"
cd "$WORK"
"$B" dev-certs certs >/dev/null
KEY="$(head -c 32 /dev/urandom | base64)"
TLS=(--tls-cert certs/server.pem --tls-key certs/server-key.pem --client-ca certs/ca.pem
     --raft-cert certs/node.pem --raft-key certs/node-key.pem --raft-ca certs/peer-ca.pem)
COMMON=(--rounds "$ROUNDS" --fraction 0.5 --min-clients 2 --deadline 30s --eval mnist --upload-codec "$CODEC"
        --join-secret example --cluster-secret example --gossip-key "$KEY")
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; }
trap cleanup EXIT INT TERM

grpc=(); gossip=()
for i in $(seq 1 "$NODES"); do
  grpc+=("127.0.0.1:$((17000 + i))"); gossip+=("127.0.0.1:$((17200 + i))")
done
for i in $(seq 1 "$NODES"); do
  args=(coordinator --id "n$i" --listen "${grpc[$((i-1))]}" --raft-addr "127.0.0.1:$((17100 + i))"
        --gossip-addr "${gossip[$((i-1))]}" --state-dir "node$i" --save-model "model-n$i.fzmodel" --ui-addr "127.0.0.1:$((17300 + i))" "${TLS[@]}" "${COMMON[@]}")
  if [ "$i" -gt 1 ]; then args+=(--join "${grpc[0]}" --gossip-join "${gossip[0]}"); fi
  "$B" "${args[@]}" > "node$i.log" 2>&1 &
  pids+=($!)
  [ "$i" -eq 1 ] && sleep 1
done
sleep 2
IFS=,; addrs="${grpc[*]}"; gaddrs="${gossip[*]}"; unset IFS
for i in $(seq 0 $((CLIENTS - 1))); do
  "$B" client --coordinator "$addrs" --ca certs/ca.pem --cert certs/client.pem --key certs/client-key.pem \
      --join-secret example --clients "$CLIENTS" --client-index "$i" --state-dir "client$i" \
      --gossip-addr 127.0.0.1:0 --gossip-join "$gaddrs" --gossip-key "$KEY" > "client$i.log" 2>&1 &
  pids+=($!)
done
echo "$NODES coordinator(s) and $CLIENTS clients running in $WORK"
echo "  cluster status: $B cluster status --coordinator $addrs --ca $WORK/certs/ca.pem --cert $WORK/certs/client.pem --key $WORK/certs/client-key.pem"
echo "  dashboards:     http://127.0.0.1:17301/ (node 1), :17302, :17303"
echo "  rounds:         grep 'round closed' $WORK/node*.log"
echo "  kill the leader: pkill -9 -f 'coordinator --id nX' (X from cluster status)"
wait "${pids[0]}" || true
