#!/usr/bin/env bash
# Compares three update codecs on one laptop and plots accuracy against the
# bytes the clients uploaded.
#
#   examples/codecs/run.sh            # ~1 minute on 2 cores
set -euo pipefail
ROUNDS="${ROUNDS:-50}"
OUT="${OUT:-fedzip-codecs}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
mkdir -p "$OUT"
go build -C "$root" -o "$(cd "$OUT" && pwd)/fedzip" ./cmd/fedzip
B="$OUT/fedzip"
for codec in none topk1 stcm; do
  echo "simulating $ROUNDS rounds with --upload-codec $codec"
  "$B" simulate --rounds "$ROUNDS" --deliver "" --upload-codec "$codec" --metrics-out "$OUT/$codec.jsonl" --quiet
done
"$B" report "$OUT/none.jsonl" "$OUT/topk1.jsonl" "$OUT/stcm.jsonl" --out "$OUT/report" \
  --labels "dense float32,top-k 1% 8-bit + error feedback,stcm: top-k 1% ternary + EF + DGC momentum"
echo "plots: $OUT/report/accuracy_vs_bytes.png and $OUT/report/accuracy.png; table: $OUT/report/summary.md"
