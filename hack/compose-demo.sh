#!/usr/bin/env bash
# Runs two ThingDB nodes in containers with Docker Compose and moves one
# entry between them over TLS:
#
#   1. builds the image (make docker-build) and the thingdb CLI (make build);
#   2. makes a CA and a certificate per node with `thingdb tls`, a passphrase
#      and tokens per node, and pins each node's keys in the other's peer file;
#   3. starts node-a and node-b (docker-compose.yml), published on 127.0.0.1;
#   4. writes a thing on node-a, exports it with an export-scoped token and
#      imports the signed batch into node-b with an import-scoped token, after
#      checking that node-b rejects the same import with a read-only token;
#   5. reads the thing back from node-b with its provenance (origin node-a,
#      signature valid) and verifies node-b's ledger on disk;
#   6. tears everything down, also on failure.
#
# Exits non-zero at the first step that fails. Needs Docker with Compose
# (`docker compose` or `docker-compose`), Go and curl, and pulls no image.
#
# Settings (environment variables):
#   IMG          image to build and run (default thingdb:dev)
#   SKIP_BUILD=1 use IMG and bin/thingdb as they are
#   COMPOSE      compose command, such as "docker compose" (default: the
#                first of `docker compose` and `docker-compose` that works)
#   KEEP=1       leave the containers and the work directory for inspection
set -euo pipefail

cd "$(dirname "$0")/.."

img=${IMG:-thingdb:dev}
thingdb=bin/thingdb
project="thingdb-demo-$$"
thing=demo-thing

log() { printf '==> %s\n' "$*" >&2; }
fail() { printf 'compose-demo: FAILED: %s\n' "$*" >&2; exit 1; }

# The compose command: either the Docker CLI plugin or the standalone tool.
if [[ -n "${COMPOSE:-}" ]]; then
	read -r -a compose_cmd <<<"$COMPOSE"
elif docker compose version >/dev/null 2>&1; then
	compose_cmd=(docker compose)
elif command -v docker-compose >/dev/null && docker-compose version >/dev/null 2>&1; then
	compose_cmd=(docker-compose)
else
	fail "neither 'docker compose' nor 'docker-compose' works: install Docker Compose"
fi
command -v curl >/dev/null || fail "curl not found in PATH: install curl"
docker info >/dev/null 2>&1 || fail "no Docker engine reachable: start Docker, or set DOCKER_HOST"

work=$(mktemp -d)
export THINGDB_DEMO_DIR="$work" THINGDB_IMAGE="$img"
compose() { "${compose_cmd[@]}" -p "$project" -f docker-compose.yml "$@"; }

teardown() {
	local status=$?
	if [[ $status -ne 0 ]]; then
		log "logs of the nodes"
		compose logs --no-color >&2 || true
	fi
	if [[ "${KEEP:-}" == 1 ]]; then
		log "KEEP=1: containers of project $project and $work are left running"
		return
	fi
	compose down --volumes --remove-orphans >/dev/null 2>&1 || true
	rm -rf "$work"
	if [[ $status -ne 0 ]]; then
		printf 'compose-demo: failed with exit %d\n' "$status" >&2
	fi
}
trap teardown EXIT

# 1. Image and CLI.
if [[ "${SKIP_BUILD:-}" != 1 ]]; then
	log "building $thingdb and image $img"
	make --no-print-directory build
	make --no-print-directory docker-build IMG="$img"
fi
[[ -x "$thingdb" ]] || fail "$thingdb not found: run make build, or unset SKIP_BUILD"
docker image inspect "$img" >/dev/null 2>&1 || fail "image $img not found: run make docker-build IMG=$img, or unset SKIP_BUILD"

# The nodes run as a non-root user who must own their files. Run by root, the
# demo gives the files to the image's user 65532. Run by anyone else, the
# nodes run as that user.
if [[ $(id -u) -eq 0 ]]; then
	export THINGDB_UID=65532 THINGDB_GID=65532
else
	THINGDB_UID=$(id -u)
	THINGDB_GID=$(id -g)
	export THINGDB_UID THINGDB_GID
fi

# 2. Certificates, passphrases, tokens and the peer files. Secrets stay in
# $work, which only this user can read, and tokens are never printed.
umask 077
client="$work/client"
mkdir -p "$client"
log "creating a CA and a certificate per node with thingdb tls"
"$thingdb" tls ca --out "$work/ca" --name thingdb-compose-demo-ca >/dev/null
ca="$work/ca/ca.crt"

# token NODE NAME SCOPES stores a new token's record in NODE's token directory
# and the token itself in $client/NODE-NAME.token.
token() {
	"$thingdb" token add "$2" --scopes "$3" --token-dir "$work/$1/secrets/tokens" >"$client/$1-$2.token" 2>/dev/null ||
		fail "create token $2 on $1"
}

for node in node-a node-b; do
	mkdir -p "$work/$node/data" "$work/$node/secrets/peers"
	"$thingdb" tls issue --ca-dir "$work/ca" --out "$work/$node/secrets/tls" \
		--host "$node,localhost,127.0.0.1" >/dev/null
	head -c 32 /dev/urandom | base64 >"$work/$node/secrets/passphrase"
	# The ledger is created here so that its identity is known before the node starts.
	"$thingdb" init --data-dir "$work/$node/data" --passphrase-file "$work/$node/secrets/passphrase" >/dev/null
done
token node-a writer write,read
token node-a exporter export
token node-b importer import
token node-b reader read

# identity_field NODE LABEL prints one value of `thingdb identity` for NODE's
# ledger: the last word of the line that starts with LABEL.
identity_field() {
	"$thingdb" identity --data-dir "$work/$1/data" --passphrase-file "$work/$1/secrets/passphrase" |
		awk -v label="$2" 'index($0, label) == 1 { print $NF; exit }'
}

# Each node pins the other's keys: node-b checks the signature of node-a's
# batches with them, and node-a seals entries to node-b's recipient key.
declare -A node_id
for node in node-a node-b; do
	node_id[$node]=$(identity_field "$node" "node id")
	[[ -n "${node_id[$node]}" ]] || fail "read the identity of $node's ledger"
done
for pair in node-a:node-b node-b:node-a; do
	node=${pair%%:*} peer=${pair##*:}
	log "pinning $peer (${node_id[$peer]}) in $node's peer file"
	"$thingdb" peers add --peers-file "$work/$node/secrets/peers/peers.json" --name "$peer" \
		--url "https://$peer:8443" --signing-key "$(identity_field "$peer" "signing key")" \
		--recipient-key "$(identity_field "$peer" "recipient key")" >/dev/null
done

if [[ $(id -u) -eq 0 ]]; then
	chown -R "$THINGDB_UID:$THINGDB_GID" "$work/node-a" "$work/node-b"
fi

# 3. The nodes.
log "starting node-a and node-b (compose project $project, image $img)"
compose up -d

# url NODE prints the https URL of NODE's port published on 127.0.0.1.
url() {
	local address
	address=$(compose port "$1" 8443 | tail -n 1)
	[[ "$address" == 127.0.0.1:* ]] || fail "$1 port 8443 is published on '$address', expected 127.0.0.1"
	printf 'https://%s' "$address"
}
node_a_url=$(url node-a)
node_b_url=$(url node-b)

# wait_ready NODE URL polls GET /readyz over TLS, checked against the demo CA.
wait_ready() {
	for _ in $(seq 1 60); do
		if curl --silent --fail --cacert "$ca" --output /dev/null "$2/readyz"; then
			log "$1 is ready at $2"
			return
		fi
		sleep 1
	done
	fail "$1 not ready at $2/readyz after 60s"
}
wait_ready node-a "$node_a_url"
wait_ready node-b "$node_b_url"

# remote NODE TOKEN COMMAND... runs a thingdb command against NODE's API.
remote() {
	local node=$1 token=$2
	shift 2
	local node_url=$node_a_url
	[[ "$node" == node-b ]] && node_url=$node_b_url
	"$thingdb" "$@" --server "$node_url" --ca-file "$ca" --token-file "$client/$node-$token.token"
}

# 4. Write on node-a, export from node-a, import into node-b.
log "writing $thing on node-a, sealed to node-b's recipient key"
remote node-a writer put --recipient "${node_id[node-b]}" "$thing" '{"color": "blue", "size": 3}' >/dev/null

log "exporting node-a's entries with the export-scoped token"
remote node-a exporter export --out "$work/batch.json" >/dev/null
[[ -s "$work/batch.json" ]] || fail "export from node-a wrote an empty batch"

log "checking that node-b rejects the import with a read-only token"
if remote node-b reader import "$work/batch.json" >"$work/rejected.out" 2>&1; then
	fail "node-b accepted an import with a token that has only the read scope"
fi
grep -q 403 "$work/rejected.out" || fail "import with a read-only token failed, but not with 403: $(cat "$work/rejected.out")"

log "importing the batch into node-b with the import-scoped token"
imported=$(remote node-b importer import "$work/batch.json")
[[ "$imported" == *"accepted 1,"* ]] || fail "node-b did not accept the entry: $imported"
replayed=$(remote node-b importer import "$work/batch.json")
[[ "$replayed" == *"accepted 0, duplicates 1"* ]] || fail "importing the same batch again was not a no-op: $replayed"

# 5. Read back from node-b with provenance.
log "reading $thing back from node-b with its provenance"
remote node-b reader get "$thing"
remote node-b reader history "$thing" -o json >"$work/history.json"
# check_history PATTERN MEANING fails unless node-b's history matches PATTERN.
check_history() {
	grep -q "$1" "$work/history.json" || fail "$thing on node-b: $2; history: $(cat "$work/history.json")"
}
check_history "\"origin\": *\"${node_id[node-a]}\"" "origin is not node-a (${node_id[node-a]})"
check_history '"actor": *"writer"' "actor is not the token writer"
check_history '"signatureValid": *true' "signature is not valid"
check_history '"readable": *true' "node-b cannot decrypt the entry"
check_history '"color": *"blue"' "data is not the value written on node-a"

log "stopping the nodes and verifying node-b's ledger on disk"
compose stop >/dev/null
"$thingdb" verify --data-dir "$work/node-b/data" --passphrase-file "$work/node-b/secrets/passphrase"

printf 'compose demo passed: %s written on node-a, pushed to node-b, read back with origin %s\n' "$thing" "${node_id[node-a]}"
