package ledger

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"math"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func TestLineTemplate_MatchesEncoding(t *testing.T) {
	pub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		thing, actor string
		sequence     uint64
		envelopes    int
	}{
		"first entry":      {thing: "lamp", actor: "alice", sequence: 1},
		"escaped ids":      {thing: `lamp "hall" \ east`, actor: "bob\x01", sequence: 12},
		"envelopes":        {thing: "door", actor: "carol", sequence: 7, envelopes: 3},
		"maximum sequence": {thing: "valve", actor: "dave", sequence: math.MaxUint64},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			e := &Entry{Version: FormatVersion, Origin: NodeID(pub), Thing: tc.thing, Actor: tc.actor,
				KeyID: KeyID(pub), ActorKey: pub, Nonce: randomBytes(nonceSize), Ciphertext: randomBytes(300),
				DataHash: randomBytes(32), Wrap: randomBytes(wrappedSize)}
			for range tc.envelopes {
				e.Envelopes = append(e.Envelopes, Envelope{To: NodeID(pub), Sealed: randomBytes(80), Wrap: randomBytes(wrappedSize)})
			}

			// Build both templates before the entry is sequenced, as Append does.
			line := newLineTemplate(e)
			signed, at := e.appendSigned(nil)

			e.Sequence = tc.sequence
			e.Time = time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
			copy(e.Prev[:], randomBytes(32))
			e.Signature = randomBytes(ed25519.SignatureSize)
			setSigned(signed, at, e.Sequence, e.Time.UnixNano(), e.Prev)

			if got, want := signed, e.signedBytes(); !bytes.Equal(got, want) {
				t.Errorf("completed signed bytes differ from signedBytes:\n got %x\nwant %x", got, want)
			}
			got, want := line.appendLine(nil, e), e.appendLine(nil)
			if !bytes.Equal(got, want) {
				t.Errorf("template line differs from appendLine:\n got %s\nwant %s", got, want)
			}
			if n := len(got); n > line.maxLineLen() {
				t.Errorf("line has %d bytes, more than the bound %d", n, line.maxLineLen())
			}
		})
	}
}

func TestAppend_GroupCommit(t *testing.T) {
	for _, d := range []Durability{DurabilityAlways, DurabilityBatch, DurabilityNone} {
		t.Run(string(d), func(t *testing.T) {
			// A clock that never moves makes every time come from the
			// monotonic rule.
			fixed := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
			l, _ := newTestLedger(t, testPassphrase, Options{Durability: d, Now: func() time.Time { return fixed }})
			_, clientKey, err := ed25519.GenerateKey(nil)
			if err != nil {
				t.Fatal(err)
			}

			// Queue every append while the lock is held, so they commit as one group.
			const writers = 24
			infos := make([]EntryInfo, writers)
			var wg sync.WaitGroup
			l.mu.Lock()
			for i := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					req := AppendRequest{Thing: "t", Actor: "a", Data: mustJSON(i)}
					if i%2 == 1 {
						req.Signer = clientKey
					}
					info, err := l.Append(context.Background(), req)
					if err != nil {
						t.Errorf("Append %d = %v", i, err)
					}
					infos[i] = info
				}()
			}
			waitQueued(t, l, writers)
			l.mu.Unlock()
			wg.Wait()

			// Each append got its own sequence, its signer's key id and a
			// time after every earlier entry of the chain.
			bySequence := map[uint64]EntryInfo{}
			for i, info := range infos {
				bySequence[info.Sequence] = info
				wantKey := l.Identity().KeyID
				if i%2 == 1 {
					wantKey = KeyID(clientKey.Public().(ed25519.PublicKey))
				}
				if info.KeyID != wantKey {
					t.Errorf("append %d has key id %s, want %s", i, info.KeyID, wantKey)
				}
			}
			for seq := uint64(1); seq <= writers; seq++ {
				info, ok := bySequence[seq]
				if !ok {
					t.Fatalf("no append returned sequence %d", seq)
				}
				if want := fixed.Add(time.Duration(seq - 1)); !info.Time.Equal(want) {
					t.Errorf("sequence %d has time %s, want %s", seq, info.Time.Format(timeLayout), want.Format(timeLayout))
				}
			}

			// Every line decodes and its signature verifies.
			lines := exportAll(t, l, ExportOptions{})
			if len(lines) != writers {
				t.Fatalf("export has %d lines, want %d", len(lines), writers)
			}
			for i, line := range lines {
				e, err := DecodeEntry(line)
				if err != nil {
					t.Fatalf("line %d: %v", i+1, err)
				}
				if err := e.verifySignature(); err != nil {
					t.Errorf("line %d: %v", i+1, err)
				}
			}
		})
	}
}

func TestAppend_GroupWriteErrorIsFatal(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ledger")
	l, err := Create(dir, testPassphrase, Options{KDF: testKDF, Durability: DurabilityBatch})
	if err != nil {
		t.Fatal(err)
	}

	// Queue a group, then make its write fail by closing the file under it.
	const writers = 8
	errs := make([]error, writers)
	var wg sync.WaitGroup
	l.mu.Lock()
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = l.Append(context.Background(), AppendRequest{Thing: "t", Actor: "a", Data: mustJSON(i)})
		}()
	}
	waitQueued(t, l, writers)
	if err := l.file.Close(); err != nil {
		t.Fatal(err)
	}
	l.mu.Unlock()
	wg.Wait()

	for i, err := range errs {
		if !errors.Is(err, ErrFailed) {
			t.Errorf("Append %d in the failed group = %v, want ErrFailed", i, err)
		}
	}
	if _, err := l.Append(context.Background(), AppendRequest{Thing: "t", Actor: "a", Data: mustJSON(99)}); !errors.Is(err, ErrFailed) {
		t.Errorf("Append after the failed group = %v, want ErrFailed", err)
	}
	if l.Size() != 0 {
		t.Errorf("Size after the failed group = %d, want 0", l.Size())
	}
	if err := l.Close(); !errors.Is(err, ErrFailed) {
		t.Errorf("Close after the failed group = %v, want ErrFailed", err)
	}

	// The failed group left nothing behind.
	l2 := openTestLedger(t, dir, testPassphrase, Options{})
	if heads := l2.Heads(); len(heads) != 0 {
		t.Errorf("heads after reopening = %+v, want none", heads)
	}
}

func TestAppend_CancelledContext(t *testing.T) {
	l, _ := newTestLedger(t, testPassphrase, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := l.Append(ctx, AppendRequest{Thing: "t", Actor: "a", Data: mustJSON(1)}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Append with a cancelled context = %v, want context.Canceled", err)
	}
	if l.Size() != 0 {
		t.Errorf("Size after a cancelled append = %d, want 0", l.Size())
	}
}

// waitQueued waits until n appends are in the commit queue.
func waitQueued(t *testing.T, l *Ledger, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		l.queueMu.Lock()
		queued := len(l.queue)
		l.queueMu.Unlock()
		if queued == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d appends queued after 10s, want %d", queued, n)
		}
		time.Sleep(time.Millisecond)
	}
}
