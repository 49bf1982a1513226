package controllers

import (
	"fmt"

	thingdbv1 "github.com/thingdb/thingdb/api/v1alpha1"
)

// Labels on every child, and the pod selector of the StatefulSet and Services.
const (
	labelName      = "app.kubernetes.io/name"
	labelInstance  = "app.kubernetes.io/instance"
	labelComponent = "app.kubernetes.io/component"
	labelManagedBy = "app.kubernetes.io/managed-by"

	// LabelThingNode is on every Secret that belongs to a ThingNode,
	// including the TLS Secret that cert-manager writes, so a change to one
	// of them reconciles its ThingNode.
	LabelThingNode = "thingdb.io/thingnode"

	// ManagedByValue is the value of app.kubernetes.io/managed-by on every
	// child, and the label the manager selects the pods it caches by.
	ManagedByValue = "thingdb-operator"
)

// Ports, paths and keys that the pods and the node binary agree on.
const (
	nodePort     = 8443
	nodePortName = "https"

	dataVolume    = "data"
	dataMountPath = "/var/lib/thingdb"
	// The ledger lives one level below the volume root, because a fresh
	// file system may hold lost+found and `serve` creates a ledger only in
	// an empty directory.
	ledgerDir = dataMountPath + "/ledger"

	passphraseMountPath = "/etc/thingdb/passphrase"
	passphraseFile      = "passphrase"
	tokenMountPath      = "/etc/thingdb/tokens"
	tlsMountPath        = "/etc/thingdb/tls"
	peersMountPath      = "/etc/thingdb/peers"
	tmpMountPath        = "/tmp"

	// Keys of the Secrets the operator writes.
	keyPassphrase = "passphrase"
	keyToken      = "token"
	keyScopes     = "scopes"
	keyPeers      = "peers.json"
	keyCACert     = "ca.crt"
	keyCAKey      = "ca.key"
	keyTLSCert    = "tls.crt"
	keyTLSKey     = "tls.key"

	// nodeUser is the uid and gid the node container runs as.
	nodeUser int64 = 65532
)

func statefulSetName(tn *thingdbv1.ThingNode) string     { return tn.Name }
func headlessServiceName(tn *thingdbv1.ThingNode) string { return tn.Name + "-headless" }
func clientServiceName(tn *thingdbv1.ThingNode) string   { return tn.Name }
func tlsSecretName(tn *thingdbv1.ThingNode) string       { return tn.Name + "-tls" }
func caSecretName(tn *thingdbv1.ThingNode) string        { return tn.Name + "-ca" }
func tokenHashesSecretName(tn *thingdbv1.ThingNode) string {
	return tn.Name + "-token-hashes"
}
func peersSecretName(tn *thingdbv1.ThingNode) string { return tn.Name + "-peers" }
func pdbName(tn *thingdbv1.ThingNode) string         { return tn.Name }

// passphraseSecretName returns the Secret that contains the passphrase: the one
// the spec names, or the generated `<name>-passphrase`.
func passphraseSecretName(tn *thingdbv1.ThingNode) string {
	if tn.Spec.Passphrase.SecretName != "" {
		return tn.Spec.Passphrase.SecretName
	}
	return tn.Name + "-passphrase"
}

// passphraseKey returns the key of the passphrase in its Secret.
func passphraseKey(tn *thingdbv1.ThingNode) string {
	if tn.Spec.Passphrase.Key != "" {
		return tn.Spec.Passphrase.Key
	}
	return keyPassphrase
}

// tokenSecretName returns the Secret of one declared token.
func tokenSecretName(tn *thingdbv1.ThingNode, token thingdbv1.TokenSpec) string {
	if token.SecretName != "" {
		return token.SecretName
	}
	return tn.Name + "-token-" + token.Name
}

// replicas returns spec.replicas, or 1 when the API server did not default
// it (objects built in Go without defaults).
func replicas(tn *thingdbv1.ThingNode) int32 {
	if tn.Spec.Replicas < 1 {
		return 1
	}
	return tn.Spec.Replicas
}

// podName returns the name of the StatefulSet pod with the given ordinal.
func podName(tn *thingdbv1.ThingNode, ordinal int32) string {
	return fmt.Sprintf("%s-%d", statefulSetName(tn), ordinal)
}

// selectorLabels returns the labels that select the pods of tn.
func selectorLabels(tn *thingdbv1.ThingNode) map[string]string {
	return map[string]string{
		labelName:     "thingdb",
		labelInstance: tn.Name,
	}
}

// childLabels returns the labels of every child of tn.
func childLabels(tn *thingdbv1.ThingNode) map[string]string {
	labels := selectorLabels(tn)
	labels[labelComponent] = "node"
	labels[labelManagedBy] = ManagedByValue
	labels[LabelThingNode] = tn.Name
	return labels
}

// serviceDNSNames returns every DNS name a client or peer may use to reach
// tn: the client Service, the headless Service and each pod under the
// headless Service, in the short, namespaced, .svc and cluster-domain forms.
func serviceDNSNames(tn *thingdbv1.ThingNode, clusterDomain string) []string {
	hosts := []string{clientServiceName(tn), headlessServiceName(tn)}
	for ordinal := range replicas(tn) {
		hosts = append(hosts, podName(tn, ordinal)+"."+headlessServiceName(tn))
	}

	names := make([]string, 0, 4*len(hosts))
	for _, host := range hosts {
		names = append(names,
			host,
			host+"."+tn.Namespace,
			host+"."+tn.Namespace+".svc",
			host+"."+tn.Namespace+".svc."+clusterDomain,
		)
	}
	return names
}
