package ledger

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"sync"
)

// ImportResult counts the entries of an import batch.
type ImportResult struct {
	Accepted   int
	Duplicates int
}

type originSeq struct {
	origin string
	seq    uint64
}

// Import adds entries of other origins, byte for byte. Every entry must be in
// canonical form, correctly signed, not further in the future than
// MaxClockSkew, and continue its origin's chain; an entry already present is
// a duplicate and counts as such. The batch is all or nothing: on the first
// rejected entry Import returns an *EntryError (wrapping a *GapError or
// *ForkError where that is the reason) and writes nothing. Entries of this
// node's own origin are accepted only as duplicates.
//
// After a crash during the write, a prefix of the batch may be present; it
// is a valid, contiguous part of each chain.
func (l *Ledger) Import(ctx context.Context, lines [][]byte) (ImportResult, error) {
	if len(lines) == 0 {
		return ImportResult{}, nil
	}
	if err := l.begin(); err != nil {
		return ImportResult{}, fmt.Errorf("import: %w", err)
	}
	defer l.end()

	// Decode and check signatures on all cores, outside the lock.
	entries, err := decodeBatch(lines)
	if err != nil {
		return ImportResult{}, fmt.Errorf("import: %w", err)
	}
	limit := l.opts.Now().Add(l.opts.MaxClockSkew)
	for i, e := range entries {
		if e.Time.After(limit) {
			return ImportResult{}, fmt.Errorf("import: %w", &EntryError{Index: i, Origin: e.Origin, Sequence: e.Sequence,
				Reason: fmt.Sprintf("time %s is more than %s ahead of this node's clock", e.Time.Format(timeLayout), l.opts.MaxClockSkew)})
		}
	}
	if err := ctx.Err(); err != nil {
		return ImportResult{}, fmt.Errorf("import: %w", err)
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.failure(); err != nil {
		return ImportResult{}, fmt.Errorf("import: %w", err)
	}

	// Check each entry against its origin's head as the batch advances it.
	plan, err := l.planImport(ctx, entries, lines)
	if err != nil {
		return ImportResult{}, fmt.Errorf("import: %w", err)
	}
	result := ImportResult{Accepted: len(plan.accepted), Duplicates: plan.duplicates}
	if len(plan.accepted) == 0 {
		return result, nil
	}

	// Write the accepted lines with one write at the end of the file.
	var buf bytes.Buffer
	for _, i := range plan.accepted {
		buf.Write(lines[i])
		buf.WriteByte('\n')
	}
	offset := l.size.Load()
	if _, err := l.file.WriteAt(buf.Bytes(), offset); err != nil {
		return ImportResult{}, fmt.Errorf("import: %w", l.fail(fmt.Errorf("write %s at offset %d: %w", ledgerFile, offset, err)))
	}
	pos := offset
	for _, i := range plan.accepted {
		if err := l.index(entries[i], lineHash(lines[i]), pos, len(lines[i])+1); err != nil {
			// Broken invariant: planImport checked these links.
			panic(fmt.Sprintf("ledger: planned import does not continue its chain: %v", err))
		}
		pos += int64(len(lines[i]) + 1)
	}
	l.size.Store(pos)

	// Make the batch durable, then record the new heads of its origins.
	if l.opts.Durability == DurabilityNone {
		return result, nil
	}
	if err := l.fsync(); err != nil {
		return ImportResult{}, fmt.Errorf("import: %w", l.fail(fmt.Errorf("fsync %s: %w", ledgerFile, err)))
	}
	if err := l.rememberHeads(plan.heads()); err != nil {
		return result, fmt.Errorf("import: entries written but not recorded: %w", err)
	}
	return result, nil
}

// decodeBatch decodes every line and checks its signature, on all cores. It
// returns the error of the lowest failing index.
func decodeBatch(lines [][]byte) ([]*Entry, error) {
	entries := make([]*Entry, len(lines))
	errs := make([]error, len(lines))
	workers := min(runtime.GOMAXPROCS(0), len(lines))
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(lines); i += workers {
				e, err := DecodeEntry(lines[i])
				if err != nil {
					errs[i] = &EntryError{Index: i, Reason: "invalid entry", Err: err}
					continue
				}
				if err := e.verifySignature(); err != nil {
					errs[i] = &EntryError{Index: i, Origin: e.Origin, Sequence: e.Sequence, Reason: "rejected signature", Err: err}
					continue
				}
				entries[i] = e
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return entries, nil
}

type importPlan struct {
	accepted   []int
	duplicates int
	origins    map[string]*originState
}

func (p *importPlan) heads() []Head {
	heads := make([]Head, 0, len(p.origins))
	for origin, st := range p.origins {
		heads = append(heads, Head{Origin: origin, Sequence: st.seq, Hash: fmt.Sprintf("%x", st.hash)})
	}
	return heads
}

// planImport decides for each entry whether it is new, a duplicate, or an
// error. The caller holds mu.
func (l *Ledger) planImport(ctx context.Context, entries []*Entry, lines [][]byte) (*importPlan, error) {
	plan := &importPlan{origins: map[string]*originState{}}
	inBatch := map[originSeq]int{}
	lookups := map[originSeq][]int{} // entries below the head: compare with the stored line
	var failure error
	failedAt := len(entries)

	for i, e := range entries {
		st := plan.origins[e.Origin]
		if st == nil {
			st = &originState{}
			if cur := l.origins[e.Origin]; cur != nil {
				*st = *cur
			}
			plan.origins[e.Origin] = st
		}
		key := originSeq{e.Origin, e.Sequence}
		switch {
		case e.Sequence <= st.seq:
			if j, ok := inBatch[key]; ok {
				if !bytes.Equal(lines[j], lines[i]) {
					failure, failedAt = forkError(i, e, lines[j], lines[i]), i
				}
			} else if cur := l.origins[e.Origin]; cur != nil && cur.seq == e.Sequence && cur.hash == lineHash(lines[i]) {
				// A repeat of the stored head needs no file lookup.
			} else {
				lookups[key] = append(lookups[key], i)
			}
			plan.duplicates++
		case e.Origin == l.id.NodeID:
			failure, failedAt = &EntryError{Index: i, Origin: e.Origin, Sequence: e.Sequence,
				Reason: fmt.Sprintf("entry of this node's own origin beyond its head sequence %d; another process may be using this node's keys", st.seq)}, i
		case e.Sequence > st.seq+1:
			failure, failedAt = &EntryError{Index: i, Origin: e.Origin, Sequence: e.Sequence, Reason: "gap",
				Err: &GapError{Origin: e.Origin, Have: st.seq, Got: e.Sequence}}, i
		default:
			if err := checkLink(st, e); err != nil {
				failure, failedAt = &EntryError{Index: i, Origin: e.Origin, Sequence: e.Sequence, Reason: "broken chain", Err: err}, i
				break
			}
			st.seq, st.hash, st.time = e.Sequence, lineHash(lines[i]), e.Time.UnixNano()
			inBatch[key] = i
			plan.accepted = append(plan.accepted, i)
		}
		if failure != nil {
			break
		}
	}

	// Compare entries below the stored heads with the stored lines, in one
	// pass over the file. A differing line is a fork; an earlier fork wins
	// over a later failure.
	if len(lookups) > 0 {
		err := l.scan(ctx, func(line []byte) error {
			origin, seq, err := originSequence(line)
			if err != nil {
				return err
			}
			for _, i := range lookups[originSeq{origin, seq}] {
				if i < failedAt && !bytes.Equal(line, lines[i]) {
					failure, failedAt = forkError(i, entries[i], append([]byte{}, line...), lines[i]), i
				}
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("look up stored entries: %w", err)
		}
	}
	if failure != nil {
		return nil, failure
	}
	return plan, nil
}

func forkError(i int, e *Entry, existing, incoming []byte) error {
	return &EntryError{Index: i, Origin: e.Origin, Sequence: e.Sequence, Reason: "fork",
		Err: &ForkError{Origin: e.Origin, Sequence: e.Sequence, Existing: append([]byte{}, existing...), Incoming: append([]byte{}, incoming...)}}
}
