package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ThingSyncSpec is the desired state of a ThingSync: which ThingNodes
// exchange ledgers, along which pairs, and how often.
// +kubebuilder:validation:XValidation:rule="!has(self.members.names) || !has(self.topology.hub) || self.topology.hub in self.members.names",message="topology.hub must be one of members.names; add it to the members or choose another hub"
// +kubebuilder:validation:XValidation:rule="!has(self.members.names) || !has(self.topology.pairs) || self.topology.pairs.all(p, p.from in self.members.names && p.to in self.members.names)",message="every topology.pairs entry must name two of members.names; add the ThingNode to the members or remove the pair"
type ThingSyncSpec struct {
	// Members are the ThingNodes in the ThingSync's namespace that take
	// part, by name or by label selector (exactly one of the two).
	Members SyncMembers `json:"members"`

	// Topology is which member pulls from which.
	// +kubebuilder:default={type: Mesh}
	// +optional
	Topology SyncTopology `json:"topology,omitempty"`

	// Interval is the time between two pulls of a node from one peer.
	// When several ThingSyncs name the same ThingNode, its peer file gets
	// the shortest of their intervals.
	// +kubebuilder:default="30s"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s') && duration(self) <= duration('1h')",message="interval must be between 1s and 1h"
	// +optional
	Interval *metav1.Duration `json:"interval,omitempty"`

	// BatchSize is the maximum number of entries a node requests from a
	// peer in one export request. When several ThingSyncs name the same ThingNode, its
	// peer file gets the smallest.
	// +kubebuilder:default=1000
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000
	// +optional
	BatchSize int32 `json:"batchSize,omitempty"`

	// Suspend stops this ThingSync from giving its members any peer. Peers
	// that another ThingSync gives them stay.
	// +optional
	Suspend bool `json:"suspend,omitempty"`
}

// SyncMembers selects the ThingNodes of a ThingSync.
// +kubebuilder:validation:XValidation:rule="has(self.names) != has(self.selector)",message="set exactly one of members.names and members.selector"
type SyncMembers struct {
	// Names are ThingNode names.
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=40
	// +optional
	Names []string `json:"names,omitempty"`

	// Selector selects ThingNodes by label.
	// +optional
	Selector *metav1.LabelSelector `json:"selector,omitempty"`
}

// TopologyType is the shape of the pull graph between members.
// +kubebuilder:validation:Enum=Mesh;Star;Pairs
type TopologyType string

// The topologies of a ThingSync.
const (
	// TopologyMesh: every member pulls from every other member.
	TopologyMesh TopologyType = "Mesh"
	// TopologyStar: the hub pulls from every other member, and every other
	// member pulls from the hub.
	TopologyStar TopologyType = "Star"
	// TopologyPairs: only the listed pairs; each pair is one direction.
	TopologyPairs TopologyType = "Pairs"
)

// SyncTopology is the pull graph of a ThingSync. The pods of one ThingNode
// always pull from each other, whatever the topology.
// +kubebuilder:validation:XValidation:rule="self.type != 'Star' || has(self.hub)",message="topology.hub is required when topology.type is Star: name the member the others sync through"
// +kubebuilder:validation:XValidation:rule="self.type == 'Star' || !has(self.hub)",message="topology.hub is only allowed when topology.type is Star"
// +kubebuilder:validation:XValidation:rule="self.type != 'Pairs' || (has(self.pairs) && size(self.pairs) > 0)",message="topology.pairs must list at least one pair when topology.type is Pairs"
// +kubebuilder:validation:XValidation:rule="self.type == 'Pairs' || !has(self.pairs)",message="topology.pairs is only allowed when topology.type is Pairs"
type SyncTopology struct {
	// Type is Mesh, Star or Pairs.
	// +kubebuilder:default=Mesh
	// +optional
	Type TopologyType `json:"type,omitempty"`

	// Hub is the ThingNode at the centre of a Star.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=40
	// +optional
	Hub string `json:"hub,omitempty"`

	// Pairs are the directed pairs of a Pairs topology. List both
	// directions for a two-way exchange.
	// +kubebuilder:validation:MaxItems=256
	// +optional
	Pairs []SyncPair `json:"pairs,omitempty"`
}

// SyncPair is one direction of exchange: entries flow from From to To,
// because the pods of To pull from the pods of From.
// +kubebuilder:validation:XValidation:rule="self.from != self.to",message="a pair needs two different ThingNodes; the pods of one ThingNode already sync with each other"
type SyncPair struct {
	// From is the ThingNode whose entries are pulled.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=40
	From string `json:"from"`

	// To is the ThingNode that pulls.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=40
	To string `json:"to"`
}

// ThingSyncStatus is the observed state of a ThingSync.
type ThingSyncStatus struct {
	// ObservedGeneration is the generation of the spec that this status
	// describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Conditions are Ready, Synced and ForkDetected.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// Members are the names of the member ThingNodes found, sorted.
	// +listType=set
	// +optional
	Members []string `json:"members,omitempty"`

	// MemberCount is the number of members found. It is written even when
	// zero, so that the Members column shows it.
	// +optional
	MemberCount int32 `json:"memberCount"`

	// LagEntries is the sum of the lag of every pair, written even when
	// zero for the Lag column.
	// +optional
	LagEntries int64 `json:"lagEntries"`

	// LastSyncTime is the oldest last success over all pairs: every pair
	// has synced at least once since then. Empty until every pair has.
	// +optional
	LastSyncTime *metav1.Time `json:"lastSyncTime,omitempty"`

	// Pairs is the sync state of each directed pair of members, read from
	// the nodes' GET /v1/sync/status.
	// +listType=atomic
	// +optional
	Pairs []SyncPairStatus `json:"pairs,omitempty"`
}

// SyncPairStatus is the sync state of one directed pair: the pods of To
// pulling from the pods of From. With several replicas it sums the pod
// pairs, and LastSuccess is the oldest of theirs.
type SyncPairStatus struct {
	// From is the ThingNode pulled from.
	From string `json:"from"`

	// To is the ThingNode that pulls.
	To string `json:"to"`

	// LastSuccess is when every pod of To last pulled from every pod of
	// From without an error (the oldest of those times).
	// +optional
	LastSuccess *metav1.Time `json:"lastSuccess,omitempty"`

	// LastError is the error of the last failed attempt, empty after a
	// success.
	// +optional
	LastError string `json:"lastError,omitempty"`

	// LastErrorReason is the node's reason code of LastError, for example
	// unreachable, tls, key_mismatch or fork.
	// +optional
	LastErrorReason string `json:"lastErrorReason,omitempty"`

	// EntriesTransferred counts the entries pulled along this pair since the
	// pulling nodes started.
	// +optional
	EntriesTransferred int64 `json:"entriesTransferred,omitempty"`

	// LagEntries counts the entries From held and To lacked after the last
	// attempt.
	// +optional
	LagEntries int64 `json:"lagEntries,omitempty"`
}

// ThingSync declares which ThingNodes exchange their ledgers and how often.
// The operator renders each member's peer file; the nodes pull on their own.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=ts,categories=thingdb
// +kubebuilder:printcolumn:name="Members",type=integer,JSONPath=`.status.memberCount`
// +kubebuilder:printcolumn:name="Topology",type=string,JSONPath=`.spec.topology.type`
// +kubebuilder:printcolumn:name="Synced",type=string,JSONPath=`.status.conditions[?(@.type=="Synced")].status`
// +kubebuilder:printcolumn:name="Lag",type=integer,JSONPath=`.status.lagEntries`
// +kubebuilder:printcolumn:name="Last Sync",type=date,JSONPath=`.status.lastSyncTime`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ThingSync struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is the desired state of the ThingSync.
	Spec ThingSyncSpec `json:"spec"`

	// Status is the observed state of the ThingSync, written by the operator.
	// +optional
	Status ThingSyncStatus `json:"status,omitempty"`
}

// ThingSyncList is a list of ThingSyncs.
//
// +kubebuilder:object:root=true
type ThingSyncList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`

	// Items are the ThingSyncs.
	Items []ThingSync `json:"items"`
}

func init() {
	SchemeBuilder.Register(&ThingSync{}, &ThingSyncList{})
}
