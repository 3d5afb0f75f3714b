#!/usr/bin/env bash
# Total bytes to accuracy: dense FedAvg, DGC, STC, fedzip's defaults and
# fedzip with 4-bit 5 % uploads and FedAvg (for non-IID data), on
# the 2NN (MNIST, 100 clients, C = 0.1, E = 1, B = 10), iid, shards and
# Dirichlet(0.1), 200 rounds, seeds given (default 1 2 3). Each run's -o json
# goes to OUT/<partition>-<method>-s<seed>.json (runs already there are
# skipped, so the script resumes); then table.py prints the markdown table
# of docs/benchmarks.md.
#
#   bench/bytes/table.sh [OUT] [SEEDS...]
#
# FEDZIP names the binary (default: fedzip on PATH), ONLY="dense stc" runs
# only those methods, ROUNDS overrides 200 (for a quick try).
set -euo pipefail
out=${1:-bench-bytes}
shift || true
seeds=${*:-1 2 3}
fedzip=${FEDZIP:-fedzip}
mkdir -p "$out"
declare -A target=([iid]=0.96 [shards]=0.95 [dirichlet]=0.90)
declare -A part=([iid]="--partition iid" [shards]="--partition shards" [dirichlet]="--partition dirichlet --alpha 0.1")
declare -A method=(
  [dense]="--upload-codec none --download-codec none --strategy fedavg,bound=off"
  [dgc]="--upload-codec dgc --download-codec none --strategy fedavg,bound=off"
  [stc]="--upload-codec stc --download-codec topk=0.01,bits=ternary --strategy fedavg,bound=off"
  [fedzip]=""
  [fedzip4]="--upload-codec topk=0.05,bits=4,ef=on --strategy fedavg"
)
declare -A methods=([iid]="dense dgc stc fedzip fedzip4" [shards]="dense dgc stc fedzip fedzip4" [dirichlet]="dense dgc stc fedzip fedzip4")
for p in iid shards dirichlet; do
  for s in $seeds; do
    for m in ${methods[$p]}; do
      [[ -n ${ONLY:-} && " $ONLY " != *" $m "* ]] && continue
      f="$out/$p-$m-s$s.json"
      [[ -s $f ]] && continue
      # shellcheck disable=SC2086
      $fedzip simulate --quiet --deliver "" --rounds "${ROUNDS:-200}" --seed "$s" ${part[$p]} \
        --target "${target[$p]}" ${method[$m]} --metrics-out "${f%.json}.jsonl" -o json >"$f.tmp"
      mv "$f.tmp" "$f"
      echo "$f" >&2
    done
  done
done
python3 "$(dirname "$0")/table.py" "$out"
