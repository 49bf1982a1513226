package v1alpha1

// The condition types of a ThingNode. The ThingNode controller sets all of
// them on every reconcile that gets past reading the ThingNode.
const (
	// ConditionReady is True when every one of spec.replicas pods is ready
	// on the current spec and TLSReady is True.
	ConditionReady = "Ready"

	// ConditionProgressing is True while the StatefulSet rolls out a spec
	// that not every pod runs yet, or pods are not ready yet.
	ConditionProgressing = "Progressing"

	// ConditionDegraded is True when the controller cannot bring a child to
	// its desired state (an API error, a named Secret that is missing, a node
	// whose identity cannot be read). The message names the object and the fix.
	ConditionDegraded = "Degraded"

	// ConditionTLSReady is True when the TLS Secret `<name>-tls` contains a
	// certificate and key that are valid now and cover every pod and Service
	// name.
	ConditionTLSReady = "TLSReady"
)

// The reasons of the ThingNode conditions.
const (
	// ReasonReplicasReady (Ready=True): every pod is ready on the current spec.
	ReasonReplicasReady = "ReplicasReady"
	// ReasonReplicasNotReady (Ready=False): fewer pods are ready than
	// spec.replicas, or they run an older spec.
	ReasonReplicasNotReady = "ReplicasNotReady"
	// ReasonTLSNotReady (Ready=False): the pods may run, but the TLS Secret is
	// not ready.
	ReasonTLSNotReady = "TLSNotReady"
	// ReasonPaused (Ready and Progressing False): spec.paused is true and the
	// controller changes no child.
	ReasonPaused = "Paused"

	// ReasonRollingOut (Progressing=True): the StatefulSet has not yet
	// brought every pod to the current spec or to ready.
	ReasonRollingOut = "RollingOut"
	// ReasonRolloutComplete (Progressing=False): every pod runs the current
	// spec and is ready.
	ReasonRolloutComplete = "RolloutComplete"

	// ReasonReconcileSucceeded (Degraded=False): every child matches the spec.
	ReasonReconcileSucceeded = "ReconcileSucceeded"
	// ReasonReconcileFailed (Degraded=True): an API call for a child failed.
	ReasonReconcileFailed = "ReconcileFailed"
	// ReasonSecretInvalid (Degraded=True): a Secret named in the spec is
	// missing or lacks its key.
	ReasonSecretInvalid = "SecretInvalid"
	// ReasonChildConflict (Degraded=True): an object with a child's name
	// exists and belongs to something else.
	ReasonChildConflict = "ChildConflict"
	// ReasonIdentityUnavailable (Degraded=True): a ready pod did not return
	// its identity from /v1/identity.
	ReasonIdentityUnavailable = "IdentityUnavailable"

	// ReasonCertificateIssued (TLSReady=True): the TLS Secret contains a valid
	// certificate for every name.
	ReasonCertificateIssued = "CertificateIssued"
	// ReasonCertificatePending (TLSReady=False): cert-manager has not yet
	// written a valid certificate for every name into the TLS Secret.
	ReasonCertificatePending = "CertificatePending"
	// ReasonCertManagerNotInstalled (TLSReady=False): spec.tls.mode is
	// CertManager but the cluster has no cert-manager Certificate CRD.
	ReasonCertManagerNotInstalled = "CertManagerNotInstalled"
	// ReasonTLSNotChecked (TLSReady=Unknown): the reconcile stopped before
	// the TLS step, and no earlier reconcile checked the TLS Secret.
	ReasonTLSNotChecked = "NotChecked"
	// ReasonCertificateFailed (TLSReady=False): the operator CA could not
	// issue the certificate, or the Certificate could not be written.
	ReasonCertificateFailed = "CertificateFailed"
)

// The reasons of the Events the ThingNode controller records, one per change
// it makes to the cluster.
const (
	// EventCreated: a child was created.
	EventCreated = "Created"
	// EventUpdated: a child was changed back to its desired state.
	EventUpdated = "Updated"
	// EventDeleted: a child that the spec no longer needs was deleted.
	EventDeleted = "Deleted"
	// EventCertificateIssued: the operator CA issued a new certificate.
	EventCertificateIssued = "CertificateIssued"
	// EventReconcileFailed: a reconcile stopped on an error.
	EventReconcileFailed = "ReconcileFailed"
)

// The condition types of a ThingSync. The ThingSync controller sets all of
// them on every reconcile of an existing ThingSync.
const (
	// ConditionSynced is True when every pair of members has synced within
	// three intervals and no pair lags behind.
	ConditionSynced = "Synced"

	// ConditionForkDetected is True while a member reports a fork with a
	// peer or a peer whose identity does not match its pinned key.
	ConditionForkDetected = "ForkDetected"
)

// The reasons of the ThingSync conditions. Ready uses the type of the
// ThingNode condition (ConditionReady).
const (
	// ReasonPeersRendered (Ready=True): every member was found and the peer
	// file of each lists every peer pod with its pinned keys.
	ReasonPeersRendered = "PeersRendered"
	// ReasonMembersNotFound (Ready=False): a ThingNode named in
	// spec.members.names does not exist, or the selector matches none.
	ReasonMembersNotFound = "MembersNotFound"
	// ReasonIdentitiesPending (Ready=False): a member pod's identity is not
	// yet in its ThingNode's status, so its peers cannot pin it yet.
	ReasonIdentitiesPending = "IdentitiesPending"
	// ReasonInvalidTopology (Ready=False): the topology names a ThingNode
	// that is not a member, which CEL cannot check for a selector.
	ReasonInvalidTopology = "InvalidTopology"
	// ReasonRenderFailed (Ready=False): a peer file Secret could not be
	// written, or a Secret it needs is missing.
	ReasonRenderFailed = "RenderFailed"
	// ReasonSuspended (Ready and Synced False): spec.suspend is true, so
	// this ThingSync gives its members no peer.
	ReasonSuspended = "Suspended"

	// ReasonAllPairsSynced (Synced=True): every pair synced recently with
	// zero lag.
	ReasonAllPairsSynced = "AllPairsSynced"
	// ReasonSyncPending (Synced=False): a pair has not synced yet, not
	// recently, or still lags.
	ReasonSyncPending = "SyncPending"
	// ReasonSyncFailing (Synced=False): a pair's last attempt failed.
	ReasonSyncFailing = "SyncFailing"
	// ReasonStatusUnavailable (Synced=Unknown): a member pod did not return
	// its sync status.
	ReasonStatusUnavailable = "StatusUnavailable"

	// ReasonNoFork (ForkDetected=False): no member reports a fork or a key
	// mismatch.
	ReasonNoFork = "NoFork"
	// ReasonFork (ForkDetected=True): two members hold different entries
	// for the same origin and sequence.
	ReasonFork = "Fork"
	// ReasonKeyMismatch (ForkDetected=True): a peer returned a node id
	// or key other than the one pinned in the peer file.
	ReasonKeyMismatch = "KeyMismatch"
)

// The reasons of the Events the ThingSync controller records.
const (
	// EventPeersRendered: a member's peer file Secret was written.
	EventPeersRendered = "PeersRendered"
	// EventForkDetected: a member reported a fork or a key mismatch (a
	// Warning).
	EventForkDetected = "ForkDetected"
)
