package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"

	"github.com/thingdb/thingdb/ledger"
)

// Reasons of a failed sync attempt: the lastErrorReason of a peer in
// GET /v1/sync/status and the reason label of thingdb_sync_errors_total.
const (
	// SyncReasonUnreachable: the peer did not answer (DNS, refused, timeout).
	SyncReasonUnreachable = "unreachable"
	// SyncReasonTLS: the TLS handshake failed, for example a certificate
	// that the peer's CA file does not sign or that lacks the host name.
	SyncReasonTLS = "tls"
	// SyncReasonUnauthorized: the peer returned 401 or 403 to the token of
	// the peer file.
	SyncReasonUnauthorized = "unauthorized"
	// SyncReasonKeyMismatch: the peer's identity, heads or batch are not
	// those of the node id and signing key pinned in the peer file.
	SyncReasonKeyMismatch = "key_mismatch"
	// SyncReasonFork: the peer holds a different entry at an origin and
	// sequence that this node holds; Fork in the status has both lines.
	SyncReasonFork = "fork"
	// SyncReasonGap: a batch skipped sequences of an origin.
	SyncReasonGap = "gap"
	// SyncReasonInvalidEntry: the ledger rejected an entry of a batch
	// (signature, canonical form, chain, clock skew).
	SyncReasonInvalidEntry = "invalid_entry"
	// SyncReasonRollback: the peer holds entries of this node's own origin
	// beyond its head, so this ledger was rolled back or another process
	// writes with this node's key.
	SyncReasonRollback = "rollback"
	// SyncReasonPeerError: the peer returned another error status or a
	// body that does not decode.
	SyncReasonPeerError = "peer_error"
	// SyncReasonConfig: the peer's CA or token file does not load.
	SyncReasonConfig = "config"
	// SyncReasonLocal: this node's ledger failed to import.
	SyncReasonLocal = "local_error"
)

// syncError is a failed sync attempt with its reason. fork is set for
// SyncReasonFork when both lines could be read.
type syncError struct {
	reason string
	err    error
	fork   *ForkJSON
}

func (e *syncError) Error() string { return e.err.Error() }

func (e *syncError) Unwrap() error { return e.err }

func newSyncError(reason string, err error) *syncError {
	return &syncError{reason: reason, err: err}
}

// classifyRequestError gives the reason of a failed request to a peer.
func classifyRequestError(err error) string {
	var apiErr *APIError
	var certErr *tls.CertificateVerificationError
	var unknownAuthority x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	var alert tls.AlertError
	var record tls.RecordHeaderError
	var netErr net.Error
	switch {
	case errors.As(err, &apiErr):
		if apiErr.Status == http.StatusUnauthorized || apiErr.Status == http.StatusForbidden {
			return SyncReasonUnauthorized
		}
		return SyncReasonPeerError
	case errors.As(err, &certErr), errors.As(err, &unknownAuthority), errors.As(err, &hostname),
		errors.As(err, &invalid), errors.As(err, &alert), errors.As(err, &record):
		return SyncReasonTLS
	case errors.As(err, &netErr), errors.Is(err, context.DeadlineExceeded):
		return SyncReasonUnreachable
	}
	return SyncReasonPeerError
}

// classifyImportError gives the reason of a failed ledger import.
func classifyImportError(err error) string {
	var fork *ledger.ForkError
	var gap *ledger.GapError
	var entryErr *ledger.EntryError
	switch {
	case errors.As(err, &fork):
		return SyncReasonFork
	case errors.As(err, &gap):
		return SyncReasonGap
	case errors.As(err, &entryErr):
		return SyncReasonInvalidEntry
	}
	return SyncReasonLocal
}
