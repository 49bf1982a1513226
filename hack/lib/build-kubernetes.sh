#!/usr/bin/env bash
# Build Kubernetes commands from source through the Go module proxy.
#
#   build-kubernetes.sh VERSION OUTDIR COMMAND...
#
# builds k8s.io/kubernetes/cmd/COMMAND at VERSION (for example 1.37.2) for
# every COMMAND that OUTDIR does not hold yet, and moves each binary into
# OUTDIR only once it is complete. k8s.io/kubernetes points its staging
# modules at ./staging, so a scratch module replaces each one with the
# published module of the matching release (v0.37.2 for 1.37.2).
set -euo pipefail

if [[ $# -lt 3 ]]; then
  echo "usage: $0 VERSION OUTDIR COMMAND..." >&2
  exit 2
fi
version="$1" outdir="$2"
shift 2

missing=()
for command in "$@"; do
  [[ -x "$outdir/$command" ]] || missing+=("$command")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi

log() { echo "build-kubernetes: $*" >&2; }
mkdir -p "$outdir"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# The scratch module must not inherit the project's go.work or GOFLAGS.
export GOWORK=off GOFLAGS=-mod=mod CGO_ENABLED=0

cd "$work"
go mod init build.local/kubernetes >/dev/null 2>&1
kube_gomod="$(go mod download -json "k8s.io/kubernetes@v${version}" |
  sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
staging_version="v0.${version#1.}"
replaces=()
while read -r module; do
  replaces+=("-replace=${module}=${module}@${staging_version}")
done < <(sed -n 's#^[[:space:]]*\(k8s.io/[^[:space:]]*\) => ./staging/.*#\1#p' "$kube_gomod")
if [[ ${#replaces[@]} -eq 0 ]]; then
  log "found no staging replacements in $kube_gomod; cannot build Kubernetes v${version}"
  exit 1
fi
go mod edit "${replaces[@]}"
go get "k8s.io/kubernetes@v${version}" >&2

for command in "${missing[@]}"; do
  log "building ${command} v${version} (the first one takes about 7 minutes on 2 cores, later ones reuse its packages)"
  go build -trimpath -o "$work/$command.bin" "k8s.io/kubernetes/cmd/$command" >&2
  mv "$work/$command.bin" "$outdir/$command"
done
