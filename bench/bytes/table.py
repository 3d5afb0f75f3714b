#!/usr/bin/env python3
"""Prints the total-bytes table of docs/benchmarks.md from the -o json files
that table.sh wrote: OUT/<partition>-<method>-s<seed>.json."""
import glob, json, os, sys
from collections import defaultdict

out = sys.argv[1] if len(sys.argv) > 1 else "bench-bytes"
runs = defaultdict(dict)  # (partition, method) -> seed -> json
for f in sorted(glob.glob(os.path.join(out, "*.json"))):
    p, m, s = os.path.basename(f)[:-5].rsplit("-", 2)
    with open(f) as fh:
        j = json.load(fh)
    # The mean test accuracy of the last 10 rounds (one round of a
    # non-IID run is noisy), from --metrics-out.
    with open(f[:-5] + ".jsonl") as fh:
        acc = [r["test_accuracy"] for r in map(json.loads, fh) if r.get("evaluated", True)]
    j["last10"] = sum(acc[-10:]) / len(acc[-10:])
    runs[(p, m)][int(s[1:])] = j

def total(j):
    if not j.get("rounds_to_target"):
        return None
    return j["upload_bytes_to_target"] + j["download_bytes_to_target"]

def mb(x):
    return "—" if x is None else f"{x / 1e6:.2f}"

print("| data (target) | method | rounds to target | uploaded MB | downloaded MB | total MB | total vs dense | upload vs dense | accuracy, rounds 191–200 | vs dense |")
print("|---|---|---|---|---|---|---|---|---|---|")
for p in ("iid", "shards", "dirichlet"):
    dense = runs.get((p, "dense"), {})
    for m in ("dense", "dgc", "stc", "fedzip", "fedzip4"):
        r = runs.get((p, m))
        if not r:
            continue
        seeds = sorted(r)
        cols = defaultdict(list)
        for s in seeds:
            j, d = r[s], dense.get(s)
            t, dt = total(j), (total(d) if d else None)
            cols["rounds"].append(str(j.get("rounds_to_target") or "—"))
            cols["up"].append(mb(j["upload_bytes_to_target"] if t else None))
            cols["down"].append(mb(j["download_bytes_to_target"] if t else None))
            cols["total"].append(mb(t))
            cols["ratio"].append(f"{dt / t:.0f}×" if t and dt else "—")
            cols["upratio"].append(f"{d['upload_bytes_to_target'] / j['upload_bytes_to_target']:.0f}×" if t and dt else "—")
            cols["acc"].append(j["last10"])
            cols["dacc"].append(j["last10"] - d["last10"] if d else None)
        acc = sum(cols["acc"]) / len(cols["acc"])
        dacc = [x for x in cols["dacc"] if x is not None]
        dtxt = f"{100 * sum(dacc) / len(dacc):+.2f} pt" if dacc and m != "dense" else ""
        target = r[seeds[0]]["target"]
        name = {"iid": "iid", "shards": "shards", "dirichlet": "Dirichlet 0.1"}[p]
        label = {"fedzip": "fedzip (defaults)", "fedzip4": "fedzip, 4-bit 5 % uploads, fedavg"}.get(m, m)
        print(f"| {name} ({100 * target:.0f} %) | {label} | {' / '.join(cols['rounds'])} | {' / '.join(cols['up'])} | "
              f"{' / '.join(cols['down'])} | {' / '.join(cols['total'])} | {' / '.join(cols['ratio'])} | "
              f"{' / '.join(cols['upratio'])} | {100 * acc:.2f} % | {dtxt} |")
print(f"\nseeds {', '.join(map(str, sorted({s for r in runs.values() for s in r})))} (each cell: seed 1 / 2 / 3); accuracy: mean over the seeds of the mean test accuracy of rounds 191–200")
