#!/usr/bin/env bash
# Run the ledger benchmarks once and rewrite the ledger section of
# docs/benchmarks.md with the machine, the date, every figure and the target
# ratios of this run. Other sections of that file are kept as they are: only
# the lines between the two marker comments below are replaced.
#
# One run has two parts. Go benchmarks in ledger/bench_test.go measure the
# floor (Ed25519, AES-256-GCM, SHA-256, fsync), append, verify, get and
# export. Then a ledger of BENCH_ENTRIES entries is built under durability
# none and opened in a process of its own, which reports time and peak memory.
#
# Environment:
#   BENCH_TIME     -benchtime of each Go benchmark (default 2s)
#   BENCH_ENTRIES  entries of the large ledger (default 1000000)
#   BENCH_THINGS   things of the large ledger (default 10000)
#   BENCH_OUT      file to update (default docs/benchmarks.md)
#   TMPDIR         where the ledgers and the fsync probe are written, so
#                  the disk that is measured (default /tmp)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/write-bench-block.sh"
cd "$(dirname "$0")/.."

go_cmd="${GO:-go}"
bench_time="${BENCH_TIME:-2s}"
entries="${BENCH_ENTRIES:-1000000}"
things="${BENCH_THINGS:-10000}"
out="${BENCH_OUT:-docs/benchmarks.md}"
begin_marker='<!-- BEGIN ledger benchmarks: written by hack/bench.sh, edit the script instead -->'
end_marker='<!-- END ledger benchmarks -->'

log() { echo "bench: $*" >&2; }

work="$(mktemp -d "${TMPDIR:-/tmp}/thingdb-bench.XXXXXX")"
trap 'rm -rf "$work"' EXIT
start_load="$(cut -d' ' -f1-3 /proc/loadavg)"

log "building the ledger test binary"
"$go_cmd" test -c -o "$work/ledger.test" ./ledger

log "running the Go benchmarks for ${bench_time} each (writes in $work)"
THINGDB_BENCH_DIR="$work" "$work/ledger.test" -test.run '^$' \
  -test.bench '^(BenchmarkFloor|BenchmarkAppend|BenchmarkVerify|BenchmarkGet|BenchmarkExport)$' \
  -test.benchtime "$bench_time" -test.benchmem | tee "$work/bench.txt" >&2

log "building a ledger of ${entries} entries of ${things} things (durability none)"
THINGDB_BENCH_BUILD_DIR="$work/large" THINGDB_BENCH_ENTRIES="$entries" THINGDB_BENCH_THINGS="$things" \
  "$work/ledger.test" -test.run '^TestBenchBuildLedger$' | tee "$work/build.txt" >&2
large_bytes="$(stat -c %s "$work/large/ledger.ndjson")"

log "opening it in a process of its own"
time_cmd=()
if [[ -x /usr/bin/time ]]; then
  time_cmd=(/usr/bin/time -v -o "$work/time.txt")
fi
THINGDB_BENCH_OPEN_DIR="$work/large" "${time_cmd[@]}" \
  "$work/ledger.test" -test.run '^TestBenchOpenLedger$' | tee "$work/open.txt" >&2
time_rss_kib="n/a"
if [[ -f "$work/time.txt" ]]; then
  time_rss_kib="$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work/time.txt")"
fi

# bench_value NAME UNIT prints the value before UNIT on the result line of
# benchmark NAME (without the -GOMAXPROCS suffix).
bench_value() {
  awk -v name="$1" -v unit="$2" '
    $1 ~ /^Benchmark/ {
      n = $1; sub(/-[0-9]+$/, "", n)
      if (n != name) next
      for (i = 3; i <= NF; i++) if ($i == unit) { print $(i - 1); found = 1; exit }
    }
    END { if (!found) exit 1 }' "$work/bench.txt" || { log "no $2 for $1 in the benchmark output"; exit 1; }
}

# kv FILE KEY prints the value of key=value on the bench- line of FILE.
kv() {
  tr ' ' '\n' <"$1" | awk -F= -v key="$2" '$1 == key { print $2; found = 1 } END { if (!found) exit 1 }' ||
    { log "no $2 in $1"; exit 1; }
}

sign_ns="$(bench_value BenchmarkFloor/ed25519-sign ns/op)"
verify_ns="$(bench_value BenchmarkFloor/ed25519-verify ns/op)"
gcm_ns="$(bench_value BenchmarkFloor/aes256gcm-seal-256B ns/op)"
sha_ns="$(bench_value BenchmarkFloor/sha256-entry-line ns/op)"
line_bytes="$(bench_value BenchmarkFloor/sha256-entry-line line-bytes)"
fsync_ns="$(bench_value BenchmarkFloor/fsync ns/op)"
append_none="$(bench_value BenchmarkAppend/none entries/s)"
append_none3="$(bench_value BenchmarkAppend/none-3-recipients entries/s)"
append_batch1="$(bench_value BenchmarkAppend/batch-1-writer entries/s)"
append_batch64="$(bench_value BenchmarkAppend/batch-64-writers entries/s)"
verify_rate="$(bench_value BenchmarkVerify entries/s)"
get_ns="$(bench_value BenchmarkGet ns/op)"
get_allocs="$(bench_value BenchmarkGet allocs/op)"
export_rate="$(bench_value BenchmarkExport entries/s)"
build_seconds="$(kv "$work/build.txt" seconds)"
open_entries="$(kv "$work/open.txt" entries)"
open_things="$(kv "$work/open.txt" things)"
open_seconds="$(kv "$work/open.txt" seconds)"
open_rss="$(kv "$work/open.txt" peak_rss_bytes)"
open_heap="$(kv "$work/open.txt" peak_heap_bytes)"
open_heap_after="$(kv "$work/open.txt" heap_after_gc_bytes)"

cores="$(nproc)"
cpu="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
mem_gib="$(awk '/^MemTotal/ { printf "%.1f", $2 / 1048576 }' /proc/meminfo)"
disk="$(df -T "$work" | awk 'NR == 2 { print $2 " on " $1 }')"
end_load="$(cut -d' ' -f1-3 /proc/loadavg)"

block="$work/block.md"
awk -v date="$(date -u '+%Y-%m-%d %H:%M UTC')" -v gover="$("$go_cmd" env GOVERSION)" \
  -v kernel="$(uname -sr)" -v cpu="$cpu" -v cores="$cores" -v mem="$mem_gib" -v disk="$disk" \
  -v load0="$start_load" -v load1="$end_load" -v bt="$bench_time" \
  -v sign_ns="$sign_ns" -v verify_ns="$verify_ns" -v gcm_ns="$gcm_ns" -v sha_ns="$sha_ns" \
  -v line_bytes="$line_bytes" -v fsync_ns="$fsync_ns" \
  -v none="$append_none" -v none3="$append_none3" -v b1="$append_batch1" -v b64="$append_batch64" \
  -v vrate="$verify_rate" -v get_ns="$get_ns" -v get_allocs="$get_allocs" -v xrate="$export_rate" \
  -v entries="$entries" -v things="$things" -v large_bytes="$large_bytes" -v build_s="$build_seconds" \
  -v open_entries="$open_entries" -v open_things="$open_things" -v open_s="$open_seconds" \
  -v rss="$open_rss" -v heap="$open_heap" -v heap_after="$open_heap_after" -v time_rss="$time_rss_kib" \
  -v begin="$begin_marker" -v end="$end_marker" '
  function rate(ns) { return 1e9 / ns }
  function verdict(ok) { return ok ? "met" : "**missed**" }
  BEGIN {
    mib = 1048576
    sign_rate = rate(sign_ns); verify1 = rate(verify_ns)
    r_append = b64 / sign_rate
    r_verify = vrate / (cores * verify1)
    rss_mib = rss / mib
    r_env = none / none3

    print begin
    print "## Ledger (`make bench`)"
    print ""
    printf "Written by `hack/bench.sh` on %s from one run. Go benchmarks ran for %s each.\n", date, bt
    print "The machine is shared, so the load average is given: figures from a busy machine are lower bounds."
    print ""
    print "| machine | |"
    print "| --- | --- |"
    printf "| CPU | %s |\n| cores (GOMAXPROCS) | %d |\n| memory | %s GiB |\n", cpu, cores, mem
    printf "| disk of the ledgers | %s |\n| kernel | %s |\n| Go | %s |\n", disk, kernel, gover
    printf "| load average at start, at end | %s; %s |\n", load0, load1
    print ""
    print "### Floor"
    print ""
    print "| primitive | time | rate |"
    print "| --- | ---: | ---: |"
    printf "| Ed25519 sign (entry signed bytes) | %.1f µs | %.0f /s per core |\n", sign_ns / 1000, sign_rate
    printf "| Ed25519 verify | %.1f µs | %.0f /s per core |\n", verify_ns / 1000, verify1
    printf "| AES-256-GCM seal of 256 bytes | %.2f µs | %.0f /s per core |\n", gcm_ns / 1000, rate(gcm_ns)
    printf "| SHA-256 of one entry line (%d bytes) | %.2f µs | %.0f /s per core |\n", line_bytes, sha_ns / 1000, rate(sha_ns)
    printf "| fsync after a 512-byte write | %.2f ms | %.0f /s |\n", fsync_ns / 1e6, rate(fsync_ns)
    print ""
    print "### Ledger operations"
    print ""
    print "Entries carry a 256-byte JSON value."
    print ""
    print "| operation | figure |"
    print "| --- | ---: |"
    printf "| append, durability `none`, 1 writer | %.0f entries/s |\n", none
    printf "| append, durability `none`, 1 writer, 3 envelope recipients | %.0f entries/s |\n", none3
    printf "| append, durability `batch`, 1 writer | %.0f entries/s |\n", b1
    printf "| append, durability `batch`, 64 writers | %.0f entries/s |\n", b64
    printf "| verify, all cores | %.0f entries/s |\n", vrate
    printf "| get (read and decrypt the latest version) | %.1f µs, %d allocations |\n", get_ns / 1000, get_allocs
    printf "| export (stream every line) | %.0f entries/s |\n", xrate
    printf "| build %d entries of %d things, durability `none`, 4 writers | %.1f s (%.0f entries/s), %.0f MiB file |\n", entries, things, build_s, entries / build_s, large_bytes / mib
    printf "| open those %d entries of %d things | %.2f s |\n", open_entries, open_things, open_s
    printf "| peak resident memory of the process that opened them (VmHWM) | %.1f MiB |\n", rss_mib
    if (time_rss != "n/a") printf "| the same, as `/usr/bin/time -v` reports it | %.1f MiB |\n", time_rss / 1024
    printf "| peak Go heap during that Open (sampled every 1 ms), live heap after it | %.1f MiB, %.1f MiB |\n", heap / mib, heap_after / mib
    print ""
    print "The large ledger uses the default Argon2id parameters (64 MiB), so the peak"
    print "memory of Open includes the key derivation of a production ledger."
    print ""
    print "### Targets"
    print ""
    print "| target | this run | |"
    print "| --- | --- | --- |"
    printf "| append `batch`, 64 writers >= 0.6 x single-core Ed25519 sign rate | %.0f / %.0f = %.2f | %s |\n", b64, sign_rate, r_append, verdict(r_append >= 0.6)
    printf "| verify >= 0.6 x cores x Ed25519 verify rate | %.0f / (%d x %.0f) = %.2f | %s |\n", vrate, cores, verify1, r_verify, verdict(r_verify >= 0.6)
    printf "| open of %d entries of %d things < 200 MiB peak resident memory | %.1f MiB | %s |\n", open_entries, open_things, rss_mib, verdict(rss_mib < 200)
    printf "| append with 3 recipients <= 1.5 x the time of a plain append (`none`) | %.2f x | %s |\n", r_env, verdict(r_env <= 1.5)
    print end
  }' >"$block"

# Replace the old block, or add one, keeping every other line of the file.
write_bench_block "$out" "$begin_marker" "$end_marker" "$block"
log "wrote $out"
cat "$block"
