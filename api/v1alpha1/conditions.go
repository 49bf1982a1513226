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
