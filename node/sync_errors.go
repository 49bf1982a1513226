package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"

	"github.com/thingdb/thingdb/internal/syncstatus"
	"github.com/thingdb/thingdb/ledger"
)

// syncError is a failed sync attempt with its reason. fork is set for
// syncstatus.ReasonFork when both lines could be read.
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
			return syncstatus.ReasonUnauthorized
		}
		return syncstatus.ReasonPeerError
	case errors.As(err, &certErr), errors.As(err, &unknownAuthority), errors.As(err, &hostname),
		errors.As(err, &invalid), errors.As(err, &alert), errors.As(err, &record):
		return syncstatus.ReasonTLS
	case errors.As(err, &netErr), errors.Is(err, context.DeadlineExceeded):
		return syncstatus.ReasonUnreachable
	}
	return syncstatus.ReasonPeerError
}

// classifyImportError gives the reason of a failed ledger import.
func classifyImportError(err error) string {
	var fork *ledger.ForkError
	var gap *ledger.GapError
	var entryErr *ledger.EntryError
	switch {
	case errors.As(err, &fork):
		return syncstatus.ReasonFork
	case errors.As(err, &gap):
		return syncstatus.ReasonGap
	case errors.As(err, &entryErr):
		return syncstatus.ReasonInvalidEntry
	}
	return syncstatus.ReasonLocal
}
