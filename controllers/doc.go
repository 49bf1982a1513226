// Package controllers contains one reconciler per thingdb.io kind, split into
// files by concern (`<kind>_<concern>.go`).
//
// The ThingNode reconciler turns a ThingNode named N into a StatefulSet of
// `thingdb serve` pods and everything they mount. That is the passphrase
// Secret, one Secret per API token, the Secret of token hashes the nodes
// read, the peer file Secret and the TLS Secret, which comes from a
// cert-manager Certificate or from a CA the operator keeps. Beside them are
// a headless Service for stable pod DNS, a client Service and, with more than
// one replica, a PodDisruptionBudget. Every
// child except the PersistentVolumeClaims is owned by the ThingNode, so the
// garbage collector removes them with it. The claims come from the
// StatefulSet's claim template and follow spec.storage.
//
// A reconcile compares each child with its desired state on the fields the
// controller sets (equality.Semantic.DeepDerivative, so fields the API server
// defaults are left alone) and writes only what differs. A reconcile with
// nothing to change makes no API write, status included.
package controllers
