package ledger

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestOpen_TornTail(t *testing.T) {
	tests := map[string]struct {
		// tail turns the bytes of the last complete line into what a crash left.
		tail      func(last []byte) []byte
		wantError bool
	}{
		"half a line":             {tail: func(last []byte) []byte { return last[:len(last)/2] }},
		"line without newline":    {tail: func(last []byte) []byte { return last[:len(last)-1] }},
		"zeros after a crash":     {tail: func(last []byte) []byte { return append(make([]byte, 40), '\n') }},
		"unparsable last line":    {tail: func(last []byte) []byte { return []byte("{\"v\":1,garbage\n") }},
		"valid line, broken link": {tail: func(last []byte) []byte { return last }, wantError: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			l, dir := newTestLedger(t, testPassphrase, Options{})
			for i := range 3 {
				appendThing(t, l, "lamp", i)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			raw := readLedgerFile(t, dir)
			lines := bytes.SplitAfter(raw, []byte("\n"))
			last := lines[1] // a complete earlier line, appended again out of order
			torn := append(append([]byte{}, raw...), tc.tail(last)...)
			if err := os.WriteFile(filepath.Join(dir, ledgerFile), torn, 0o600); err != nil {
				t.Fatal(err)
			}

			l2, err := Open(dir, testPassphrase, Options{})
			if tc.wantError {
				var ve *VerifyError
				if !errors.As(err, &ve) || ve.Line != 4 {
					t.Fatalf("Open = %v, want a *VerifyError on line 4", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Open = %v", err)
			}
			cleanupLedger(t, l2)
			want := &TailRepair{Offset: int64(len(raw)), Bytes: int64(len(torn) - len(raw))}
			if got := l2.TailRepair(); got == nil || *got != *want {
				t.Fatalf("TailRepair = %+v, want %+v", got, want)
			}
			if !bytes.Equal(readLedgerFile(t, dir), raw) {
				t.Fatalf("file after repair differs from the last complete line")
			}
			info := appendThing(t, l2, "lamp", 3)
			if info.Sequence != 4 {
				t.Fatalf("append after repair got sequence %d, want 4", info.Sequence)
			}
		})
	}
}

func TestOpen_DamageIsAnError(t *testing.T) {
	l, dir := newTestLedger(t, testPassphrase, Options{})
	for i := range 3 {
		appendThing(t, l, "lamp", i)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	raw := readLedgerFile(t, dir)
	first := bytes.IndexByte(raw, '\n')
	damaged := append([]byte{}, raw...)
	damaged[first/2] = '#'
	if err := os.WriteFile(filepath.Join(dir, ledgerFile), damaged, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dir, testPassphrase, Options{})
	var ve *VerifyError
	if !errors.As(err, &ve) || ve.Line != 1 {
		t.Fatalf("Open of a damaged first line = %v, want a *VerifyError on line 1", err)
	}
	if !bytes.Equal(readLedgerFile(t, dir), damaged) {
		t.Fatalf("Open changed a damaged file")
	}
}

func TestEnvelope_OnlyAddressedPeerReads(t *testing.T) {
	writer, _ := newTestLedger(t, []byte("writer passphrase"), Options{})
	peer, _ := newTestLedger(t, []byte("peer passphrase"), Options{})
	other, _ := newTestLedger(t, []byte("other passphrase"), Options{})
	replica, _ := newTestLedger(t, []byte("writer passphrase"), Options{})

	appendThing(t, writer, "secret", "for peer", recipientOf(peer))
	appendThing(t, writer, "secret2", "also for peer", recipientOf(peer))
	appendThing(t, writer, "plain", "ledger only")
	lines := exportAll(t, writer, ExportOptions{})

	for _, l := range []*Ledger{peer, other, replica} {
		if _, err := l.Import(context.Background(), lines); err != nil {
			t.Fatalf("Import = %v", err)
		}
	}
	tests := map[string]struct {
		ledger *Ledger
		thing  string
		want   string // decrypted JSON, or empty when not readable
	}{
		"peer reads its envelope":         {peer, "secret", `"for peer"`},
		"peer reads second envelope":      {peer, "secret2", `"also for peer"`},
		"peer cannot read plain entry":    {peer, "plain", ""},
		"other cannot read envelope":      {other, "secret", ""},
		"other cannot read plain entry":   {other, "plain", ""},
		"same passphrase reads envelope":  {replica, "secret", `"for peer"`},
		"same passphrase reads plain":     {replica, "plain", `"ledger only"`},
		"writer reads its envelope entry": {writer, "secret", `"for peer"`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			v, err := tc.ledger.Get(tc.thing)
			if tc.want == "" {
				if !errors.Is(err, ErrNotReadable) || v.Readable || v.Data != nil {
					t.Fatalf("Get = %+v, %v; want ErrNotReadable without data", v, err)
				}
				if !v.SignatureValid {
					t.Fatalf("unreadable version should still report a valid signature")
				}
				return
			}
			if err != nil || string(v.Data) != tc.want {
				t.Fatalf("Get = %s, %v; want %s", v.Data, err, tc.want)
			}
		})
	}

	// Both envelopes to the peer reuse one sealed epoch key.
	e1, _ := DecodeEntry(lines[0])
	e2, _ := DecodeEntry(lines[1])
	if !bytes.Equal(e1.Envelopes[0].Sealed, e2.Envelopes[0].Sealed) {
		t.Fatalf("entries of one epoch carry different sealed epoch keys")
	}
}

// twoOrigins returns a writer ledger with n entries and a second, empty ledger.
func twoOrigins(t *testing.T, n int) (*Ledger, *Ledger, [][]byte) {
	t.Helper()
	writer, _ := newTestLedger(t, testPassphrase, Options{})
	reader, _ := newTestLedger(t, testPassphrase, Options{})
	for i := range n {
		appendThing(t, writer, "thing", i)
	}
	return writer, reader, exportAll(t, writer, ExportOptions{})
}

func TestImport_Duplicates(t *testing.T) {
	_, reader, lines := twoOrigins(t, 5)
	res, err := reader.Import(context.Background(), lines)
	if err != nil || res.Accepted != 5 || res.Duplicates != 0 {
		t.Fatalf("first Import = %+v, %v; want 5 accepted", res, err)
	}
	size := reader.Size()
	tests := map[string][][]byte{
		"whole batch again": lines,
		"old entry only":    lines[1:2],
		"head only":         lines[4:],
		"same entry twice":  {lines[2], lines[2]},
	}
	for name, batch := range tests {
		t.Run(name, func(t *testing.T) {
			res, err := reader.Import(context.Background(), batch)
			if err != nil || res.Accepted != 0 || res.Duplicates != len(batch) {
				t.Fatalf("Import = %+v, %v; want %d duplicates", res, err, len(batch))
			}
			if reader.Size() != size {
				t.Fatalf("duplicate import changed the file size")
			}
		})
	}
}

func TestImport_Rejections(t *testing.T) {
	writer, reader, lines := twoOrigins(t, 4)
	origin := writer.Identity().NodeID
	if _, err := reader.Import(context.Background(), lines[:1]); err != nil {
		t.Fatal(err)
	}

	// A fork: a copy of the writer's directory appends a different sequence 2.
	forkLine := forkedLine(t, writer, 2)

	badSig := append([]byte{}, lines[1]...)
	sigAt := bytes.LastIndex(badSig, []byte(`"sig":"`)) + 8
	// Swap the signature's first character for another base64 letter, so the
	// line still decodes and only the signature check can reject it.
	if badSig[sigAt] == 'A' {
		badSig[sigAt] = 'B'
	} else {
		badSig[sigAt] = 'A'
	}

	tests := map[string]struct {
		batch     [][]byte
		wantIndex int
		check     func(t *testing.T, err error)
	}{
		"gap": {batch: [][]byte{lines[2]}, wantIndex: 0, check: func(t *testing.T, err error) {
			var gap *GapError
			if !errors.As(err, &gap) || gap.Origin != origin || gap.Have != 1 || gap.Got != 3 {
				t.Fatalf("error = %v, want a *GapError have 1 got 3", err)
			}
		}},
		"fork with both entries": {batch: [][]byte{lines[1], lines[2], forkLine}, wantIndex: 2, check: func(t *testing.T, err error) {
			var fork *ForkError
			if !errors.As(err, &fork) || fork.Sequence != 2 || !bytes.Equal(fork.Existing, lines[1]) || !bytes.Equal(fork.Incoming, forkLine) {
				t.Fatalf("error = %v, want a *ForkError at sequence 2 with both lines", err)
			}
		}},
		"invalid signature after a valid entry": {batch: [][]byte{lines[1], badSig}, wantIndex: 1, check: func(t *testing.T, err error) {
			if !strings.Contains(err.Error(), "signature") {
				t.Fatalf("error = %v, want a signature error", err)
			}
		}},
		"not canonical": {batch: [][]byte{append([]byte(" "), lines[1]...)}, wantIndex: 0, check: func(t *testing.T, err error) {
			if !strings.Contains(err.Error(), "invalid entry") {
				t.Fatalf("error = %v, want an invalid entry", err)
			}
		}},
		// An entry of the reader's own origin that it never wrote, made in a copy.
		"own origin beyond head": {batch: [][]byte{forkedLine(t, reader, 1)}, wantIndex: 0, check: func(t *testing.T, err error) {
			if !strings.Contains(err.Error(), "own origin") {
				t.Fatalf("error = %v, want an own-origin rejection", err)
			}
		}},
	}

	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			size, heads := reader.Size(), reader.Heads()
			_, err := reader.Import(context.Background(), tc.batch)
			var ee *EntryError
			if !errors.As(err, &ee) || ee.Index != tc.wantIndex {
				t.Fatalf("Import = %v, want an *EntryError at index %d", err, tc.wantIndex)
			}
			tc.check(t, err)
			if reader.Size() != size || !sameHeads(reader.Heads(), heads) {
				t.Fatalf("a rejected batch changed the ledger")
			}
		})
	}
}

// forkedLine copies l's directory, appends there until sequence seq and
// returns that line: same origin and keys, different content.
func forkedLine(t *testing.T, l *Ledger, seq uint64) []byte {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "fork")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(l.dir, headerFile))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, headerFile), raw, 0o600)
	if err := writeHeads(dir, l.master, nil); err != nil {
		t.Fatal(err)
	}
	var prefix bytes.Buffer
	err = l.Export(context.Background(), ExportOptions{}, func(line []byte) error {
		if o, s, _ := originSequence(line); o == l.id.NodeID && s < seq {
			prefix.Write(line)
			prefix.WriteByte('\n')
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, ledgerFile), prefix.Bytes(), 0o600)
	fork := openTestLedger(t, dir, testPassphrase, Options{})
	info := appendThing(t, fork, "forked", "different")
	if info.Sequence != seq {
		t.Fatalf("fork got sequence %d, want %d", info.Sequence, seq)
	}
	return exportAll(t, fork, ExportOptions{After: Cursor{l.id.NodeID: seq - 1}})[0]
}

func TestImport_ClockSkew(t *testing.T) {
	future := func() time.Time { return time.Now().Add(time.Hour) }
	writer, _ := newTestLedger(t, testPassphrase, Options{Now: future})
	appendThing(t, writer, "thing", 1)
	lines := exportAll(t, writer, ExportOptions{})
	tests := map[string]struct {
		skew    time.Duration
		wantErr bool
	}{
		"default skew rejects an hour ahead": {0, true},
		"two hours of skew accept":           {2 * time.Hour, false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			reader, _ := newTestLedger(t, testPassphrase, Options{MaxClockSkew: tc.skew})
			_, err := reader.Import(context.Background(), lines)
			if tc.wantErr != (err != nil) {
				t.Fatalf("Import = %v, want error %v", err, tc.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), "ahead of this node's clock") {
				t.Fatalf("Import = %v, want a clock-skew error", err)
			}
		})
	}
}

func TestOpen_RollbackRejected(t *testing.T) {
	writer, reader, lines := twoOrigins(t, 5)
	if _, err := reader.Import(context.Background(), lines); err != nil {
		t.Fatal(err)
	}
	dir := reader.dir
	if err := reader.Close(); err != nil {
		t.Fatal(err)
	}
	raw := readLedgerFile(t, dir)
	cut := bytes.LastIndexByte(raw[:len(raw)-1], '\n') + 1
	if err := os.WriteFile(filepath.Join(dir, ledgerFile), raw[:cut], 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dir, testPassphrase, Options{})
	var ve *VerifyError
	if !errors.Is(err, ErrRollback) || !errors.As(err, &ve) || ve.Origin != writer.Identity().NodeID || ve.Sequence != 5 || ve.Line != 5 {
		t.Fatalf("Open of a cut ledger = %v, want ErrRollback at line 5, sequence 5 of the writer", err)
	}
}

func TestExport_CursorAndRecipient(t *testing.T) {
	writer, _ := newTestLedger(t, testPassphrase, Options{})
	peer, _ := newTestLedger(t, []byte("peer"), Options{})
	other, _ := newTestLedger(t, []byte("other"), Options{})
	origin := writer.Identity().NodeID
	for i := range 6 {
		var to []Recipient
		if i%2 == 0 {
			to = append(to, recipientOf(peer))
		}
		if i == 3 {
			to = append(to, recipientOf(other))
		}
		appendThing(t, writer, "thing", i, to...)
	}
	tests := map[string]struct {
		opts     ExportOptions
		wantSeqs []uint64
	}{
		"everything":             {ExportOptions{}, []uint64{1, 2, 3, 4, 5, 6}},
		"after cursor":           {ExportOptions{After: Cursor{origin: 4}}, []uint64{5, 6}},
		"cursor of other origin": {ExportOptions{After: Cursor{strings.Repeat("0", 32): 9}}, []uint64{1, 2, 3, 4, 5, 6}},
		"limit":                  {ExportOptions{Limit: 2}, []uint64{1, 2}},
		"recipient peer":         {ExportOptions{Recipient: peer.Identity().NodeID}, []uint64{1, 3, 5}},
		"recipient other":        {ExportOptions{Recipient: other.Identity().NodeID}, []uint64{4}},
		"recipient after cursor": {ExportOptions{Recipient: peer.Identity().NodeID, After: Cursor{origin: 3}}, []uint64{5}},
		"cursor at head":         {ExportOptions{After: Cursor{origin: 6}}, nil},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var got []uint64
			for _, line := range exportAll(t, writer, tc.opts) {
				_, seq, err := originSequence(line)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, seq)
			}
			if len(got) != len(tc.wantSeqs) {
				t.Fatalf("exported sequences %v, want %v", got, tc.wantSeqs)
			}
			for i := range got {
				if got[i] != tc.wantSeqs[i] {
					t.Fatalf("exported sequences %v, want %v", got, tc.wantSeqs)
				}
			}
		})
	}
	if err := writer.Export(context.Background(), ExportOptions{Recipient: "nobody"}, func([]byte) error { return nil }); err == nil {
		t.Fatalf("Export with an invalid recipient id succeeded")
	}
}

func TestHistory_Provenance(t *testing.T) {
	writer, reader, _ := twoOrigins(t, 0)
	appendThing(t, writer, "door", "closed")
	appendThing(t, writer, "lamp", "off")
	appendThing(t, reader, "door", "ajar")
	if _, err := reader.Import(context.Background(), exportAll(t, writer, ExportOptions{})); err != nil {
		t.Fatal(err)
	}
	appendThing(t, writer, "door", "open")
	if _, err := reader.Import(context.Background(), exportAll(t, writer, ExportOptions{After: Cursor{writer.Identity().NodeID: 2}})); err != nil {
		t.Fatal(err)
	}
	history, err := reader.History("door")
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		origin string
		data   string
	}{{reader.Identity().NodeID, `"ajar"`}, {writer.Identity().NodeID, `"closed"`}, {writer.Identity().NodeID, `"open"`}}
	if len(history) != len(want) {
		t.Fatalf("history has %d versions, want %d", len(history), len(want))
	}
	for i, w := range want {
		v := history[i]
		if v.Origin != w.origin || string(v.Data) != w.data || !v.SignatureValid || v.Actor != "tester" {
			t.Errorf("version %d = origin %s data %s valid %v, want origin %s data %s", i, v.Origin, v.Data, v.SignatureValid, w.origin, w.data)
		}
	}
	latest, err := reader.Get("door")
	if err != nil || string(latest.Data) != `"open"` {
		t.Fatalf("Get(door) = %s, %v; want the newest version \"open\"", latest.Data, err)
	}
}
