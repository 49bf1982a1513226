package ledger

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// tamperFixture is a closed ledger of two origins whose lines interleave.
type tamperFixture struct {
	dir        string
	original   []byte
	heads      []byte   // heads.json as Close wrote it
	lines      [][]byte // lines without newline
	things     map[string]string
	master     []byte
	remembered map[string]Head
}

func newTamperFixture(t *testing.T) *tamperFixture {
	t.Helper()
	local, dir := newTestLedger(t, testPassphrase, Options{Durability: DurabilityNone})
	peer, _ := newTestLedger(t, []byte("peer passphrase"), Options{Durability: DurabilityNone})
	peerOrigin := peer.Identity().NodeID
	var imported uint64
	for round := range 5 {
		for i := range 3 {
			appendThing(t, local, fmt.Sprintf("local-%d", i), round)
		}
		for i := range 2 {
			appendThing(t, peer, fmt.Sprintf("peer-%d", i), round, recipientOf(local))
		}
		res, err := local.Import(context.Background(), exportAll(t, peer, ExportOptions{After: Cursor{peerOrigin: imported}}))
		if err != nil {
			t.Fatal(err)
		}
		imported += uint64(res.Accepted)
	}
	things := map[string]string{}
	for _, thing := range []string{"local-0", "local-1", "local-2", "peer-0", "peer-1"} {
		v, err := local.Get(thing)
		if err != nil {
			t.Fatal(err)
		}
		things[thing] = string(v.Data)
	}
	if err := local.Close(); err != nil {
		t.Fatal(err)
	}
	f := &tamperFixture{dir: dir, original: readLedgerFile(t, dir), things: things, master: local.master}
	var err error
	if f.heads, err = os.ReadFile(filepath.Join(dir, headsFile)); err != nil {
		t.Fatal(err)
	}
	if f.remembered, err = readHeads(dir, f.master); err != nil {
		t.Fatal(err)
	}
	f.lines = bytes.Split(bytes.TrimSuffix(f.original, []byte("\n")), []byte("\n"))
	if len(f.lines) < 20 {
		t.Fatalf("fixture has %d lines, want at least 20", len(f.lines))
	}
	return f
}

// check writes content as the ledger file, restores heads.json, and returns
// the first error of Open or Verify. On success it also returns the latest
// data of every thing.
func (f *tamperFixture) check(t *testing.T, content []byte) (map[string]string, error) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(f.dir, ledgerFile), content, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.dir, headsFile), f.heads, 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := Open(f.dir, testPassphrase, Options{KDF: testKDF})
	if err != nil {
		return nil, err
	}
	// Close without the fsyncs and heads.json update of Close.
	defer func() {
		l.closeMu.Lock()
		l.closed = true
		l.file.Close()
		l.closeMu.Unlock()
	}()
	if _, err := l.Verify(context.Background()); err != nil {
		return nil, err
	}
	got := map[string]string{}
	for thing := range f.things {
		v, err := l.Get(thing)
		if err != nil {
			return nil, err
		}
		got[thing] = string(v.Data)
	}
	return got, nil
}

func joinLines(lines [][]byte) []byte {
	var b bytes.Buffer
	for _, line := range lines {
		b.Write(line)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// firstChainBreak is the reference the line-level cases are checked
// against: the first line whose sequence does not follow its origin's
// previous line, or, when every chain is whole, the first origin that ends
// below the original head. It returns line 0 when nothing is wrong.
func (f *tamperFixture) firstChainBreak(t *testing.T, lines [][]byte) (int, string, uint64) {
	t.Helper()
	next := map[string]uint64{}
	for i, line := range lines {
		origin, seq, err := originSequence(line)
		if err != nil {
			t.Fatal(err)
		}
		if seq != next[origin]+1 {
			return i + 1, origin, seq
		}
		next[origin] = seq
	}
	final := map[string]uint64{}
	for _, line := range f.lines {
		origin, seq, _ := originSequence(line)
		final[origin] = seq
	}
	for _, origin := range sortedKeys(final) {
		if next[origin] < final[origin] {
			return len(lines) + 1, origin, next[origin] + 1
		}
	}
	return 0, "", 0
}

func wantVerifyError(t *testing.T, err error, line int, origin string, seq uint64) {
	t.Helper()
	var ve *VerifyError
	if !errors.As(err, &ve) {
		t.Fatalf("error = %v, want a *VerifyError on line %d", err, line)
	}
	if ve.Line != line {
		t.Fatalf("error names line %d, want %d: %v", ve.Line, line, err)
	}
	if origin != "" && (ve.Origin != origin || ve.Sequence != seq) {
		t.Fatalf("error names origin %s sequence %d, want %s %d: %v", ve.Origin, ve.Sequence, origin, seq, err)
	}
}

func TestVerify_TamperMatrix(t *testing.T) {
	f := newTamperFixture(t)
	testSignatureCache = &sync.Map{}
	t.Cleanup(func() { testSignatureCache = nil })
	if _, err := f.check(t, f.original); err != nil {
		t.Fatalf("untampered ledger fails: %v", err)
	}

	t.Run("every byte changed", func(t *testing.T) {
		step := 1
		if testing.Short() {
			step = 7
		}
		line, start := 1, 0
		for p := 0; p < len(f.original); p += step {
			for line < len(f.lines) && p > start+len(f.lines[line-1]) {
				start += len(f.lines[line-1]) + 1
				line++
			}
			origin, seq, _ := originSequence(f.lines[line-1])
			// A change inside the origin or sequence changes what the
			// line claims, so only the line number is checked there.
			prefix := bytes.Index(f.lines[line-1], []byte(`,"thing":`))
			if p-start < prefix {
				origin = ""
			}
			mutated := append([]byte{}, f.original...)
			mutated[p] ^= 0x01
			// Open and Verify on every byte of the last line, which Open
			// may cut as a torn tail, and on a sample of the others; the
			// remaining bytes go through Verify's checks on the bytes alone.
			var err error
			if line == len(f.lines) || p%64 == 0 {
				_, err = f.check(t, mutated)
			} else {
				_, err = verifyStream(context.Background(), bytes.NewReader(mutated), f.remembered)
			}
			if err == nil {
				t.Fatalf("change of byte %d (line %d) was not detected", p, line)
			}
			wantVerifyError(t, err, line, origin, seq)
		}
	})

	t.Run("every line deleted", func(t *testing.T) {
		for i := range f.lines {
			lines := append(append([][]byte{}, f.lines[:i]...), f.lines[i+1:]...)
			wantLine, origin, seq := f.firstChainBreak(t, lines)
			_, err := f.check(t, joinLines(lines))
			if wantLine == 0 || err == nil {
				t.Fatalf("deleting line %d: error %v, reference break at line %d", i+1, err, wantLine)
			}
			wantVerifyError(t, err, wantLine, origin, seq)
		}
	})

	t.Run("every line duplicated", func(t *testing.T) {
		for i := range f.lines {
			lines := append(append(append([][]byte{}, f.lines[:i+1]...), f.lines[i]), f.lines[i+1:]...)
			origin, seq, _ := originSequence(f.lines[i])
			_, err := f.check(t, joinLines(lines))
			wantVerifyError(t, err, i+2, origin, seq)
		}
	})

	t.Run("every pair swapped", func(t *testing.T) {
		undetectable := 0
		for i := range f.lines {
			for j := i + 1; j < len(f.lines); j++ {
				lines := append([][]byte{}, f.lines...)
				lines[i], lines[j] = lines[j], lines[i]
				wantLine, origin, seq := f.firstChainBreak(t, lines)
				got, err := f.check(t, joinLines(lines))
				if wantLine != 0 {
					wantVerifyError(t, err, wantLine, origin, seq)
					continue
				}
				// Swapping lines of two origins with no line of either in
				// between keeps both chains whole. File order across
				// origins is not authenticated, and it changes nothing a
				// reader sees, because the latest version of a thing is
				// chosen by time, origin and sequence.
				if err != nil {
					t.Fatalf("swapping lines %d and %d: %v", i+1, j+1, err)
				}
				for thing, data := range f.things {
					if got[thing] != data {
						t.Fatalf("swapping lines %d and %d changed %s from %s to %s", i+1, j+1, thing, data, got[thing])
					}
				}
				undetectable++
			}
		}
		if undetectable == 0 {
			t.Fatalf("no swap kept the chains whole; the fixture does not interleave origins")
		}
	})

	t.Run("whole directory rolled back is undetectable", func(t *testing.T) {
		// An older copy of both ledger.ndjson and heads.json is a consistent
		// earlier state; only peers that saw a later head can notice.
		older := joinLines(f.lines[:len(f.lines)-1])
		saved := f.heads
		defer func() { f.heads = saved }()
		heads, err := readHeads(f.dir, f.master)
		if err != nil {
			t.Fatal(err)
		}
		origin, seq, _ := originSequence(f.lines[len(f.lines)-1])
		heads[origin] = Head{Origin: origin, Sequence: seq - 1, Hash: lineHashOfSequence(t, f.lines, origin, seq-1)}
		var list []Head
		for _, h := range heads {
			list = append(list, h)
		}
		if err := writeHeads(f.dir, f.master, list); err != nil {
			t.Fatal(err)
		}
		f.heads, err = os.ReadFile(filepath.Join(f.dir, headsFile))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.check(t, older); err != nil {
			t.Fatalf("consistent rollback of the directory: %v, want no error", err)
		}
	})
}

func lineHashOfSequence(t *testing.T, lines [][]byte, origin string, seq uint64) string {
	t.Helper()
	for _, line := range lines {
		if o, s, _ := originSequence(line); o == origin && s == seq {
			h := lineHash(line)
			return hexString(h[:])
		}
	}
	t.Fatalf("no line of origin %s sequence %d", origin, seq)
	return ""
}
