package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ThingNodeSpec is the desired state of a ThingNode.
type ThingNodeSpec struct {
	// Replicas is the number of node pods, each with its own ledger on its own
	// volume.
	// +kubebuilder:default=1
	// +kubebuilder:validation:XValidation:rule="self >= 1 && self <= 15",message="replicas must be between 1 and 15"
	// +optional
	Replicas int32 `json:"replicas,omitempty"`

	// Image is the container image that contains the `/thingdb` binary.
	// +kubebuilder:validation:MinLength=1
	Image string `json:"image"`

	// ImagePullPolicy is the pull policy of the node container. Empty means
	// the Kubernetes default for the image tag.
	// +kubebuilder:validation:Enum=Always;IfNotPresent;Never
	// +optional
	ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy,omitempty"`

	// ImagePullSecrets are the Secrets the kubelet uses to pull the image.
	// +optional
	ImagePullSecrets []corev1.LocalObjectReference `json:"imagePullSecrets,omitempty"`

	// Storage is the persistent volume of each pod that contains its ledger.
	// +kubebuilder:default={}
	// +optional
	Storage StorageSpec `json:"storage,omitempty"`

	// Passphrase is the source of the passphrase that unlocks the ledger.
	// It cannot change after creation.
	// +kubebuilder:default={}
	// +optional
	Passphrase PassphraseSpec `json:"passphrase,omitempty"`

	// TLS is the source of the nodes' serving certificates.
	// +kubebuilder:default={}
	// +optional
	TLS TLSSpec `json:"tls,omitempty"`

	// Tokens are the API tokens the nodes accept. The nodes read only the
	// SHA-256 of each token.
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=32
	// +optional
	Tokens []TokenSpec `json:"tokens,omitempty"`

	// Durability is when the node fsyncs its ledger: `always` after every
	// entry, `batch` after each batch of writes, `none` never (tests only).
	// +kubebuilder:validation:Enum=always;batch;none
	// +kubebuilder:default=batch
	// +optional
	Durability Durability `json:"durability,omitempty"`

	// SealToPeers turns on envelope mode: every put without its own
	// recipients is also sealed to each peer in the peer file that has an
	// X25519 key, so peers with another passphrase can decrypt it.
	// +optional
	SealToPeers bool `json:"sealToPeers,omitempty"`

	// ServiceType is the type of the client Service.
	// +kubebuilder:validation:Enum=ClusterIP;NodePort;LoadBalancer
	// +kubebuilder:default=ClusterIP
	// +optional
	ServiceType corev1.ServiceType `json:"serviceType,omitempty"`

	// Resources are the compute requests and limits of the node container.
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`

	// NodeSelector restricts the pods to Kubernetes nodes with these labels.
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`

	// Tolerations let the pods run on tainted Kubernetes nodes.
	// +optional
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`

	// Affinity is the scheduling affinity rules of the pods.
	// +optional
	Affinity *corev1.Affinity `json:"affinity,omitempty"`

	// PriorityClassName is the priority class of the pods.
	// +optional
	PriorityClassName string `json:"priorityClassName,omitempty"`

	// Paused stops the operator from changing any child of this ThingNode.
	// Status is still updated.
	// +optional
	Paused bool `json:"paused,omitempty"`
}

// StorageSpec describes the volume claim of each node pod.
// +kubebuilder:validation:XValidation:rule="has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)",message="storage.storageClassName is immutable because a StatefulSet cannot change its volume claim template; create a new ThingNode to move the ledgers"
type StorageSpec struct {
	// Size is the requested capacity of each pod's volume.
	// +kubebuilder:default="1Gi"
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="storage.size is immutable because a StatefulSet cannot change its volume claim template; expand the PersistentVolumeClaims directly instead"
	// +optional
	Size resource.Quantity `json:"size,omitempty"`

	// StorageClassName is the storage class of the volumes. Empty means the
	// cluster's default class.
	// +optional
	StorageClassName *string `json:"storageClassName,omitempty"`

	// WhenDeleted is the policy for the volumes when the ThingNode, and so its
	// StatefulSet, is deleted: `Retain` keeps them, `Delete` deletes them.
	// +kubebuilder:validation:Enum=Retain;Delete
	// +kubebuilder:default=Retain
	// +optional
	WhenDeleted VolumeRetention `json:"whenDeleted,omitempty"`

	// WhenScaled is the policy for the volumes of pods removed by a scale
	// down: `Retain` keeps them, `Delete` deletes them.
	// +kubebuilder:validation:Enum=Retain;Delete
	// +kubebuilder:default=Retain
	// +optional
	WhenScaled VolumeRetention `json:"whenScaled,omitempty"`
}

// PassphraseSpec names the Secret that contains the ledger passphrase.
// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="passphrase is immutable because the ledger's key slots are sealed under it; change the passphrase with the thingdb CLI instead"
type PassphraseSpec struct {
	// SecretName is an existing Secret in the ThingNode's namespace that
	// contains the passphrase. Empty means the operator generates the Secret
	// `<name>-passphrase` once and never regenerates it.
	// +kubebuilder:validation:MaxLength=253
	// +optional
	SecretName string `json:"secretName,omitempty"`

	// Key is the key of the passphrase in the Secret.
	// +kubebuilder:default=passphrase
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +optional
	Key string `json:"key,omitempty"`
}

// TLSSpec selects where the serving certificates of the nodes come from.
// +kubebuilder:validation:XValidation:rule="!has(self.mode) || self.mode != 'CertManager' || has(self.issuerRef)",message="tls.issuerRef is required when tls.mode is CertManager: name a cert-manager Issuer or ClusterIssuer, or set tls.mode to OperatorCA"
type TLSSpec struct {
	// Mode is `CertManager` for a cert-manager Certificate signed by
	// IssuerRef, or `OperatorCA` for a CA that the operator creates and keeps
	// in the Secret `<name>-ca`.
	// +kubebuilder:validation:Enum=CertManager;OperatorCA
	// +kubebuilder:default=OperatorCA
	// +optional
	Mode TLSMode `json:"mode,omitempty"`

	// IssuerRef is the cert-manager issuer that signs the Certificate.
	// Required when Mode is CertManager.
	// +optional
	IssuerRef *IssuerReference `json:"issuerRef,omitempty"`

	// ClientAuth is whether the nodes ask for client certificates signed by
	// the same CA: `none`, `request` or `require`.
	// +kubebuilder:validation:Enum=none;request;require
	// +kubebuilder:default=none
	// +optional
	ClientAuth ClientAuth `json:"clientAuth,omitempty"`
}

// IssuerReference names a cert-manager Issuer or ClusterIssuer.
type IssuerReference struct {
	// Name is the name of the issuer.
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`

	// Kind is `Issuer` (in the ThingNode's namespace) or `ClusterIssuer`.
	// +kubebuilder:validation:Enum=Issuer;ClusterIssuer
	// +kubebuilder:default=Issuer
	// +optional
	Kind string `json:"kind,omitempty"`

	// Group is the API group of the issuer.
	// +kubebuilder:default=cert-manager.io
	// +optional
	Group string `json:"group,omitempty"`
}

// TokenSpec declares one API token of the nodes.
type TokenSpec struct {
	// Name identifies the token in the nodes' logs and in the Secret name
	// `<thingnode>-token-<name>`.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=40
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`

	// Scopes are the permissions of the token: read, write, export, import,
	// admin.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=5
	// +kubebuilder:validation:XValidation:rule="self.all(s, s in ['read', 'write', 'export', 'import', 'admin'])",message="token scopes must be among read, write, export, import and admin"
	// +listType=set
	Scopes []TokenScope `json:"scopes"`

	// SecretName is an existing Secret, with the token under the key `token`,
	// to adopt. Empty means `<thingnode>-token-<name>`, which the operator
	// adopts when it exists and otherwise generates once.
	// +kubebuilder:validation:MaxLength=253
	// +optional
	SecretName string `json:"secretName,omitempty"`
}

// TokenScope is one permission of an API token.
// +kubebuilder:validation:MaxLength=16
type TokenScope string

// The token scopes a node accepts.
const (
	TokenScopeRead   TokenScope = "read"
	TokenScopeWrite  TokenScope = "write"
	TokenScopeExport TokenScope = "export"
	TokenScopeImport TokenScope = "import"
	TokenScopeAdmin  TokenScope = "admin"
)

// Durability is the node's fsync policy, passed as `--durability`.
type Durability string

// The durability policies of `thingdb serve`.
const (
	DurabilityAlways Durability = "always"
	DurabilityBatch  Durability = "batch"
	DurabilityNone   Durability = "none"
)

// VolumeRetention is the policy for a pod's volume when the pod goes away.
type VolumeRetention string

// The volume retention policies, as the StatefulSet's
// persistentVolumeClaimRetentionPolicy spells them.
const (
	VolumeRetain VolumeRetention = "Retain"
	VolumeDelete VolumeRetention = "Delete"
)

// TLSMode is the source of the nodes' serving certificates.
type TLSMode string

// The TLS modes of a ThingNode.
const (
	TLSModeCertManager TLSMode = "CertManager"
	TLSModeOperatorCA  TLSMode = "OperatorCA"
)

// ClientAuth is the node's client certificate policy, passed as
// `--client-auth`.
type ClientAuth string

// The client certificate policies of `thingdb serve`.
const (
	ClientAuthNone    ClientAuth = "none"
	ClientAuthRequest ClientAuth = "request"
	ClientAuthRequire ClientAuth = "require"
)

// ThingNodeStatus is the observed state of a ThingNode.
type ThingNodeStatus struct {
	// ObservedGeneration is the generation of the spec that this status
	// describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Replicas is the number of pods the StatefulSet has created.
	// +optional
	Replicas int32 `json:"replicas,omitempty"`

	// ReadyReplicas is the number of pods that pass their readiness probe.
	// +optional
	ReadyReplicas int32 `json:"readyReplicas,omitempty"`

	// Conditions are Ready, Progressing, Degraded and TLSReady.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// Nodes is the identity of each pod, read from its `/v1/identity`
	// endpoint once the pod is ready.
	// +listType=map
	// +listMapKey=pod
	// +optional
	Nodes []NodeIdentity `json:"nodes,omitempty"`
}

// NodeIdentity is the identity of one node pod.
type NodeIdentity struct {
	// Pod is the name of the pod.
	Pod string `json:"pod"`

	// NodeID is the node id, derived from the node's Ed25519 public key.
	NodeID string `json:"nodeID"`

	// KeyID identifies the node's signing key.
	// +optional
	KeyID string `json:"keyID,omitempty"`

	// SigningKey is the node's Ed25519 public key, base64.
	SigningKey string `json:"signingKey"`

	// RecipientKey is the node's X25519 public key, base64.
	RecipientKey string `json:"recipientKey"`
}

// ThingNode is a set of ThingDB nodes run as a StatefulSet, with their
// Services, Secrets and TLS certificate.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=tn,categories=thingdb
// +kubebuilder:printcolumn:name="Replicas",type=integer,JSONPath=`.spec.replicas`
// +kubebuilder:printcolumn:name="Ready Replicas",type=integer,JSONPath=`.status.readyReplicas`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="TLS",type=string,JSONPath=`.status.conditions[?(@.type=="TLSReady")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,priority=1,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="size(self.metadata.name) <= 40",message="metadata.name must be at most 40 characters so that the names of the pods and the headless Service stay within 63"
type ThingNode struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is the desired state of the ThingNode.
	Spec ThingNodeSpec `json:"spec"`

	// Status is the observed state of the ThingNode, written by the operator.
	// +optional
	Status ThingNodeStatus `json:"status,omitempty"`
}

// ThingNodeList is a list of ThingNodes.
//
// +kubebuilder:object:root=true
type ThingNodeList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`

	// Items are the ThingNodes.
	Items []ThingNode `json:"items"`
}

func init() {
	SchemeBuilder.Register(&ThingNode{}, &ThingNodeList{})
}
