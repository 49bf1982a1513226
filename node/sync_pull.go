package node

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"strconv"

	"github.com/thingdb/thingdb/internal/syncstatus"
	"github.com/thingdb/thingdb/ledger"
)

// skipOrigin is the cursor of an origin that an export must not return.
const skipOrigin = math.MaxUint64

// attemptResult is the outcome of one sync attempt with one peer.
type attemptResult struct {
	accepted   uint64 // entries the ledger appended
	duplicates uint64
	lag        uint64 // entries in the peer's heads that this node lacks afterwards
	err        *syncError
}

// pullPlan lists the origins to pull, from the peer's signed heads.
type pullPlan struct {
	peerHeads map[string]ledger.Head
	cursor    ledger.Cursor     // export cursor: local head, or skipOrigin
	targets   map[string]uint64 // origin -> peer head sequence, for origins to pull
	fork      *syncError        // the first fork or rollback seen in the heads
}

// syncPeer runs one attempt against peer: check its identity, read its
// signed heads, then pull every origin it is ahead on in batches of
// batchSize entries, each checked against the pinned key and imported.
func (s *Syncer) syncPeer(ctx context.Context, peer Peer, batchSize int) attemptResult {
	client, serr := s.peerClient(peer)
	if serr != nil {
		return attemptResult{err: serr}
	}

	// The node at the URL must be the pinned one.
	if serr := s.checkIdentity(ctx, client, peer); serr != nil {
		return attemptResult{err: serr}
	}
	heads, err := client.Heads(ctx)
	if err != nil {
		return attemptResult{err: newSyncError(classifyRequestError(err), fmt.Errorf("read heads of peer %q: %w", peer.Name, err))}
	}
	if heads.Node != peer.NodeID || !heads.Verify(peer.SigningKey) {
		return attemptResult{err: newSyncError(syncstatus.ReasonKeyMismatch, fmt.Errorf("heads of peer %q are not signed by its pinned key (node %s): check the peer file", peer.Name, peer.NodeID))}
	}

	// Compare the heads with the local ones, then pull what is missing.
	plan := s.planPull(heads)
	if plan.fork != nil && plan.fork.reason == syncstatus.ReasonFork {
		plan.fork.fork = s.forkEvidence(ctx, client, plan, plan.fork.fork.Origin, plan.fork.fork.Sequence)
	}
	result := attemptResult{}
	if len(plan.targets) > 0 {
		result = s.pull(ctx, client, peer, plan, batchSize)
	}
	result.lag = s.lag(plan)
	if plan.fork != nil && (result.err == nil || plan.fork.reason == syncstatus.ReasonFork) {
		// A fork outweighs a failure of the other origins' pull, because it
		// needs an operator and comes with evidence.
		result.err = plan.fork
	}
	return result
}

// peerClient builds the client for peer with its current token.
func (s *Syncer) peerClient(peer Peer) (*Client, *syncError) {
	token := ""
	if peer.TokenFile != "" {
		data, err := readSecretFile("token", peer.TokenFile)
		if err != nil {
			return nil, newSyncError(syncstatus.ReasonConfig, fmt.Errorf("read token file of peer %q: %w", peer.Name, err))
		}
		token = string(data)
	}
	client, err := s.clients.client(peer, token)
	if err != nil {
		return nil, newSyncError(syncstatus.ReasonConfig, err)
	}
	return client, nil
}

// checkIdentity compares the peer's GET /v1/identity with the pinned keys.
func (s *Syncer) checkIdentity(ctx context.Context, client *Client, peer Peer) *syncError {
	id, err := client.Identity(ctx)
	if err != nil {
		return newSyncError(classifyRequestError(err), fmt.Errorf("read identity of peer %q: %w", peer.Name, err))
	}
	key, err := base64.StdEncoding.DecodeString(id.SigningKey)
	if err != nil || !peer.SigningKey.Equal(ed25519.PublicKey(key)) || id.NodeID != peer.NodeID {
		return newSyncError(syncstatus.ReasonKeyMismatch, fmt.Errorf("peer %q at %s is node %s with signing key %s, but the peer file pins node %s with key %s: fix the peer file or the URL; nothing is imported from it",
			peer.Name, peer.URL, id.NodeID, id.SigningKey, peer.NodeID, base64.StdEncoding.EncodeToString(peer.SigningKey)))
	}
	return nil
}

// planPull compares the peer's heads with the local heads. An origin is
// pulled when the peer's head is ahead. Equal sequences with different
// hashes are a fork; a peer ahead on this node's own origin is a rollback.
// Neither is pulled.
func (s *Syncer) planPull(heads SignedHeads) pullPlan {
	local := map[string]ledger.Head{}
	for _, h := range s.ledger.Heads() {
		local[h.Origin] = h
	}
	plan := pullPlan{peerHeads: map[string]ledger.Head{}, cursor: ledger.Cursor{s.nodeID: skipOrigin}, targets: map[string]uint64{}}
	for _, h := range heads.Heads {
		plan.peerHeads[h.Origin] = ledger.Head{Origin: h.Origin, Sequence: h.Sequence, Hash: h.Hash}
		mine := local[h.Origin]
		switch {
		case h.Sequence == mine.Sequence && h.Hash != mine.Hash && h.Sequence > 0:
			if plan.fork == nil {
				plan.fork = &syncError{reason: syncstatus.ReasonFork, err: fmt.Errorf("fork of origin %s at sequence %d: the peer's head entry differs from this node's", h.Origin, h.Sequence),
					fork: &ForkJSON{Origin: h.Origin, Sequence: h.Sequence}}
			}
			plan.cursor[h.Origin] = skipOrigin
		case h.Origin == s.nodeID:
			if h.Sequence > mine.Sequence && plan.fork == nil {
				plan.fork = newSyncError(syncstatus.ReasonRollback, fmt.Errorf("peer holds entries of this node's own origin up to sequence %d, beyond this node's head %d: this ledger was rolled back or another process signs with its key", h.Sequence, mine.Sequence))
			}
		case h.Sequence > mine.Sequence:
			plan.cursor[h.Origin] = mine.Sequence
			plan.targets[h.Origin] = h.Sequence
		default:
			plan.cursor[h.Origin] = skipOrigin
		}
	}
	return plan
}

// lag counts the entries of the peer's heads that this node still lacks.
func (s *Syncer) lag(plan pullPlan) uint64 {
	local := map[string]uint64{}
	for _, h := range s.ledger.Heads() {
		local[h.Origin] = h.Sequence
	}
	var lag uint64
	for origin, h := range plan.peerHeads {
		if origin != s.nodeID && h.Sequence > local[origin] {
			lag += h.Sequence - local[origin]
		}
	}
	return lag
}

// fetchedBatch is one verified export batch, or the error that ended the
// fetching.
type fetchedBatch struct {
	lines [][]byte
	err   *syncError
}

// pull exports from the peer and imports into the ledger until every
// target of the plan is reached or the peer has nothing more. The next
// batch is fetched while the current one is imported, so at most two
// batches are in memory.
func (s *Syncer) pull(ctx context.Context, client *Client, peer Peer, plan pullPlan, batchSize int) attemptResult {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	batches := make(chan fetchedBatch, 1)
	go s.fetchBatches(ctx, client, peer, plan, batchSize, batches)

	result := attemptResult{}
	for batch := range batches {
		if batch.err != nil {
			result.err = batch.err
			break
		}
		imported, err := s.importLines(ctx, batch.lines)
		result.accepted += uint64(imported.Accepted)
		result.duplicates += uint64(imported.Duplicates)
		if err != nil {
			result.err = s.importFailure(ctx, client, plan, peer, err)
			break
		}
	}
	cancel()
	for range batches {
		// Drain, so that the fetcher exits before the attempt returns.
	}
	return result
}

// fetchBatches sends verified batches on out until the plan's targets are
// reached, the peer reports no more, or an error, and then closes out.
func (s *Syncer) fetchBatches(ctx context.Context, client *Client, peer Peer, plan pullPlan, batchSize int, out chan<- fetchedBatch) {
	defer close(out)
	cursor := ledger.Cursor{}
	for origin, seq := range plan.cursor {
		cursor[origin] = seq
	}
	send := func(b fetchedBatch) bool {
		select {
		case out <- b:
			return true
		case <-ctx.Done():
			return false
		}
	}

	for {
		resp, err := client.Export(ctx, ExportQuery{After: cursor, Limit: batchSize})
		if err != nil {
			if ctx.Err() == nil {
				send(fetchedBatch{err: newSyncError(classifyRequestError(err), fmt.Errorf("export from peer %q: %w", peer.Name, err))})
			}
			return
		}
		if resp.Node != peer.NodeID || !resp.Verify(peer.SigningKey) {
			send(fetchedBatch{err: newSyncError(syncstatus.ReasonKeyMismatch, fmt.Errorf("batch from peer %q (node %q) is not signed by its pinned key (node %s): nothing of it is imported", peer.Name, resp.Node, peer.NodeID))})
			return
		}
		if len(resp.Lines) == 0 {
			return
		}
		lines := resp.LineBytes()
		for _, line := range lines {
			if origin, seq, ok := lineOriginSequence(line); ok && seq > cursor[origin] {
				cursor[origin] = seq
			}
		}
		if !send(fetchedBatch{lines: lines}) || !resp.More || targetsReached(cursor, plan.targets) {
			return
		}
	}
}

func targetsReached(cursor ledger.Cursor, targets map[string]uint64) bool {
	for origin, seq := range targets {
		if cursor[origin] < seq {
			return false
		}
	}
	return true
}

// importLines imports the lines that continue the local chains. Lines of
// this node's origin and lines at or below a local head are dropped first:
// another peer's pull may have brought them meanwhile, and the ledger would
// scan the file to compare each one. Imports from all peers are serialised
// so that this check and the import see the same heads.
func (s *Syncer) importLines(ctx context.Context, lines [][]byte) (ledger.ImportResult, error) {
	s.importMu.Lock()
	defer s.importMu.Unlock()
	local := map[string]uint64{}
	for _, h := range s.ledger.Heads() {
		local[h.Origin] = h.Sequence
	}
	newLines := lines[:0:0]
	dropped := 0
	for _, line := range lines {
		origin, seq, ok := lineOriginSequence(line)
		if ok && (origin == s.nodeID || seq <= local[origin]) {
			dropped++
			continue
		}
		newLines = append(newLines, line)
	}
	result, err := s.ledger.Import(ctx, newLines)
	result.Duplicates += dropped
	if err != nil {
		return ledger.ImportResult{}, fmt.Errorf("import batch: %w", err)
	}
	return result, nil
}

// importFailure turns a failed import into a sync error. A broken chain
// right after a local head means the peer holds a different entry at that
// head: a fork, whose evidence is fetched.
func (s *Syncer) importFailure(ctx context.Context, client *Client, plan pullPlan, peer Peer, err error) *syncError {
	if ctx.Err() != nil {
		return newSyncError(syncstatus.ReasonLocal, fmt.Errorf("import from peer %q: %w", peer.Name, err))
	}
	serr := newSyncError(classifyImportError(err), fmt.Errorf("import from peer %q: %w", peer.Name, err))
	var fork *ledger.ForkError
	if errors.As(err, &fork) {
		serr.fork = &ForkJSON{Origin: fork.Origin, Sequence: fork.Sequence, Existing: string(fork.Existing), Incoming: string(fork.Incoming)}
		return serr
	}
	var entryErr *ledger.EntryError
	if serr.reason == syncstatus.ReasonInvalidEntry && errors.As(err, &entryErr) && entryErr.Sequence > 1 {
		evidence := s.forkEvidence(ctx, client, plan, entryErr.Origin, entryErr.Sequence-1)
		if evidence != nil && evidence.Existing != "" && evidence.Incoming != "" && evidence.Existing != evidence.Incoming {
			return &syncError{reason: syncstatus.ReasonFork, fork: evidence,
				err: fmt.Errorf("fork of origin %s at sequence %d: the peer's entry differs from this node's, so its next entry does not continue this node's chain", evidence.Origin, evidence.Sequence)}
		}
	}
	return serr
}

// forkEvidence reads the local and the peer's entry at origin and
// sequence. A side that cannot be read stays empty.
func (s *Syncer) forkEvidence(ctx context.Context, client *Client, plan pullPlan, origin string, seq uint64) *ForkJSON {
	evidence := &ForkJSON{Origin: origin, Sequence: seq}

	// Local: skip every other origin, start right before seq.
	localCursor := ledger.Cursor{origin: seq - 1}
	for _, h := range s.ledger.Heads() {
		if h.Origin != origin {
			localCursor[h.Origin] = skipOrigin
		}
	}
	_ = s.ledger.Export(ctx, ledger.ExportOptions{After: localCursor, Limit: 1}, func(line []byte) error {
		if o, n, ok := lineOriginSequence(line); ok && o == origin && n == seq {
			evidence.Existing = string(line)
		}
		return nil
	})

	// Peer: the same cursor over the origins of its heads.
	remoteCursor := ledger.Cursor{origin: seq - 1}
	for o := range plan.peerHeads {
		if o != origin {
			remoteCursor[o] = skipOrigin
		}
	}
	resp, err := client.Export(ctx, ExportQuery{After: remoteCursor, Limit: 1})
	if err == nil && len(resp.Lines) == 1 {
		if o, n, ok := lineOriginSequence([]byte(resp.Lines[0])); ok && o == origin && n == seq {
			evidence.Incoming = resp.Lines[0]
		}
	}
	return evidence
}

// lineOriginSequence reads the origin and sequence at the start of an entry
// line, which the ledger's canonical form fixes as
// {"v":1,"origin":"<hex>","seq":<n>,... It returns false for anything else,
// which the ledger then rejects on import.
func lineOriginSequence(line []byte) (string, uint64, bool) {
	const prefix = `{"v":1,"origin":"`
	if !bytes.HasPrefix(line, []byte(prefix)) {
		return "", 0, false
	}
	rest := line[len(prefix):]
	end := bytes.IndexByte(rest, '"')
	if end <= 0 {
		return "", 0, false
	}
	origin := string(rest[:end])
	rest = rest[end:]
	const seqField = `","seq":`
	if !bytes.HasPrefix(rest, []byte(seqField)) {
		return "", 0, false
	}
	rest = rest[len(seqField):]
	digits := 0
	for digits < len(rest) && rest[digits] >= '0' && rest[digits] <= '9' {
		digits++
	}
	seq, err := strconv.ParseUint(string(rest[:digits]), 10, 64)
	if err != nil {
		return "", 0, false
	}
	return origin, seq, true
}
