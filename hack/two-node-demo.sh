#!/usr/bin/env bash
# Two ThingDB nodes on loopback with TLS. Node B writes an entry sealed to
# node A and exports it as a batch signed by B's node key. The script pushes
# the batch to A with an import-scoped token, and A reads the entry back
# with its provenance.
#
# Usage: hack/two-node-demo.sh [WORK_DIR]
#   THINGDB  path of a built thingdb binary (default: built into WORK_DIR)
#   KEEP=1   keep WORK_DIR (default: removed unless it was given)
# Exits non-zero when any step fails.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ $# -ge 1 ]]; then
	work="$1"
	mkdir -p "$work"
	KEEP="${KEEP:-1}"
else
	work="$(mktemp -d "${TMPDIR:-/tmp}/thingdb-two-node.XXXXXX")"
fi
pids=()

cleanup() {
	local status=$?
	for pid in "${pids[@]}"; do
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	if [[ $status -ne 0 ]]; then
		echo "two-node demo FAILED (exit $status); node logs:" >&2
		tail -n 20 "$work"/node-*.log >&2 2>/dev/null || true
	fi
	if [[ "${KEEP:-0}" != 1 ]]; then
		rm -rf "$work"
	else
		echo "work directory kept: $work"
	fi
	exit "$status"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }

if [[ -z "${THINGDB:-}" ]]; then
	step "build thingdb"
	(cd "$repo_root" && go build -o "$work/thingdb" ./cmd/thingdb)
	THINGDB="$work/thingdb"
fi
thingdb() { "$THINGDB" "$@"; }

step "create a CA and a server certificate per node (internal/pki, no openssl)"
thingdb tls ca --out "$work/ca" --name thingdb-demo-ca
for n in a b; do
	thingdb tls issue --ca-dir "$work/ca" --out "$work/$n/tls" --name "node-$n" --host 127.0.0.1,localhost
done

step "passphrases and tokens"
for n in a b; do
	mkdir -p "$work/$n"
	head -c 32 /dev/urandom | base64 >"$work/$n/passphrase"
done
# Node A accepts imports, node B takes writes and exports, and both serve reads.
thingdb token add --token-dir "$work/a/tokens" --scopes import push-from-b >"$work/a-import.token"
thingdb token add --token-dir "$work/a/tokens" --scopes read reader >"$work/a-read.token"
thingdb token add --token-dir "$work/b/tokens" --scopes write writer >"$work/b-write.token"
thingdb token add --token-dir "$work/b/tokens" --scopes export exporter >"$work/b-export.token"
thingdb token list --token-dir "$work/a/tokens"

step "start both nodes on loopback ports chosen by the kernel"
for n in a b; do
	# Run the binary itself, not the thingdb function, so that $! is the
	# node's own process id and cleanup stops it.
	"$THINGDB" serve \
		--listen 127.0.0.1:0 --address-file "$work/$n/address" \
		--data-dir "$work/$n/data" --passphrase-file "$work/$n/passphrase" \
		--token-dir "$work/$n/tokens" --tls-dir "$work/$n/tls" \
		--peers-file "$work/$n/peers.json" --reload-interval 200ms \
		>"$work/node-$n.log" 2>&1 &
	pids+=("$!")
done
for n in a b; do
	for _ in $(seq 1 200); do
		[[ -s "$work/$n/address" ]] && break
		sleep 0.1
	done
	[[ -s "$work/$n/address" ]] || { echo "node $n did not start; see $work/node-$n.log" >&2; exit 1; }
done
url_a="https://$(cat "$work/a/address")"
url_b="https://$(cat "$work/b/address")"
echo "node A: $url_a"
echo "node B: $url_b"

step "pin each node's keys in the other's peer file (fetched over TLS)"
thingdb peers add --peers-file "$work/a/peers.json" --name node-b --url "$url_b" --ca-file "$work/ca/ca.crt"
thingdb peers add --peers-file "$work/b/peers.json" --name node-a --url "$url_a" --ca-file "$work/ca/ca.crt"
id_a="$(thingdb identity --server "$url_a" --ca-file "$work/ca/ca.crt" -o json | sed -n 's/.*"nodeID": "\([0-9a-f]*\)".*/\1/p')"
id_b="$(thingdb identity --server "$url_b" --ca-file "$work/ca/ca.crt" -o json | sed -n 's/.*"nodeID": "\([0-9a-f]*\)".*/\1/p')"
[[ -n "$id_a" && -n "$id_b" ]] || { echo "could not read the node ids" >&2; exit 1; }

# retry runs a command until it succeeds, for the nodes' next peer file reload.
retry() {
	for _ in $(seq 1 50); do
		if "$@" 2>"$work/retry.err"; then return 0; fi
		sleep 0.2
	done
	cat "$work/retry.err" >&2
	return 1
}

step "write lamp-1 on node B, sealed to node A (envelope mode)"
client_b=(--server "$url_b" --ca-file "$work/ca/ca.crt")
client_a=(--server "$url_a" --ca-file "$work/ca/ca.crt")
retry thingdb put "${client_b[@]}" --token-file "$work/b-write.token" --recipient "$id_a" lamp-1 '{"room":"hall","on":true}'

step "export a signed batch from B and push it to A"
thingdb export "${client_b[@]}" --token-file "$work/b-export.token" --out "$work/batch.json"
retry thingdb import "${client_a[@]}" --token-file "$work/a-import.token" "$work/batch.json"

step "push the same batch again: a replay only counts duplicates"
thingdb import "${client_a[@]}" --token-file "$work/a-import.token" "$work/batch.json" | tee "$work/replay.out"
grep -q "accepted 0, duplicates 1" "$work/replay.out"

step "read lamp-1 back on A with its provenance"
thingdb get "${client_a[@]}" --token-file "$work/a-read.token" lamp-1
thingdb get "${client_a[@]}" --token-file "$work/a-read.token" -o json lamp-1 >"$work/lamp-on-a.json"
grep -q "\"origin\": \"$id_b\"" "$work/lamp-on-a.json" || { echo "lamp-1 on A does not have B's origin $id_b" >&2; exit 1; }
grep -q '"actor": "writer"' "$work/lamp-on-a.json" || { echo "lamp-1 on A lost its actor" >&2; exit 1; }
grep -q '"signatureValid": true' "$work/lamp-on-a.json" || { echo "lamp-1 on A has no valid signature" >&2; exit 1; }
grep -q '"readable": true' "$work/lamp-on-a.json" || { echo "node A cannot decrypt lamp-1" >&2; exit 1; }

step "a token without the import scope is rejected (403)"
if thingdb import "${client_a[@]}" --token-file "$work/a-read.token" "$work/batch.json" 2>"$work/forbidden.err"; then
	echo "import with a read token succeeded" >&2
	exit 1
fi
grep -q "403" "$work/forbidden.err"
cat "$work/forbidden.err"

echo
echo "two-node demo passed: node B ($id_b) wrote lamp-1, node A ($id_a) imported and read it"
