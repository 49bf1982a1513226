// Package syncstatus defines the body of a node's GET /v1/sync/status and
// the reasons of a failed sync attempt. The node that serves it and the
// operator that reads it into ThingSync status share these types, so the
// format has one definition.
package syncstatus

import "time"

// Reasons of a failed sync attempt: the lastErrorReason of a peer in
// GET /v1/sync/status and the reason label of thingdb_sync_errors_total.
const (
	// ReasonUnreachable: the peer did not answer (DNS, refused, timeout).
	ReasonUnreachable = "unreachable"
	// ReasonTLS: the TLS handshake failed, for example a certificate
	// that the peer's CA file does not sign or that lacks the host name.
	ReasonTLS = "tls"
	// ReasonUnauthorized: the peer returned 401 or 403 to the token of
	// the peer file.
	ReasonUnauthorized = "unauthorized"
	// ReasonKeyMismatch: the peer's identity, heads or batch are not
	// those of the node id and signing key pinned in the peer file.
	ReasonKeyMismatch = "key_mismatch"
	// ReasonFork: the peer has a different entry at an origin and
	// sequence that this node has. Fork in the status contains both lines.
	ReasonFork = "fork"
	// ReasonGap: a batch skipped sequences of an origin.
	ReasonGap = "gap"
	// ReasonInvalidEntry: the ledger rejected an entry of a batch
	// (signature, canonical form, chain, clock skew).
	ReasonInvalidEntry = "invalid_entry"
	// ReasonRollback: the peer holds entries of this node's own origin
	// beyond its head, so this ledger was rolled back or another process
	// writes with this node's key.
	ReasonRollback = "rollback"
	// ReasonPeerError: the peer returned another error status or a
	// body that does not decode.
	ReasonPeerError = "peer_error"
	// ReasonConfig: the peer's CA or token file does not load.
	ReasonConfig = "config"
	// ReasonLocal: this node's ledger failed to import.
	ReasonLocal = "local_error"
)

// Response is the body of GET /v1/sync/status.
type Response struct {
	Node     string   `json:"node"`
	PeerFile PeerFile `json:"peerFile"`
	Peers    []Peer   `json:"peers"`
}

// PeerNamed returns the status of the peer called name.
func (r Response) PeerNamed(name string) (Peer, bool) {
	for _, p := range r.Peers {
		if p.Name == name {
			return p, true
		}
	}
	return Peer{}, false
}

// PeerFile is the state of the peer file as GET /v1/sync/status
// reports it. Error is set while the file on disk does not load; the peers
// of LoadedAt stay in force meanwhile.
type PeerFile struct {
	Path     string     `json:"path,omitempty"`
	Peers    int        `json:"peers"`
	LoadedAt *time.Time `json:"loadedAt,omitempty"`
	Error    string     `json:"error,omitempty"`
}

// Peer is the sync state of one peer as GET /v1/sync/status reports it.
// LastError and LastErrorReason describe the last attempt and are empty
// after a success. LagEntries counts the entries the peer's signed heads
// list that this node lacked after the last attempt. Fork holds both lines
// of the first fork seen with this peer while ForkDetected is true.
type Peer struct {
	Name                string     `json:"name"`
	NodeID              string     `json:"nodeID"`
	URL                 string     `json:"url"`
	LastSuccess         *time.Time `json:"lastSuccess,omitempty"`
	LastAttempt         *time.Time `json:"lastAttempt,omitempty"`
	NextAttempt         *time.Time `json:"nextAttempt,omitempty"`
	LastError           string     `json:"lastError,omitempty"`
	LastErrorReason     string     `json:"lastErrorReason,omitempty"`
	ConsecutiveFailures int        `json:"consecutiveFailures,omitempty"`
	EntriesTransferred  uint64     `json:"entriesTransferred"`
	LagEntries          uint64     `json:"lagEntries"`
	ForkDetected        bool       `json:"forkDetected,omitempty"`
	Fork                *Fork      `json:"fork,omitempty"`
}

// Fork is the evidence of a fork: both entry lines with the same origin
// and sequence.
type Fork struct {
	Origin   string `json:"origin"`
	Sequence uint64 `json:"sequence"`
	Existing string `json:"existing"`
	Incoming string `json:"incoming"`
}
