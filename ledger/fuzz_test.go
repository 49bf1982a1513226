package ledger

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The seed corpus under testdata/fuzz and the ledger in importFixtureDir are
// written by TestWriteFuzzCorpus (see fuzzcorpus_test.go).
const importFixtureDir = "testdata/importfixture"

// fixtureNow is the clock of FuzzImport: one day after the fixture's entries,
// so the clock-skew check accepts them and rejects the seed from the future.
var fixtureNow = fixtureEpoch.Add(24 * time.Hour)

// maxFuzzBatch bounds the lines of one FuzzImport input, to keep each run fast.
const maxFuzzBatch = 256

// FuzzDecodeEntry checks that decoding never panics and that an accepted line
// is consistent. Such a line re-encodes to the same bytes and decodes again to
// the same signed bytes. The quick origin and sequence reader that Export uses
// agrees with it, every signature check gives the same result, and no proper
// prefix of the line decodes.
func FuzzDecodeEntry(f *testing.F) {
	f.Fuzz(func(t *testing.T, line []byte) {
		e, err := DecodeEntry(line)
		if err != nil {
			if e != nil {
				t.Fatalf("DecodeEntry returned an entry with error %v", err)
			}
			return
		}

		encoded := e.appendLine(nil)
		if !bytes.Equal(encoded, line) {
			t.Fatalf("decoded entry re-encodes to\n%s\nwant\n%s", encoded, line)
		}
		again, err := DecodeEntry(encoded)
		if err != nil {
			t.Fatalf("DecodeEntry of the re-encoded line = %v", err)
		}
		if !bytes.Equal(again.signedBytes(), e.signedBytes()) {
			t.Fatalf("signed bytes differ between two decodes of one line")
		}

		origin, seq, err := originSequence(line)
		if err != nil {
			t.Fatalf("originSequence of a decodable line = %v", err)
		}
		if origin != e.Origin || seq != e.Sequence {
			t.Fatalf("originSequence = %s %d, DecodeEntry = %s %d", origin, seq, e.Origin, e.Sequence)
		}

		sigErr := e.verifySignature()
		if againErr := again.verifySignature(); (sigErr == nil) != (againErr == nil) {
			t.Fatalf("verifySignature = %v, then %v for the same line", sigErr, againErr)
		}
		checked := checkLine(append(append([]byte{}, line...), '\n'))
		if (checked.err == nil) != (sigErr == nil) {
			t.Fatalf("checkLine error %v, verifySignature error %v", checked.err, sigErr)
		}
		if sigErr == nil {
			// A valid signature must stop being valid when any signed field changes.
			changed := *e
			changed.Sequence++
			if changed.verifySignature() == nil {
				t.Fatalf("signature still verifies after the sequence changed")
			}
		}

		// Open treats an unparsable last line as torn; a cut line must never parse.
		for _, n := range []int{len(line) - 1, len(line) / 2} {
			if _, err := DecodeEntry(line[:n]); err == nil {
				t.Fatalf("DecodeEntry accepted the first %d of %d bytes of a line", n, len(line))
			}
		}
	})
}

// FuzzImport imports an arbitrary batch (one entry per line) into a copy of
// the fixture ledger, and Import must not panic. A failed Import must return
// an *EntryError and leave the files and heads as they were. After a
// successful one, every line is counted, Verify passes and no head goes
// back. Importing the same batch again must then be a no-op, and the ledger
// must verify after a reopen.
func FuzzImport(f *testing.F) {
	f.Fuzz(func(t *testing.T, input []byte) {
		var lines [][]byte
		if len(input) > 0 {
			lines = bytes.Split(input, []byte("\n"))
		}
		if len(lines) > maxFuzzBatch {
			t.Skip("batch too long")
		}
		dir := copyImportFixture(t)
		l, err := Open(dir, testPassphrase, Options{Durability: DurabilityNone, Now: func() time.Time { return fixtureNow }})
		if err != nil {
			t.Fatalf("Open fixture = %v", err)
		}
		defer l.Close()

		before := snapshotLedgerFiles(t, dir)
		headsBefore := l.Heads()
		res, err := l.Import(context.Background(), lines)
		if err != nil {
			checkImportRejected(t, l, dir, lines, err, before, headsBefore)
			return
		}

		if res.Accepted+res.Duplicates != len(lines) {
			t.Fatalf("Import = %+v for %d lines", res, len(lines))
		}
		after := snapshotLedgerFiles(t, dir)
		if !bytes.HasPrefix(after[ledgerFile], before[ledgerFile]) {
			t.Fatalf("Import changed bytes before the end of %s", ledgerFile)
		}
		if res.Accepted == 0 && !bytes.Equal(after[ledgerFile], before[ledgerFile]) {
			t.Fatalf("Import accepted nothing but wrote %d bytes", len(after[ledgerFile])-len(before[ledgerFile]))
		}
		if _, err := l.Verify(context.Background()); err != nil {
			t.Fatalf("Verify after Import = %v", err)
		}
		checkHeadsAdvanced(t, headsBefore, l.Heads())

		again, err := l.Import(context.Background(), lines)
		if err != nil || again.Accepted != 0 || again.Duplicates != len(lines) {
			t.Fatalf("second Import of the same batch = %+v, %v; want %d duplicates", again, err, len(lines))
		}
		heads := l.Heads()
		if err := l.Close(); err != nil {
			t.Fatalf("Close = %v", err)
		}
		l2, err := Open(dir, testPassphrase, Options{Durability: DurabilityNone, Now: func() time.Time { return fixtureNow }})
		if err != nil {
			t.Fatalf("reopen after Import = %v", err)
		}
		defer l2.Close()
		if _, err := l2.Verify(context.Background()); err != nil {
			t.Fatalf("Verify after reopen = %v", err)
		}
		if got := l2.Heads(); !sameHeads(got, heads) {
			t.Fatalf("heads after reopen = %+v, want %+v", got, heads)
		}
	})
}

func checkImportRejected(t *testing.T, l *Ledger, dir string, lines [][]byte, err error, before map[string][]byte, headsBefore []Head) {
	t.Helper()
	var ee *EntryError
	if !errors.As(err, &ee) {
		t.Fatalf("Import = %v, want an *EntryError", err)
	}
	if ee.Index < 0 || ee.Index >= len(lines) {
		t.Fatalf("EntryError index %d outside a batch of %d", ee.Index, len(lines))
	}
	var fork *ForkError
	if errors.As(err, &fork) {
		if bytes.Equal(fork.Existing, fork.Incoming) {
			t.Fatalf("ForkError with two equal lines")
		}
		for _, line := range [][]byte{fork.Existing, fork.Incoming} {
			e, err := DecodeEntry(line)
			if err != nil || e.Origin != fork.Origin || e.Sequence != fork.Sequence {
				t.Fatalf("ForkError evidence %q does not decode to origin %s sequence %d: %v", line, fork.Origin, fork.Sequence, err)
			}
		}
	}
	after := snapshotLedgerFiles(t, dir)
	for name, content := range before {
		if !bytes.Equal(after[name], content) {
			t.Fatalf("rejected Import (%v) changed %s", err, name)
		}
	}
	if got := l.Heads(); !sameHeads(got, headsBefore) {
		t.Fatalf("rejected Import changed heads to %+v, want %+v", got, headsBefore)
	}
	if _, err := l.Verify(context.Background()); err != nil {
		t.Fatalf("Verify after a rejected Import = %v", err)
	}
}

// checkHeadsAdvanced fails when an origin of before is missing from after or went back.
func checkHeadsAdvanced(t *testing.T, before, after []Head) {
	t.Helper()
	seqs := map[string]uint64{}
	for _, h := range after {
		seqs[h.Origin] = h.Sequence
	}
	for _, h := range before {
		if seqs[h.Origin] < h.Sequence {
			t.Fatalf("head of origin %s went from %d to %d", h.Origin, h.Sequence, seqs[h.Origin])
		}
	}
}

// copyImportFixture copies the fixture ledger into a fresh directory, so
// each fuzz input starts from the same files.
func copyImportFixture(t *testing.T) string {
	t.Helper()
	dir := fuzzTempDir(t)
	for _, name := range []string{headerFile, ledgerFile, headsFile} {
		raw, err := os.ReadFile(filepath.Join(importFixtureDir, name))
		if err != nil {
			t.Fatalf("read fixture (regenerate it with %s=1 go test -run TestWriteFuzzCorpus): %v", writeCorpusEnv, err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), raw, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// fuzzTempDir returns a new directory on /dev/shm when that is a writable
// directory, because fsync there costs nothing and Close fsyncs once per
// fuzz input, and otherwise a t.TempDir.
func fuzzTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/dev/shm", "thingdb-fuzz-")
	if err != nil {
		return t.TempDir()
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func snapshotLedgerFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, name := range []string{headerFile, ledgerFile, headsFile} {
		raw, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		out[name] = raw
	}
	return out
}

// TestFuzzCorpus_Outcomes runs each named seed of the checked-in corpus and
// checks the outcome its name promises, so a format change that turns every
// seed into garbage fails here instead of leaving the fuzzers without
// valid inputs. Names start with the outcome: valid-, invalid- (decoding);
// ok-, dup-, gap-, fork-, reject- (import).
func TestFuzzCorpus_Outcomes(t *testing.T) {
	t.Run("FuzzDecodeEntry", func(t *testing.T) {
		seeds := readFuzzSeeds(t, "FuzzDecodeEntry")
		for name, line := range seeds {
			e, err := DecodeEntry(line)
			switch {
			case strings.HasPrefix(name, "valid-"):
				if err != nil {
					t.Errorf("seed %s: DecodeEntry = %v", name, err)
				} else if err := e.verifySignature(); err != nil {
					t.Errorf("seed %s: verifySignature = %v", name, err)
				}
			case strings.HasPrefix(name, "invalid-"):
				if err == nil {
					t.Errorf("seed %s: DecodeEntry accepted it", name)
				}
			}
		}
	})

	t.Run("FuzzImport", func(t *testing.T) {
		seeds := readFuzzSeeds(t, "FuzzImport")
		for name, input := range seeds {
			t.Run(name, func(t *testing.T) {
				var lines [][]byte
				if len(input) > 0 {
					lines = bytes.Split(input, []byte("\n"))
				}
				l, err := Open(copyImportFixture(t), testPassphrase, Options{Durability: DurabilityNone, Now: func() time.Time { return fixtureNow }})
				if err != nil {
					t.Fatalf("Open fixture = %v", err)
				}
				defer l.Close()
				res, err := l.Import(context.Background(), lines)
				var gap *GapError
				var fork *ForkError
				switch {
				case strings.HasPrefix(name, "ok-"):
					if err != nil || res.Accepted == 0 {
						t.Errorf("Import = %+v, %v; want accepted entries", res, err)
					}
				case strings.HasPrefix(name, "dup-"):
					if err != nil || res.Accepted != 0 || res.Duplicates != len(lines) {
						t.Errorf("Import = %+v, %v; want %d duplicates", res, err, len(lines))
					}
				case strings.HasPrefix(name, "gap-"):
					if !errors.As(err, &gap) {
						t.Errorf("Import = %v, want a *GapError", err)
					}
				case strings.HasPrefix(name, "fork-"):
					if !errors.As(err, &fork) {
						t.Errorf("Import = %v, want a *ForkError", err)
					}
				case strings.HasPrefix(name, "reject-"):
					var ee *EntryError
					if !errors.As(err, &ee) || errors.As(err, &gap) || errors.As(err, &fork) {
						t.Errorf("Import = %v, want an *EntryError that is neither a gap nor a fork", err)
					}
				}
			})
		}
	})
}

// readFuzzSeeds reads the []byte seeds of one fuzz target's corpus, by file name.
func readFuzzSeeds(t *testing.T, target string) map[string][]byte {
	t.Helper()
	dir := filepath.Join("testdata", "fuzz", target)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("read seed corpus: %v", err)
	}
	seeds := map[string][]byte{}
	for _, entry := range entries {
		f, err := os.Open(filepath.Join(dir, entry.Name()))
		if err != nil {
			t.Fatal(err)
		}
		raw, err := io.ReadAll(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		value, err := parseFuzzSeed(raw)
		if err != nil {
			t.Fatalf("seed %s: %v", entry.Name(), err)
		}
		seeds[entry.Name()] = value
	}
	if len(seeds) == 0 {
		t.Fatalf("no seeds in %s", dir)
	}
	return seeds
}

// parseFuzzSeed reads a corpus file of one []byte value, as written by
// formatFuzzSeed and by the go command.
func parseFuzzSeed(raw []byte) ([]byte, error) {
	rest, ok := strings.CutPrefix(string(raw), fuzzSeedHeader)
	if !ok {
		return nil, errors.New("missing the line " + strconv.Quote(fuzzSeedHeader))
	}
	rest = strings.TrimSpace(rest)
	inner, ok := strings.CutPrefix(rest, "[]byte(")
	if !ok || !strings.HasSuffix(inner, ")") {
		return nil, errors.New("expected one []byte value")
	}
	value, err := strconv.Unquote(strings.TrimSuffix(inner, ")"))
	if err != nil {
		return nil, err
	}
	return []byte(value), nil
}
