# Shared by hack/bench.sh and hack/bench-node.sh; source it, then call
# write_bench_block.

# write_bench_block OUT BEGIN END BLOCK replaces the lines of OUT from the
# line BEGIN to the line END with the file BLOCK, which starts with BEGIN
# and ends with END. Without BEGIN in OUT, it adds BLOCK at the end after
# one blank line. Every other line of OUT is kept, and OUT is replaced only
# once the new content is complete.
write_bench_block() {
  local out="$1" begin="$2" end="$3" block="$4"
  local new
  new="$(mktemp "${TMPDIR:-/tmp}/thingdb-bench-out.XXXXXX")"
  mkdir -p "$(dirname "$out")"
  if [[ ! -f "$out" ]]; then
    printf '# Benchmarks\n\n' >"$out"
  fi
  if grep -qF "$begin" "$out"; then
    awk -v begin="$begin" -v end="$end" -v block="$block" '
      $0 == begin { while ((getline line < block) > 0) print line; skip = 1; next }
      $0 == end { skip = 0; next }
      !skip { print }' "$out" >"$new"
  else
    # End the old content with one blank line, then add the block.
    { sed -e :a -e '/^\n*$/{$d;N;ba' -e '}' "$out"; echo; cat "$block"; } >"$new"
  fi
  cp "$new" "$out"
  rm -f "$new"
}
