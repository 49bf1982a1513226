// Package peerfile defines the JSON peer file that the operator writes into
// each ThingNode's peer Secret and that every node reads to find the peers
// it pulls from. The operator and the node share these types so the format
// has one definition; docs/architecture.md ("Peer file") describes it.
package peerfile

// File is the whole peer file.
type File struct {
	// Interval is the time between two pulls from one peer, as a Go
	// duration string such as "30s". Empty means the node's default.
	Interval string `json:"interval,omitempty"`
	// BatchSize is the number of entries asked for in one export request.
	// Zero means the node's default.
	BatchSize int `json:"batchSize,omitempty"`
	// SealToPeers turns on envelope mode for puts without recipients.
	SealToPeers bool `json:"sealToPeers,omitempty"`
	// Peers are the nodes to pull from. A node skips the peer with its own
	// node id, so one file can serve every replica of a ThingNode.
	Peers []Peer `json:"peers"`
}

// Peer is one node to pull from, with the keys it is pinned to.
type Peer struct {
	// Name identifies the peer in status and logs, such as the pod name.
	Name string `json:"name"`
	// URL is the base URL of the peer's API.
	URL string `json:"url"`
	// NodeID is the peer's node id, derived from SigningKey.
	NodeID string `json:"nodeID"`
	// SigningKey is the peer's pinned Ed25519 public key, standard base64.
	SigningKey string `json:"signingKey"`
	// RecipientKey is the peer's X25519 public key, standard base64, for
	// envelope mode.
	RecipientKey string `json:"recipientKey,omitempty"`
	// CAFile is the CA bundle that signs the peer's certificate, relative
	// to the peer file's directory unless absolute.
	CAFile string `json:"caFile,omitempty"`
	// TokenFile contains a token with the peer's export scope, relative to
	// the peer file's directory unless absolute.
	TokenFile string `json:"tokenFile,omitempty"`
}
