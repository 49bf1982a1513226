#!/usr/bin/env bash
# Run the node benchmarks (TestBenchNode in node/bench_node_test.go) once and
# rewrite the node section of docs/benchmarks.md with the machine, the date,
# every figure and the target ratios of this run. Only the lines between the
# two marker comments below are replaced; hack/bench.sh owns the ledger
# section the same way.
#
# Environment:
#   BENCH_NODE_ENTRIES      entries of the import and sync runs (default 100000)
#   BENCH_NODE_MESH_WRITES  writes spread over the 5-node mesh (default 10000)
#   BENCH_NODE_PUT_SECONDS  length of each put run in seconds (default 5)
#   BENCH_OUT               file to update (default docs/benchmarks.md)
#   TMPDIR                  where the ledgers are written (default /tmp)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/write-bench-block.sh"
cd "$(dirname "$0")/.."

go_cmd="${GO:-go}"
out="${BENCH_OUT:-docs/benchmarks.md}"
begin_marker='<!-- BEGIN node benchmarks: written by hack/bench-node.sh, edit the script instead -->'
end_marker='<!-- END node benchmarks -->'

log() { echo "bench-node: $*" >&2; }

work="$(mktemp -d "${TMPDIR:-/tmp}/thingdb-bench-node.XXXXXX")"
trap 'rm -rf "$work"' EXIT
start_load="$(cut -d' ' -f1-3 /proc/loadavg)"

log "building the node test binary"
"$go_cmd" test -c -o "$work/node.test" ./node

log "running TestBenchNode (ledgers in ${TMPDIR:-/tmp})"
(cd node && THINGDB_BENCH_NODE=1 \
  THINGDB_BENCH_NODE_ENTRIES="${BENCH_NODE_ENTRIES:-100000}" \
  THINGDB_BENCH_NODE_MESH_WRITES="${BENCH_NODE_MESH_WRITES:-10000}" \
  THINGDB_BENCH_NODE_PUT_SECONDS="${BENCH_NODE_PUT_SECONDS:-5}" \
  "$work/node.test" -test.run '^TestBenchNode$' -test.timeout 60m -test.v) | tee "$work/bench.txt" >&2
grep -q '^bench-node part=mesh' "$work/bench.txt" || { log "TestBenchNode printed no mesh result"; exit 1; }

# value PART KEY [MATCH_KEY MATCH_VALUE] prints KEY of the bench-node line of PART.
value() {
  awk -v part="$1" -v key="$2" -v mk="${3:-}" -v mv="${4:-}" '
    $1 == "bench-node" {
      delete kv
      for (i = 2; i <= NF; i++) { split($i, p, "="); kv[p[1]] = p[2] }
      if (kv["part"] != part || (mk != "" && kv[mk] != mv)) next
      print kv[key]; found = 1; exit
    }
    END { if (!found) exit 1 }' "$work/bench.txt" || { log "no $2 for part $1 $3 $4"; exit 1; }
}

cores="$(nproc)"
cpu="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
disk="$(df -T "$work" | awk 'NR == 2 { print $2 " on " $1 }')"
end_load="$(cut -d' ' -f1-3 /proc/loadavg)"

block="$work/block.md"
{
  verdict() { awk -v r="$1" -v t="$2" 'BEGIN { print (r >= t) ? "met" : "**missed**" }'; }
  echo "$begin_marker"
  echo "## Node (\`make bench-node\`)"
  echo
  echo "Written by \`hack/bench-node.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC') from one run of \`TestBenchNode\`."
  echo "Client and servers run in one process over TLS on 127.0.0.1, so they share the cores;"
  echo "the machine is shared too, and figures from a busy machine are lower bounds."
  echo
  echo "| machine | |"
  echo "| --- | --- |"
  echo "| CPU | $cpu |"
  echo "| cores (GOMAXPROCS) | $cores |"
  echo "| disk of the ledgers | $disk |"
  echo "| Go | $("$go_cmd" env GOVERSION) |"
  echo "| load average at start, at end | $start_load; $end_load |"
  echo
  echo "### HTTPS put"
  echo
  echo "\`PUT /v1/things/{id}\` with a 256-byte JSON value, durability \`batch\`, against \`Ledger.Append\`"
  echo "with as many writers in the same run, $(value put seconds writers 1) s each, the two sides taking turns in"
  echo "$(value put slices writers 1) slices. Each client is one keep-alive TLS connection, dialled before the clock starts,"
  echo "that writes the request http.Client would send and reads the response with net/http's parser,"
  echo "without the Transport's pool and goroutines."
  echo
  echo "| clients | ledger appends/s | HTTPS puts/s | ratio | p50 | p95 | p99 |"
  echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
  for w in 1 32; do
    echo "| $w | $(value put append_per_s writers $w) | $(value put put_per_s writers $w) | $(value put ratio writers $w) | $(value put p50_ms writers $w) ms | $(value put p95_ms writers $w) ms | $(value put p99_ms writers $w) ms |"
  done
  echo
  echo "### Import and sync"
  echo
  echo "$(value import entries) entries of one origin, imported in $(value import pages) pages of $(value import page) entries,"
  echo "the import limit (\`--max-batch-entries\`; a page is about 9 MiB, under the 64 MiB body limit)."
  echo "Sync is one attempt of the sync loop, batch size $(value sync batch), from a node holding those entries."
  echo
  echo "| run | figure |"
  echo "| --- | ---: |"
  echo "| \`Ledger.Import\`, durability \`batch\` | $(value import ledger_per_s) entries/s |"
  echo "| \`POST /v1/import\` over HTTPS | $(value import https_per_s) entries/s ($(value import ratio) of the ledger) |"
  echo "| sync between two nodes over TLS | $(value sync sync_per_s) entries/s, $(value sync seconds) s |"
  echo "| 5-node mesh, $(value mesh writes) writes spread over all nodes, interval $(value mesh interval_s) s, batch $(value mesh batch) | converged in $(value mesh seconds) s |"
  echo
  echo "### Targets"
  echo
  echo "| target | this run | |"
  echo "| --- | --- | --- |"
  for w in 1 32; do
    r="$(value put ratio writers $w)"
    clients="$w clients"
    [[ $w == 1 ]] && clients="1 client"
    echo "| HTTPS puts, $clients >= 0.5 x ledger appends | $r | $(verdict "$r" 0.5) |"
  done
  r="$(value sync ratio)"
  echo "| sync >= 0.7 x the receiving node's import rate | $(value sync sync_per_s) / $(value sync import_per_s) = $r | $(verdict "$r" 0.7) |"
  echo "$end_marker"
} >"$block"

# Replace the old block, or add one, keeping every other line of the file.
write_bench_block "$out" "$begin_marker" "$end_marker" "$block"
log "wrote $out"
cat "$block"
