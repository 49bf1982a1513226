#!/usr/bin/env bash
# Runs the ThingDB operator in a local kind cluster: creates the cluster,
# installs cert-manager, builds and loads the image, installs the Helm chart,
# applies config/samples and waits until every ThingNode is Ready (and every
# ThingSync Synced).
#
# Needs Docker, kind, kubectl and Go. The default path downloads the kind
# node image and the cert-manager manifest, so it needs internet. With
# KIND_NODE_IMAGE set to a locally built node image and TLS_MODE=operator-ca
# it downloads nothing.
#
# Settings (environment variables):
#   KIND_CLUSTER_NAME     cluster name (default thingdb-demo); an existing
#                         cluster of that name is reused
#   KIND_NODE_IMAGE       kind node image, for example one built with
#                         `kind build node-image` (default: kind's own)
#   TLS_MODE              cert-manager (default): install cert-manager and
#                         sign the nodes' certificates with a cert-manager CA;
#                         operator-ca: no cert-manager, the operator's own CA
#   CERT_MANAGER_VERSION  pinned cert-manager release (default v1.21.2)
#   IMG                   image to build and load (default thingdb:dev)
#   DOCKER_BUILD_MODE     passed to `make docker-build` (local or source)
#   SKIP_BUILD=1          load IMG as it is, without `make docker-build`
#   DEMO_NAMESPACE        namespace of the samples (default thingdb-demo)
#   OPERATOR_NAMESPACE    namespace of the operator (default thingdb-system)
#   WAIT_TIMEOUT          how long each wait may take (default 300s)
#   DELETE_CLUSTER=1      delete the cluster when the demo ends, pass or fail
set -euo pipefail

cd "$(dirname "$0")/.."
repo_root=$(pwd)

cluster=${KIND_CLUSTER_NAME:-thingdb-demo}
node_image=${KIND_NODE_IMAGE:-}
tls_mode=${TLS_MODE:-cert-manager}
cert_manager_version=${CERT_MANAGER_VERSION:-v1.21.2}
img=${IMG:-thingdb:dev}
demo_namespace=${DEMO_NAMESPACE:-thingdb-demo}
operator_namespace=${OPERATOR_NAMESPACE:-thingdb-system}
wait_timeout=${WAIT_TIMEOUT:-300s}
release=thingdb-operator
# The cert-manager sample in config/samples names this ClusterIssuer.
issuer=thingdb-ca

log() { printf '==> %s\n' "$*" >&2; }
fail() { printf 'kind-demo: %s\n' "$*" >&2; exit 1; }

case "$tls_mode" in
	cert-manager | operator-ca) ;;
	*) fail "invalid TLS_MODE '$tls_mode': use cert-manager or operator-ca" ;;
esac
if [[ "$img" != *:* ]]; then
	fail "invalid IMG '$img': give a repository and a tag, such as thingdb:dev"
fi
for tool in docker kind kubectl go; do
	command -v "$tool" >/dev/null || fail "$tool not found in PATH: install it (kind: go install sigs.k8s.io/kind@v0.33.0)"
done

context="kind-$cluster"
kubectl() { command kubectl --context "$context" "$@"; }
helm() { go tool helm --kube-context "$context" "$@"; }

# The overlay for the samples lives under tmp/ (ignored by git) because
# kustomize accepts only relative paths to other kustomizations.
mkdir -p tmp
scratch=$(mktemp -d "$repo_root/tmp/kind-demo.XXXXXX")
cleanup() {
	local status=$?
	rm -rf "$scratch"
	if [[ "${DELETE_CLUSTER:-}" == 1 ]]; then
		log "deleting kind cluster $cluster"
		command kind delete cluster --name "$cluster" || true
	elif [[ $status -ne 0 ]]; then
		printf '\nkind-demo failed (exit %d). The cluster %s is left for inspection:\n' "$status" "$cluster" >&2
		printf '  kubectl --context %s get pods -A\n' "$context" >&2
		printf '  kubectl --context %s -n %s logs deployment/%s-controller-manager\n' "$context" "$operator_namespace" "$release" >&2
		printf '  kind delete cluster --name %s\n' "$cluster" >&2
	fi
}
trap cleanup EXIT

# 1. The cluster.
if command kind get clusters 2>/dev/null | grep -qx "$cluster"; then
	log "reusing kind cluster $cluster"
else
	log "creating kind cluster $cluster${node_image:+ from node image $node_image}"
	command kind create cluster --name "$cluster" ${node_image:+--image "$node_image"} --wait 120s
fi

# 2. cert-manager and a CA issuer for the nodes, unless the operator's own CA is used.
if [[ "$tls_mode" == cert-manager ]]; then
	log "installing cert-manager $cert_manager_version (needs internet)"
	kubectl apply -f "https://github.com/cert-manager/cert-manager/releases/download/$cert_manager_version/cert-manager.yaml"
	kubectl -n cert-manager wait deployment --all --for=condition=Available --timeout="$wait_timeout"

	log "creating ClusterIssuer $issuer: a self-signed root that signs the nodes' certificates"
	# The cert-manager webhook may need a few seconds after it turns Available
	# before it admits objects, so the apply is retried.
	for attempt in 1 2 3 4 5 6; do
		if kubectl apply -f - <<EOF
apiVersion: cert-manager.io/v1
kind: ClusterIssuer
metadata:
  name: $issuer-selfsigned
spec:
  selfSigned: {}
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata:
  name: $issuer
  namespace: cert-manager
spec:
  isCA: true
  commonName: $issuer
  secretName: $issuer
  privateKey:
    algorithm: ECDSA
    size: 256
  issuerRef:
    kind: ClusterIssuer
    name: $issuer-selfsigned
---
apiVersion: cert-manager.io/v1
kind: ClusterIssuer
metadata:
  name: $issuer
spec:
  ca:
    secretName: $issuer
EOF
		then
			break
		fi
		[[ $attempt -lt 6 ]] || fail "cert-manager did not admit the issuers after $attempt attempts"
		sleep 10
	done
	kubectl wait clusterissuer "$issuer" --for=condition=Ready --timeout="$wait_timeout"
fi

# 3. The image, built here and loaded into the cluster's nodes.
if [[ "${SKIP_BUILD:-}" != 1 ]]; then
	log "building image $img"
	make docker-build IMG="$img"
fi
log "loading image $img into kind cluster $cluster"
command kind load docker-image "$img" --name "$cluster"

# 4. The operator, from the chart in this repository.
log "installing chart $release into namespace $operator_namespace"
helm upgrade --install "$release" charts/thingdb-operator \
	--namespace "$operator_namespace" --create-namespace \
	--set image.repository="${img%:*}" --set image.tag="${img##*:}" \
	--set image.pullPolicy=IfNotPresent \
	--wait --timeout "$wait_timeout"

# 5. The samples, with the demo's image (and, without cert-manager, the
# operator's CA) patched in by a kustomize overlay, so config/samples stays
# as it is.
log "applying config/samples to namespace $demo_namespace (TLS: $tls_mode)"
tls_patch=""
if [[ "$tls_mode" == operator-ca ]]; then
	tls_patch='
      - op: add
        path: /spec/tls
        value: {"mode": "OperatorCA"}'
fi
mkdir -p "$scratch/samples"
cat >"$scratch/samples/kustomization.yaml" <<EOF
namespace: $demo_namespace
resources:
  - ../../../config/samples
patches:
  - target:
      group: thingdb.io
      kind: ThingNode
    patch: |-
      - op: add
        path: /spec/image
        value: $img
      - op: add
        path: /spec/imagePullPolicy
        value: IfNotPresent$tls_patch
EOF
kubectl create namespace "$demo_namespace" --dry-run=client -o yaml | kubectl apply -f -

# A sample may name an existing passphrase Secret. The demo creates each one
# that is missing, with a random passphrase that is never printed.
kubectl kustomize "$scratch/samples" >"$scratch/samples.yaml"
# kustomize prints the fields of spec indented by two spaces and theirs by
# four, so spec.passphrase.secretName is the "    secretName:" line inside the
# "  passphrase:" block.
secret_names=$(awk '
	/^  passphrase:$/ { inside = 1; next }
	inside && /^    secretName:/ { print $2 }
	inside && !/^    / { inside = 0 }
' "$scratch/samples.yaml")
for secret in $secret_names; do
	if ! kubectl -n "$demo_namespace" get secret "$secret" >/dev/null 2>&1; then
		log "creating passphrase Secret $secret"
		head -c 32 /dev/urandom | base64 | tr -d '\n' >"$scratch/passphrase"
		kubectl -n "$demo_namespace" create secret generic "$secret" --from-file=passphrase="$scratch/passphrase"
		rm -f "$scratch/passphrase"
	fi
done
kubectl apply -f "$scratch/samples.yaml"

# 6. Wait for the nodes, then for the syncs when the samples declare any.
log "waiting for every ThingNode in $demo_namespace to be Ready"
kubectl -n "$demo_namespace" wait thingnode --all --for=condition=Ready --timeout="$wait_timeout"
if kubectl get crd thingsyncs.thingdb.io >/dev/null 2>&1 &&
	[[ -n "$(kubectl -n "$demo_namespace" get thingsync -o name)" ]]; then
	log "waiting for every ThingSync in $demo_namespace to be Synced"
	kubectl -n "$demo_namespace" wait thingsync --all --for=condition=Synced --timeout="$wait_timeout"
fi

kubectl -n "$demo_namespace" get thingnodes
if kubectl get crd thingsyncs.thingdb.io >/dev/null 2>&1; then
	kubectl -n "$demo_namespace" get thingsyncs
fi
node=$(kubectl -n "$demo_namespace" get thingnodes -o jsonpath='{.items[0].metadata.name}')
host="$node.$demo_namespace.svc"

cat <<EOF

The ThingDB demo is running in kind cluster $cluster (kubectl context $context).

Where to look next:
  kubectl --context $context -n $demo_namespace get thingnodes,statefulsets,pods,secrets
  kubectl --context $context -n $demo_namespace describe thingnode $node
  kubectl --context $context -n $operator_namespace logs deployment/$release-controller-manager

Call the API of ThingNode $node from this machine, checking its certificate
against the CA in its TLS Secret:
  kubectl --context $context -n $demo_namespace port-forward service/$node 8443:8443 &
  kubectl --context $context -n $demo_namespace get secret $node-tls -o jsonpath='{.data.ca\\.crt}' | base64 -d >ca.crt
  curl --cacert ca.crt --connect-to $host:8443:127.0.0.1:8443 https://$host:8443/v1/identity

Delete everything:
  kind delete cluster --name $cluster
EOF
