package node

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/thingdb/thingdb/internal/syncstatus"
	"github.com/thingdb/thingdb/ledger"
)

func (s *Server) handleHeads(w http.ResponseWriter, r *http.Request) {
	id := s.ledger.Identity()
	writeJSON(w, http.StatusOK, SignHeads(s.ledger, id.NodeID, s.now(), s.ledger.Heads()))
}

// ExportResponse is the body of GET /v1/export: a signed batch, and More
// when the export stopped at a limit. More is not signed, because it is only
// a hint to request again with a cursor past the last line.
type ExportResponse struct {
	Batch
	More bool `json:"more,omitempty"`
}

// errExportFull stops a ledger export once the batch reached a limit.
var errExportFull = errors.New("export batch full")

func (s *Server) handleExport(w http.ResponseWriter, r *http.Request) {
	query := r.URL.Query()
	cursor, err := ParseCursor(query["after"])
	if err != nil {
		writeError(w, http.StatusBadRequest, "malformed", err.Error())
		return
	}
	limit := s.limits.MaxBatchEntries
	if v := query.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > s.limits.MaxBatchEntries {
			writeError(w, http.StatusBadRequest, "malformed", fmt.Sprintf("invalid limit %q: use 1 to %d entries", v, s.limits.MaxBatchEntries))
			return
		}
		limit = n
	}

	// Collect lines until the entry limit or the byte budget is reached, so
	// that a receiver with the same limits accepts the batch. The budget
	// leaves room for the JSON escaping of each line and the envelope.
	budget := s.limits.MaxImportBytes/2 - 1024
	var lines [][]byte
	var size int64
	more := false
	err = s.ledger.Export(r.Context(), ledger.ExportOptions{After: cursor, Recipient: query.Get("recipient")}, func(line []byte) error {
		if len(lines) == limit || (len(lines) > 0 && size+int64(len(line)) > budget) {
			more = true
			return errExportFull
		}
		lines = append(lines, append([]byte(nil), line...))
		size += int64(len(line)) + 3
		return nil
	})
	if err != nil && !errors.Is(err, errExportFull) {
		s.writeLedgerError(w, r, "export entries", err)
		return
	}

	batch := SignBatch(s.ledger, s.ledger.Identity().NodeID, lines)
	writeJSON(w, http.StatusOK, ExportResponse{Batch: batch, More: more})
}

// ParseCursor parses export cursor values of the form "origin:sequence",
// each value a single pair or several joined by commas.
func ParseCursor(values []string) (ledger.Cursor, error) {
	cursor := ledger.Cursor{}
	for _, value := range values {
		for _, pair := range strings.Split(value, ",") {
			if pair == "" {
				continue
			}
			origin, seq, ok := strings.Cut(pair, ":")
			n, err := strconv.ParseUint(seq, 10, 64)
			if !ok || origin == "" || err != nil {
				return nil, fmt.Errorf("invalid cursor %q: use origin:sequence, such as after=%s:42", pair, strings.Repeat("0", 32))
			}
			cursor[origin] = n
		}
	}
	return cursor, nil
}

// FormatCursor encodes a cursor for the after query parameter.
func FormatCursor(cursor ledger.Cursor) string {
	pairs := make([]string, 0, len(cursor))
	for origin, seq := range cursor {
		pairs = append(pairs, origin+":"+strconv.FormatUint(seq, 10))
	}
	return strings.Join(pairs, ",")
}

// ImportResponse is the body of POST /v1/import. An import is all or
// nothing: when Rejected is non-zero no entry was applied, and Rejections
// names each entry that caused it.
type ImportResponse struct {
	Accepted   int         `json:"accepted"`
	Duplicates int         `json:"duplicates"`
	Rejected   int         `json:"rejected"`
	Rejections []Rejection `json:"rejections,omitempty"`
	Fork       *ForkJSON   `json:"fork,omitempty"`
	Reason     string      `json:"reason,omitempty"`
	Error      string      `json:"error,omitempty"`
}

// Rejection names one rejected entry of an import batch.
type Rejection struct {
	Index    int    `json:"index"`
	Origin   string `json:"origin,omitempty"`
	Sequence uint64 `json:"sequence,omitempty"`
	Reason   string `json:"reason"`
}

// Import rejection reasons, also the label of thingdb_import_rejected_total.
const (
	reasonMalformed      = "malformed"
	reasonTooLarge       = "too_large"
	reasonUnknownSender  = "unknown_sender"
	reasonBatchSignature = "batch_signature_invalid"
	reasonFork           = "fork"
	reasonGap            = "gap"
	reasonInvalidEntry   = "invalid_entry"
)

func (s *Server) handleImport(w http.ResponseWriter, r *http.Request) {
	body := http.MaxBytesReader(w, r.Body, s.limits.MaxImportBytes)
	batch, err := DecodeBatch(body, BatchLimits{MaxEntries: s.limits.MaxBatchEntries, MaxLineBytes: ledger.MaxLineSize})
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		s.rejectImport(w, http.StatusRequestEntityTooLarge, reasonTooLarge, fmt.Sprintf("request body is over the limit of %d bytes: split the batch", s.limits.MaxImportBytes), "")
		return
	case errors.Is(err, ErrBatchTooLarge):
		s.rejectImport(w, http.StatusRequestEntityTooLarge, reasonTooLarge, err.Error(), "")
		return
	case err != nil:
		s.rejectImport(w, http.StatusBadRequest, reasonMalformed, err.Error(), "")
		return
	}

	// The batch must come from a pinned peer and carry its signature.
	peer, ok := s.pins.Lookup(batch.Node)
	if !ok {
		s.rejectImport(w, http.StatusUnprocessableEntity, reasonUnknownSender, fmt.Sprintf("batch sender %q is not a peer in the peer file: pin its signing key there first", batch.Node), batch.Node)
		return
	}
	if !batch.Verify(peer.SigningKey) {
		s.rejectImport(w, http.StatusUnprocessableEntity, reasonBatchSignature, fmt.Sprintf("batch signature does not verify with the key pinned for peer %q", peer.Name), batch.Node)
		return
	}

	// The ledger checks every entry and applies all of them or none.
	result, err := s.ledger.Import(r.Context(), batch.LineBytes())
	if err != nil {
		s.writeImportError(w, r, batch.Node, err)
		return
	}
	s.metrics.importBatches.WithLabelValues("ok").Inc()
	s.metrics.importEntries.WithLabelValues("accepted").Add(float64(result.Accepted))
	s.metrics.importEntries.WithLabelValues("duplicate").Add(float64(result.Duplicates))
	if result.Accepted > 0 {
		s.logger.Info("imported entries", "sender", batch.Node, "peer", peer.Name, "accepted", result.Accepted, "duplicates", result.Duplicates)
	}
	writeJSON(w, http.StatusOK, ImportResponse{Accepted: result.Accepted, Duplicates: result.Duplicates})
}

func (s *Server) rejectImport(w http.ResponseWriter, status int, reason, message, sender string) {
	s.metrics.importBatches.WithLabelValues("rejected").Inc()
	s.metrics.rejectedEntries.WithLabelValues(reason).Inc()
	s.logger.Warn("rejected import batch", "sender", sender, "reason", reason, "error", message)
	writeJSON(w, status, ImportResponse{Reason: reason, Error: message})
}

// writeImportError reports a batch the ledger rejected: 409 for a fork with
// both entries, 422 for a gap or an invalid entry, each with the entries
// named.
func (s *Server) writeImportError(w http.ResponseWriter, r *http.Request, sender string, err error) {
	resp := ImportResponse{Error: err.Error()}
	status := http.StatusUnprocessableEntity

	var fork *ledger.ForkError
	var gap *ledger.GapError
	switch {
	case errors.As(err, &fork):
		status = http.StatusConflict
		resp.Reason = reasonFork
		resp.Fork = &ForkJSON{Origin: fork.Origin, Sequence: fork.Sequence, Existing: string(fork.Existing), Incoming: string(fork.Incoming)}
	case errors.As(err, &gap):
		resp.Reason = reasonGap
	default:
		resp.Reason = reasonInvalidEntry
	}
	for _, entryErr := range collectEntryErrors(err) {
		resp.Rejections = append(resp.Rejections, Rejection{Index: entryErr.Index, Origin: entryErr.Origin, Sequence: entryErr.Sequence, Reason: entryErr.Reason})
	}
	if len(resp.Rejections) == 0 {
		if errors.Is(err, ledger.ErrClosed) || errors.Is(err, ledger.ErrFailed) || r.Context().Err() != nil {
			s.writeLedgerError(w, r, "import batch", err)
			return
		}
		if fork == nil && gap == nil {
			// Neither an entry nor a known rejection: the ledger failed.
			s.writeLedgerError(w, r, "import batch", err)
			return
		}
		resp.Rejections = []Rejection{{Index: -1, Reason: err.Error()}}
	}
	resp.Rejected = len(resp.Rejections)

	s.metrics.importBatches.WithLabelValues("rejected").Inc()
	s.metrics.rejectedEntries.WithLabelValues(resp.Reason).Inc()
	s.logger.Warn("rejected import batch", "sender", sender, "reason", resp.Reason, "rejected", resp.Rejected, "error", err)
	writeJSON(w, status, resp)
}

// collectEntryErrors returns every *ledger.EntryError in the tree of err,
// following both single and joined wrapping.
func collectEntryErrors(err error) []*ledger.EntryError {
	var found []*ledger.EntryError
	var walk func(error)
	walk = func(err error) {
		if err == nil {
			return
		}
		if entryErr, ok := err.(*ledger.EntryError); ok {
			found = append(found, entryErr)
			return
		}
		switch u := err.(type) {
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				walk(e)
			}
		}
	}
	walk(err)
	return found
}

func (s *Server) handleSyncStatus(w http.ResponseWriter, r *http.Request) {
	peers := []PeerStatus{}
	if s.sync != nil {
		peers = append(peers, s.sync.SyncStatus()...)
		sortPeerStatus(peers)
	}
	writeJSON(w, http.StatusOK, SyncStatusResponse{Node: s.ledger.Identity().NodeID, PeerFile: s.pins.Status(), Peers: peers})
}

// The body of GET /v1/sync/status, defined in internal/syncstatus so that
// the operator decodes the same types.
type (
	// SyncStatusResponse is the body of GET /v1/sync/status.
	SyncStatusResponse = syncstatus.Response
	// PeerFileStatus is the state of the peer file in that body.
	PeerFileStatus = syncstatus.PeerFile
	// PeerStatus is the sync state of one peer in that body.
	PeerStatus = syncstatus.Peer
	// ForkJSON is the evidence of a fork: both entry lines with the same
	// origin and sequence.
	ForkJSON = syncstatus.Fork
)
