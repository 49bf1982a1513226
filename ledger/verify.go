package ledger

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
)

// VerifyReport summarises a successful Verify.
type VerifyReport struct {
	Entries int
	Heads   []Head
}

// Verify reads the whole file and checks every line: canonical encoding,
// signature and key id, the chain of each origin (sequence, previous hash,
// time never going back), and that no origin ends below the head recorded
// in heads.json. Signatures are checked on all cores; chain checks run in
// file order. The first failure is returned as a *VerifyError.
func (l *Ledger) Verify(ctx context.Context) (VerifyReport, error) {
	if err := l.begin(); err != nil {
		return VerifyReport{}, fmt.Errorf("verify: %w", err)
	}
	defer l.end()

	l.mu.Lock()
	size := l.size.Load()
	indexed := l.headsLocked()
	l.mu.Unlock()
	remembered := l.rememberedHeads()

	report, err := verifyStream(ctx, io.NewSectionReader(l.file, 0, size), remembered)
	if err != nil {
		return report, fmt.Errorf("verify: %w", err)
	}
	if !sameHeads(report.Heads, indexed) {
		return report, fmt.Errorf("verify: %w", &VerifyError{Line: report.Entries + 1, Reason: "the file no longer matches the index built when it was opened; it was changed by another program"})
	}
	return report, nil
}

func sameHeads(a, b []Head) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// verifyBatchLines is how many lines a verify worker takes at once.
const verifyBatchLines = 256

type verifyResult struct {
	entry *Entry
	hash  [32]byte
	err   error
}

type verifyBatch struct {
	first   int // line number of lines[0], 1-based
	lines   [][]byte
	results []verifyResult
	done    chan struct{}
}

// verifyStream checks the lines read from src; see Verify.
func verifyStream(ctx context.Context, src io.Reader, remembered map[string]Head) (VerifyReport, error) {
	ctx, cancel := context.WithCancel(ctx)
	workers := runtime.GOMAXPROCS(0)
	work := make(chan *verifyBatch, workers*2)
	order := make(chan *verifyBatch, workers*4)
	var wg sync.WaitGroup
	var readErr error
	defer func() {
		// Stop the reader and workers and wait for them before returning.
		cancel()
		for range order {
		}
		wg.Wait()
	}()

	// One reader splits the file into batches; the same batches go to the
	// workers and, in file order, to the chain checks below.
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(order)
		defer close(work)
		readErr = readBatches(ctx, src, work, order)
	}()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range work {
				for i, line := range b.lines {
					b.results[i] = checkLine(line)
				}
				close(b.done)
			}
		}()
	}

	origins := map[string]*originState{}
	entries := 0
	for b := range order {
		select {
		case <-b.done:
		case <-ctx.Done():
			return VerifyReport{}, ctx.Err()
		}
		for i := range b.results {
			lineNo := b.first + i
			if err := checkChain(origins, remembered, lineNo, b.lines[i], &b.results[i]); err != nil {
				return VerifyReport{Entries: entries}, err
			}
			entries++
		}
	}
	if err := ctx.Err(); err != nil {
		return VerifyReport{}, err
	}
	if readErr != nil {
		return VerifyReport{Entries: entries}, readErr
	}

	heads := make([]Head, 0, len(origins))
	for _, origin := range sortedKeys(origins) {
		st := origins[origin]
		heads = append(heads, Head{Origin: origin, Sequence: st.seq, Hash: hex.EncodeToString(st.hash[:])})
	}
	report := VerifyReport{Entries: entries, Heads: heads}
	for _, origin := range sortedKeys(remembered) {
		h := remembered[origin]
		var have uint64
		if st := origins[origin]; st != nil {
			have = st.seq
		}
		if have < h.Sequence {
			return report, &VerifyError{Line: entries + 1, Origin: origin, Sequence: have + 1,
				Reason: fmt.Sprintf("the file ends at sequence %d but sequence %d was recorded as durable; sequences %d to %d were removed", have, h.Sequence, have+1, h.Sequence),
				Err:    ErrRollback}
		}
	}
	return report, nil
}

func readBatches(ctx context.Context, src io.Reader, work, order chan<- *verifyBatch) error {
	r := bufio.NewReaderSize(src, 64<<10)
	next := 1
	for {
		b := &verifyBatch{first: next, done: make(chan struct{})}
		var err error
		for len(b.lines) < verifyBatchLines {
			var line []byte
			line, err = readLine(r)
			if errors.Is(err, io.EOF) && len(line) == 0 {
				break
			}
			if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, errLineTooLong) {
				return fmt.Errorf("read %s: %w", ledgerFile, err)
			}
			// A line without newline is kept as is, so checkLine reports it.
			b.lines = append(b.lines, append([]byte{}, line...))
			if err != nil {
				break
			}
		}
		if len(b.lines) == 0 {
			return nil
		}
		next += len(b.lines)
		b.results = make([]verifyResult, len(b.lines))
		select {
		case work <- b:
		case <-ctx.Done():
			return nil
		}
		select {
		case order <- b:
		case <-ctx.Done():
			return nil
		}
		if err != nil {
			return nil
		}
	}
}

// checkLine runs the checks of one line that need no other line.
func checkLine(line []byte) verifyResult {
	if len(line) == 0 || line[len(line)-1] != '\n' {
		return verifyResult{err: errors.New("the last line has no newline: a torn or cut write")}
	}
	line = line[:len(line)-1]
	e, err := DecodeEntry(line)
	if err != nil {
		return verifyResult{err: err}
	}
	if err := e.verifySignature(); err != nil {
		return verifyResult{entry: e, err: err}
	}
	return verifyResult{entry: e, hash: lineHash(line)}
}

// checkChain reports the failure of one line, or links it into its origin's chain.
func checkChain(origins map[string]*originState, remembered map[string]Head, lineNo int, line []byte, r *verifyResult) error {
	if r.err != nil {
		ve := &VerifyError{Line: lineNo, Reason: r.err.Error()}
		if r.entry != nil {
			ve.Origin, ve.Sequence = r.entry.Origin, r.entry.Sequence
		} else if origin, seq, err := originSequence(line); err == nil {
			ve.Origin, ve.Sequence = origin, seq
		}
		return ve
	}
	e := r.entry
	st := origins[e.Origin]
	if st == nil {
		st = &originState{}
		origins[e.Origin] = st
	}
	if err := checkLink(st, e); err != nil {
		return &VerifyError{Line: lineNo, Origin: e.Origin, Sequence: e.Sequence, Reason: err.Error()}
	}
	if h, ok := remembered[e.Origin]; ok && h.Sequence == e.Sequence && h.Hash != hex.EncodeToString(r.hash[:]) {
		return &VerifyError{Line: lineNo, Origin: e.Origin, Sequence: e.Sequence, Reason: "hash differs from the head recorded in " + headsFile, Err: ErrRollback}
	}
	st.seq, st.hash, st.time = e.Sequence, r.hash, e.Time.UnixNano()
	return nil
}
