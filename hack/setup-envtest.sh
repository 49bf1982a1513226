#!/usr/bin/env bash
# Build the envtest control plane (etcd and kube-apiserver) from source
# through the Go module proxy, cache the binaries where setup-envtest keeps
# its own, and print the directory to use as KUBEBUILDER_ASSETS.
#
# No binary download site is needed, so this works on machines that reach
# only the Go module proxy. With internet, ENVTEST_DOWNLOAD=1 uses
# setup-envtest instead.
#
# Environment:
#   ENVTEST_K8S_VERSION  Kubernetes version to build (default 1.37.2)
#   ENVTEST_ETCD_VERSION etcd version to build (default 3.6.16)
#   ENVTEST_ASSETS_ROOT  cache root (default: setup-envtest's data directory)
#   ENVTEST_DOWNLOAD     1 to download with setup-envtest instead of building
set -euo pipefail

k8s_version="${ENVTEST_K8S_VERSION:-1.37.2}"
etcd_version="${ENVTEST_ETCD_VERSION:-3.6.16}"
goos="$(go env GOOS)"
goarch="$(go env GOARCH)"
assets_root="${ENVTEST_ASSETS_ROOT:-${XDG_DATA_HOME:-$HOME/.local/share}/kubebuilder-envtest}"
assets_dir="$assets_root/k8s/${k8s_version}-${goos}-${goarch}"

log() { echo "setup-envtest: $*" >&2; }

if [[ "${ENVTEST_DOWNLOAD:-0}" == "1" ]]; then
  log "downloading Kubernetes ${k8s_version} control plane with setup-envtest (needs internet)"
  go run sigs.k8s.io/controller-runtime/tools/setup-envtest@release-0.25 \
    use "${k8s_version}" --bin-dir "$assets_root" -p path
  exit 0
fi

if [[ -x "$assets_dir/etcd" && -x "$assets_dir/kube-apiserver" ]]; then
  log "using cached binaries in $assets_dir"
  echo "$assets_dir"
  exit 0
fi

mkdir -p "$assets_dir"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# The scratch modules must not inherit the project's go.work or GOFLAGS.
export GOWORK=off GOFLAGS=-mod=mod CGO_ENABLED=0

if [[ ! -x "$assets_dir/etcd" ]]; then
  log "building etcd v${etcd_version} from the module proxy (about 2 minutes)"
  mkdir -p "$work/etcd"
  (
    cd "$work/etcd"
    go mod init envtest.local/etcd >/dev/null 2>&1
    go get "go.etcd.io/etcd/server/v3@v${etcd_version}" \
      "go.etcd.io/etcd/api/v3@v${etcd_version}" \
      "go.etcd.io/etcd/client/pkg/v3@v${etcd_version}" \
      "go.etcd.io/etcd/client/v3@v${etcd_version}" \
      "go.etcd.io/etcd/pkg/v3@v${etcd_version}" >&2
    go build -trimpath -o "$work/etcd.bin" go.etcd.io/etcd/server/v3 >&2
  )
  mv "$work/etcd.bin" "$assets_dir/etcd"
fi

if [[ ! -x "$assets_dir/kube-apiserver" ]]; then
  "$(dirname "${BASH_SOURCE[0]}")/lib/build-kubernetes.sh" "$k8s_version" "$assets_dir" kube-apiserver
fi

log "binaries cached in $assets_dir"
echo "$assets_dir"
