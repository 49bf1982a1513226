package ledger

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// writeCorpusEnv makes TestWriteFuzzCorpus rewrite the fixture ledger and the
// seed corpus. The keys are random, so every run writes different bytes;
// run it only when the entry format changed.
const writeCorpusEnv = "THINGDB_WRITE_FUZZ_CORPUS"

// fuzzSeedHeader is the first line of a corpus file of the go command.
const fuzzSeedHeader = "go test fuzz v1\n"

// fixtureEpoch is the start of the fixture clocks. A's clock starts three
// hours later, after every entry it imports, so none is ahead of it.
var fixtureEpoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// fixtureClock returns a clock that starts at start and moves one second per call.
func fixtureClock(start time.Time) func() time.Time {
	var calls atomic.Int64
	return func() time.Time { return start.Add(time.Duration(calls.Add(1)) * time.Second) }
}

// TestWriteFuzzCorpus writes the fixture ledger that FuzzImport imports into
// and the seed corpus of FuzzDecodeEntry and FuzzImport, from real ledgers:
//
//   - A, the fixture: 4 entries of its own (one with a quote and a backslash
//     in the thing id, one signed client-side, one in envelope mode) and
//     sequences 1 to 4 of B, imported;
//   - B: 8 entries, one in envelope mode for A; B2, a copy of B after
//     sequence 2 that then wrote other entries, so its sequences 3 to 6 fork B;
//   - C: 3 entries for A in envelope mode, from an origin A has not seen;
//   - D: one entry dated two days after the fixture's clock.
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv(writeCorpusEnv) == "" {
		t.Skipf("set %s=1 to rewrite %s and testdata/fuzz", writeCorpusEnv, importFixtureDir)
	}
	ctx := context.Background()
	work := t.TempDir()
	create := func(name string, passphrase []byte, start time.Time) *Ledger {
		l, err := Create(filepath.Join(work, name), passphrase, Options{KDF: testKDF, Durability: DurabilityNone, Now: fixtureClock(start)})
		if err != nil {
			t.Fatalf("Create %s = %v", name, err)
		}
		return l
	}
	appendLine := func(l *Ledger, req AppendRequest) {
		if req.Actor == "" {
			req.Actor = "fixture"
		}
		if _, err := l.Append(ctx, req); err != nil {
			t.Fatalf("Append %s = %v", req.Thing, err)
		}
	}
	data := func(i int) []byte { return mustJSON(map[string]int{"value": i}) }

	a := create("a", testPassphrase, fixtureEpoch.Add(3*time.Hour))
	b := create("b", []byte("passphrase of b"), fixtureEpoch.Add(time.Minute))
	c := create("c", []byte("passphrase of c"), fixtureEpoch.Add(2*time.Minute))
	d := create("d", []byte("passphrase of d"), fixtureNow.Add(48*time.Hour))
	_, clientKey, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}

	// A's own entries.
	appendLine(a, AppendRequest{Thing: "lamp", Data: data(1)})
	appendLine(a, AppendRequest{Thing: `lamp "hall" \ east`, Data: data(2)})
	appendLine(a, AppendRequest{Thing: "lamp", Actor: "alice", Data: data(3), Signer: clientKey})
	appendLine(a, AppendRequest{Thing: "door", Data: data(4), Recipients: []Recipient{recipientOf(b)}})

	// B, and B2 forked from B after sequence 2.
	for i := range 2 {
		appendLine(b, AppendRequest{Thing: "sensor", Data: data(i)})
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b2dir := filepath.Join(work, "b2")
	if err := os.MkdirAll(b2dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{headerFile, ledgerFile, headsFile} {
		raw, err := os.ReadFile(filepath.Join(work, "b", name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(b2dir, name), raw, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	reopen := func(dir string, passphrase []byte, start time.Time) *Ledger {
		l, err := Open(dir, passphrase, Options{Durability: DurabilityNone, Now: fixtureClock(start)})
		if err != nil {
			t.Fatalf("Open %s = %v", dir, err)
		}
		return l
	}
	b = reopen(filepath.Join(work, "b"), []byte("passphrase of b"), fixtureEpoch.Add(time.Hour))
	b2 := reopen(b2dir, []byte("passphrase of b"), fixtureEpoch.Add(2*time.Hour))
	for i := 2; i < 8; i++ {
		req := AppendRequest{Thing: "sensor", Data: data(i)}
		if i == 4 {
			req.Recipients = []Recipient{recipientOf(a)}
		}
		appendLine(b, req)
	}
	for i := 2; i < 6; i++ {
		appendLine(b2, AppendRequest{Thing: "sensor", Data: data(100 + i)})
	}
	for i := range 3 {
		appendLine(c, AppendRequest{Thing: "valve", Data: data(i), Recipients: []Recipient{recipientOf(a)}})
	}
	appendLine(d, AppendRequest{Thing: "clock", Data: data(0)})

	linesOf := func(l *Ledger) [][]byte { return exportAll(t, l, ExportOptions{}) }
	aLines, bLines, b2Lines, cLines, dLines := linesOf(a), linesOf(b), linesOf(b2), linesOf(c), linesOf(d)

	// The fixture: A after importing B's sequences 1 to 4.
	if _, err := a.Import(ctx, bLines[:4]); err != nil {
		t.Fatalf("Import B 1-4 into A = %v", err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(importFixtureDir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(importFixtureDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{headerFile, ledgerFile, headsFile} {
		raw, err := os.ReadFile(filepath.Join(work, "a", name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(importFixtureDir, name), raw, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// An entry of A that the fixture does not hold: A may not import its own origin.
	a = reopen(filepath.Join(work, "a"), testPassphrase, fixtureEpoch.Add(4*time.Hour))
	appendLine(a, AppendRequest{Thing: "lamp", Data: data(5)})
	aNext := linesOf(a)[len(aLines)+4]

	for _, l := range []*Ledger{a, b, b2, c, d} {
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}

	decodeSeeds := map[string][]byte{
		"valid-own":             aLines[0],
		"valid-escaped-thing":   aLines[1],
		"valid-client-signed":   aLines[2],
		"valid-envelope":        aLines[3],
		"valid-other-origin":    bLines[0],
		"valid-envelope-to-a":   cLines[0],
		"invalid-cut":           aLines[0][:len(aLines[0])-1],
		"invalid-space":         bytes.Replace(aLines[0], []byte(`,"seq":`), []byte(`, "seq":`), 1),
		"invalid-upper-hex":     bytes.Replace(aLines[0], []byte(`"prev":"0`), []byte(`"prev":"A`), 1),
		"invalid-field-order":   bytes.Replace(aLines[0], []byte(`{"v":1,`), []byte(`{`), 1),
		"invalid-unicode-quote": bytes.Replace(aLines[1], []byte(`\"`), []byte(`\u0022`), 1),
		"invalid-empty":         {},
	}
	join := func(lines ...[]byte) []byte { return bytes.Join(lines, []byte("\n")) }
	importSeeds := map[string][]byte{
		"ok-continue":             join(bLines[4:]...),
		"ok-overlap":              join(bLines[2:6]...),
		"ok-new-origin":           join(cLines...),
		"ok-interleaved":          join(cLines[0], bLines[4], cLines[1], bLines[5]),
		"dup-imported":            join(bLines[:4]...),
		"dup-own":                 join(aLines[:2]...),
		"dup-empty":               {},
		"gap-skip":                join(bLines[5:]...),
		"gap-new-origin":          join(cLines[1:]...),
		"gap-after-valid":         join(bLines[4], bLines[5], bLines[7]),
		"fork-stored":             join(b2Lines[2]),
		"fork-in-batch":           join(bLines[4], b2Lines[4]),
		"reject-bad-signature":    join(flipBase64(t, bLines[4], `"dh":"`)),
		"reject-not-canonical":    join(bytes.Replace(bLines[4], []byte(`,"seq":`), []byte(`, "seq":`), 1)),
		"reject-future":           join(dLines...),
		"reject-own-new":          join(aNext),
		"reject-garbage-in-batch": join(bLines[4], []byte("not an entry")),
	}
	writeFuzzSeeds(t, "FuzzDecodeEntry", decodeSeeds)
	writeFuzzSeeds(t, "FuzzImport", importSeeds)
}

// flipBase64 changes one character in the middle of the base64 field that
// starts after marker, keeping the line canonical but its signature wrong.
func flipBase64(t *testing.T, line []byte, marker string) []byte {
	t.Helper()
	i := bytes.Index(line, []byte(marker))
	if i < 0 {
		t.Fatalf("no %s in line", marker)
	}
	out := append([]byte{}, line...)
	pos := i + len(marker) + 10
	if out[pos] == 'A' {
		out[pos] = 'B'
	} else {
		out[pos] = 'A'
	}
	return out
}

func writeFuzzSeeds(t *testing.T, target string, seeds map[string][]byte) {
	t.Helper()
	dir := filepath.Join("testdata", "fuzz", target)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, value := range seeds {
		if err := os.WriteFile(filepath.Join(dir, name), formatFuzzSeed(value), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("wrote %d seeds to %s", len(seeds), dir)
}

// formatFuzzSeed encodes one []byte value in the corpus file format of the go command.
func formatFuzzSeed(value []byte) []byte {
	return fmt.Appendf(nil, "%s[]byte(%s)\n", fuzzSeedHeader, strconv.Quote(string(value)))
}
