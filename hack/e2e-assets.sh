#!/usr/bin/env bash
# Build everything the end-to-end cluster needs, offline: the Kubernetes
# binaries (through the Go module proxy, cached beside the envtest ones),
# CoreDNS, and the pause and CoreDNS images FROM scratch. Installs the CNI
# plugins from Debian's packages when they are missing. Prints the
# directory of the binaries.
#
# Environment:
#   ENVTEST_K8S_VERSION  Kubernetes version (default 1.37.2)
#   COREDNS_VERSION      CoreDNS version (default 1.15.0)
#   ENVTEST_ASSETS_ROOT  cache root (default: setup-envtest's data directory)
#   E2E_ASSETS_ROOT      cache of CoreDNS (default: ~/.local/share/thingdb-e2e)
set -euo pipefail

cd "$(dirname "$0")/.."
k8s_version="${ENVTEST_K8S_VERSION:-1.37.2}"
coredns_version="${COREDNS_VERSION:-1.15.0}"
e2e_root="${E2E_ASSETS_ROOT:-${XDG_DATA_HOME:-$HOME/.local/share}/thingdb-e2e}"

log() { echo "e2e-assets: $*" >&2; }
fail() { echo "e2e-assets: $*" >&2; exit 1; }

for tool in docker containerd ctr runc iptables ip; do
  command -v "$tool" >/dev/null || fail "$tool not found: install Docker Engine and containerd from Debian's packages (apt-get install docker.io)"
done
if [[ ! -x /usr/lib/cni/bridge ]]; then
  log "installing Debian's containernetworking-plugins"
  # A new machine may have no package lists yet, so update once on failure.
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y containernetworking-plugins >&2 ||
    { apt-get update >&2 && apt-get install -y containernetworking-plugins >&2; } ||
    fail "could not install containernetworking-plugins; install it and run again"
fi

# etcd and kube-apiserver come from the envtest script, so both share one
# cache directory.
bin_dir="$(hack/setup-envtest.sh)"
hack/lib/build-kubernetes.sh "$k8s_version" "$bin_dir" \
  kube-controller-manager kube-scheduler kubelet kube-proxy

coredns_dir="$e2e_root/coredns-$coredns_version"
if [[ ! -x "$coredns_dir/coredns" ]]; then
  log "building CoreDNS v$coredns_version from the module proxy (about 3 minutes)"
  work="$(mktemp -d)"
  (
    cd "$work"
    export GOWORK=off GOFLAGS=-mod=mod CGO_ENABLED=0
    go mod init build.local/coredns >/dev/null 2>&1
    go get "github.com/coredns/coredns@v$coredns_version" >&2
    go build -trimpath -o coredns.bin github.com/coredns/coredns >&2
  )
  mkdir -p "$coredns_dir"
  mv "$work/coredns.bin" "$coredns_dir/coredns"
  rm -rf "$work"
fi

# Both images are one static binary on an empty base, so Docker's layer
# cache makes a rebuild of unchanged inputs instant.
context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
CGO_ENABLED=0 go build -trimpath -o "$context/pause" ./test/e2e/pause
cp "$coredns_dir/coredns" "$context/coredns"
printf 'FROM scratch\nCOPY pause /pause\nUSER 65535\nENTRYPOINT ["/pause"]\n' >"$context/Dockerfile.pause"
printf 'FROM scratch\nCOPY coredns /coredns\nUSER 65532\nENTRYPOINT ["/coredns"]\n' >"$context/Dockerfile.coredns"
docker build -q -f "$context/Dockerfile.pause" -t thingdb-e2e/pause:local "$context" >&2
docker build -q -f "$context/Dockerfile.coredns" -t thingdb-e2e/coredns:local "$context" >&2

echo "$bin_dir"
