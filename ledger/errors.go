package ledger

import (
	"errors"
	"fmt"
)

// Sentinel errors. Callers test for them with errors.Is.
var (
	// ErrWrongPassphrase means no key slot of the header opens with the given passphrase.
	ErrWrongPassphrase = errors.New("ledger: wrong passphrase")
	// ErrThingNotFound means the ledger has no entry for the requested thing.
	ErrThingNotFound = errors.New("ledger: thing not found")
	// ErrNotReadable means this node holds no key that decrypts the entry.
	ErrNotReadable = errors.New("ledger: entry not readable by this node")
	// ErrClosed means the ledger was closed.
	ErrClosed = errors.New("ledger: closed")
	// ErrExists means Create found a ledger already in the directory.
	ErrExists = errors.New("ledger: ledger already exists")
	// ErrNoLedger means Open found no ledger in the directory.
	ErrNoLedger = errors.New("ledger: no ledger in directory")
	// ErrFailed means an earlier write or fsync failed. The ledger rejects every
	// further write because the state of the file on disk is unknown; reopen it
	// so that Open checks and repairs the tail.
	ErrFailed = errors.New("ledger: an earlier write failed; reopen the ledger")
	// ErrRollback means the ledger file holds fewer entries of an origin than
	// this node recorded earlier, so entries were removed.
	ErrRollback = errors.New("ledger: rollback detected")
)

// ForkError reports two different entries with the same origin and sequence.
// Both raw lines are kept as evidence.
type ForkError struct {
	Origin   string
	Sequence uint64
	Existing []byte
	Incoming []byte
}

func (e *ForkError) Error() string {
	return fmt.Sprintf("ledger: fork at origin %s sequence %d: the incoming entry differs from the stored one", e.Origin, e.Sequence)
}

// GapError reports an imported entry that does not follow the origin's head.
type GapError struct {
	Origin string
	Have   uint64 // head sequence held for the origin
	Got    uint64 // sequence of the incoming entry
}

func (e *GapError) Error() string {
	return fmt.Sprintf("ledger: gap in origin %s: have sequence %d, got %d; import the missing entries first", e.Origin, e.Have, e.Got)
}

// EntryError reports the entry of an import batch that was rejected.
type EntryError struct {
	Index    int // position of the entry in the batch
	Origin   string
	Sequence uint64
	Reason   string
	Err      error
}

func (e *EntryError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("ledger: import entry %d (origin %s sequence %d): %s: %v", e.Index, e.Origin, e.Sequence, e.Reason, e.Err)
	}
	return fmt.Sprintf("ledger: import entry %d (origin %s sequence %d): %s", e.Index, e.Origin, e.Sequence, e.Reason)
}

func (e *EntryError) Unwrap() error { return e.Err }

// VerifyError names the first line of the ledger file that failed a check.
// Line is 1-based. Origin and Sequence are those the line claims, or empty when
// the line could not be parsed.
type VerifyError struct {
	Line     int
	Origin   string
	Sequence uint64
	Reason   string
	Err      error // a sentinel such as ErrRollback, or nil
}

func (e *VerifyError) Error() string {
	if e.Origin == "" {
		return fmt.Sprintf("ledger: line %d: %s", e.Line, e.Reason)
	}
	return fmt.Sprintf("ledger: line %d (origin %s sequence %d): %s", e.Line, e.Origin, e.Sequence, e.Reason)
}

func (e *VerifyError) Unwrap() error { return e.Err }
