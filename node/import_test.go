package node

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/thingdb/thingdb/ledger"
)

// forgingSigner signs with a key that is not the claimed sender's.
type forgingSigner struct{ key ed25519.PrivateKey }

func (f forgingSigner) Sign(domain string, msg []byte) []byte {
	return ed25519.Sign(f.key, append([]byte(domain), msg...))
}

// tamper changes the case of the first letter in the ciphertext of line.
func tamper(t *testing.T, line []byte) []byte {
	t.Helper()
	out := append([]byte(nil), line...)
	i, err := ciphertextLetter(append(out, '\n'))
	if err != nil {
		t.Fatalf("find ciphertext: %v", err)
	}
	out[i] ^= 0x20
	return out
}

func TestServer_ImportRejections(t *testing.T) {
	n := startTestNode(t, testNodeOptions{limits: Limits{MaxImportBytes: 256 << 10, MaxBatchEntries: 50}})
	client := n.httpClient(t)
	importToken := n.token[ScopeImport]

	// Peer B writes three entries. A copy of B's fresh ledger directory,
	// opened as B2, has the same keys, so its different first entry is a
	// fork.
	peer, peerDir := newTestLedger(t, ledger.DurabilityBatch)
	forkDir := t.TempDir()
	copyDir(t, peerDir, forkDir)
	peerLines := appendThings(t, peer, "b", 3)
	peerID := peer.Identity().NodeID
	fork, err := ledger.Open(forkDir, []byte("test passphrase"), ledger.Options{})
	if err != nil {
		t.Fatalf("open fork copy: %v", err)
	}
	defer fork.Close()
	forkLines := appendThings(t, fork, "fork", 1)
	n.pin(t, "peer-b", peer.Identity())

	stranger, _ := newTestLedger(t, ledger.DurabilityBatch)
	strangerLines := appendThings(t, stranger, "s", 1)
	_, forgedKey, _ := ed25519.GenerateKey(rand.Reader)

	// The first entry of B is imported up front, so the fork case has an
	// existing entry to conflict with.
	status, body := n.call(t, client, http.MethodPost, "/v1/import", importToken, mustJSON(t, SignBatch(peer, peerID, peerLines[:1])))
	if status != http.StatusOK {
		t.Fatalf("seed import: status %d: %s", status, body)
	}

	tests := map[string]struct {
		body       []byte
		wantStatus int
		wantReason string
		wantIndex  int // index of the named rejection, -1 for none
	}{
		"malformed JSON": {
			body: []byte(`{"node":"x","lines":[`), wantStatus: http.StatusBadRequest, wantReason: reasonMalformed, wantIndex: -1,
		},
		"unknown field": {
			body: []byte(`{"node":"x","lines":[],"signature":"","extra":1}`), wantStatus: http.StatusBadRequest, wantReason: reasonMalformed, wantIndex: -1,
		},
		"trailing data": {
			body: append(mustJSON(t, SignBatch(peer, peerID, nil)), []byte(` {}`)...), wantStatus: http.StatusBadRequest, wantReason: reasonMalformed, wantIndex: -1,
		},
		"oversized body": {
			body: mustJSON(t, SignBatch(peer, peerID, [][]byte{bytes.Repeat([]byte("a"), 300<<10)})), wantStatus: http.StatusRequestEntityTooLarge, wantReason: reasonTooLarge, wantIndex: -1,
		},
		"too many entries": {
			body: mustJSON(t, SignBatch(peer, peerID, repeatLines(peerLines[1], 51))), wantStatus: http.StatusRequestEntityTooLarge, wantReason: reasonTooLarge, wantIndex: -1,
		},
		"unpinned sender": {
			body: mustJSON(t, SignBatch(stranger, stranger.Identity().NodeID, strangerLines)), wantStatus: http.StatusUnprocessableEntity, wantReason: reasonUnknownSender, wantIndex: -1,
		},
		"forged batch signature": {
			body: mustJSON(t, SignBatch(forgingSigner{forgedKey}, peerID, peerLines[1:])), wantStatus: http.StatusUnprocessableEntity, wantReason: reasonBatchSignature, wantIndex: -1,
		},
		"batch changed after signing": {
			body: mustJSON(t, func() Batch {
				b := SignBatch(peer, peerID, peerLines[1:])
				b.Lines = b.Lines[:1]
				return b
			}()), wantStatus: http.StatusUnprocessableEntity, wantReason: reasonBatchSignature, wantIndex: -1,
		},
		"tampered entry": {
			body: mustJSON(t, SignBatch(peer, peerID, [][]byte{peerLines[1], tamper(t, peerLines[2])})), wantStatus: http.StatusUnprocessableEntity, wantReason: reasonInvalidEntry, wantIndex: 1,
		},
		"gap": {
			body: mustJSON(t, SignBatch(peer, peerID, peerLines[2:])), wantStatus: http.StatusUnprocessableEntity, wantReason: reasonGap, wantIndex: 0,
		},
		"fork": {
			body: mustJSON(t, SignBatch(fork, peerID, forkLines)), wantStatus: http.StatusConflict, wantReason: reasonFork, wantIndex: 0,
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			before := n.ledgerBytes(t)
			status, body := n.call(t, client, http.MethodPost, "/v1/import", importToken, tt.body)
			if status != tt.wantStatus {
				t.Fatalf("status = %d, want %d; body %s", status, tt.wantStatus, body)
			}
			var resp ImportResponse
			if err := json.Unmarshal(body, &resp); err != nil {
				t.Fatalf("response is not JSON: %v: %s", err, body)
			}
			if resp.Reason != tt.wantReason {
				t.Fatalf("reason = %q, want %q; error %q", resp.Reason, tt.wantReason, resp.Error)
			}
			if resp.Error == "" {
				t.Fatal("response has no error message")
			}
			if resp.Accepted != 0 {
				t.Fatalf("accepted = %d, want 0", resp.Accepted)
			}
			if tt.wantIndex >= 0 {
				if resp.Rejected != 1 || len(resp.Rejections) != 1 || resp.Rejections[0].Index != tt.wantIndex {
					t.Fatalf("rejections = %+v (rejected %d), want one at index %d", resp.Rejections, resp.Rejected, tt.wantIndex)
				}
			}
			if tt.wantReason == reasonFork {
				if resp.Fork == nil || resp.Fork.Existing != string(peerLines[0]) || resp.Fork.Incoming != string(forkLines[0]) {
					t.Fatalf("fork evidence = %+v, want both first lines", resp.Fork)
				}
			}
			if after := n.ledgerBytes(t); !bytes.Equal(before, after) {
				t.Fatalf("ledger file changed: %d bytes before, %d after", len(before), len(after))
			}
		})
	}
}

func TestServer_ImportReplayIsIdempotent(t *testing.T) {
	n := startTestNode(t, testNodeOptions{})
	client := n.httpClient(t)
	peer, _ := newTestLedger(t, ledger.DurabilityBatch)
	lines := appendThings(t, peer, "b", 5)
	n.pin(t, "peer-b", peer.Identity())
	body := mustJSON(t, SignBatch(peer, peer.Identity().NodeID, lines))

	status, first := n.call(t, client, http.MethodPost, "/v1/import", n.token[ScopeImport], body)
	if status != http.StatusOK {
		t.Fatalf("first import: status %d: %s", status, first)
	}
	var resp ImportResponse
	if err := json.Unmarshal(first, &resp); err != nil || resp.Accepted != 5 || resp.Duplicates != 0 {
		t.Fatalf("first import = %+v (%v), want 5 accepted", resp, err)
	}
	afterFirst := n.ledgerBytes(t)

	status, second := n.call(t, client, http.MethodPost, "/v1/import", n.token[ScopeImport], body)
	if status != http.StatusOK {
		t.Fatalf("replayed import: status %d: %s", status, second)
	}
	resp = ImportResponse{}
	if err := json.Unmarshal(second, &resp); err != nil || resp.Accepted != 0 || resp.Duplicates != 5 {
		t.Fatalf("replayed import = %+v (%v), want 5 duplicates", resp, err)
	}
	if !bytes.Equal(afterFirst, n.ledgerBytes(t)) {
		t.Fatal("the replayed batch changed the ledger file")
	}

	// The imported entries keep their provenance: origin and actor of B.
	status, got := n.call(t, client, http.MethodGet, "/v1/things/b-a/history", n.token[ScopeRead], nil)
	if status != http.StatusOK {
		t.Fatalf("history: status %d: %s", status, got)
	}
	var history HistoryResponse
	if err := json.Unmarshal(got, &history); err != nil {
		t.Fatalf("decode history: %v", err)
	}
	for _, v := range history.Versions {
		if v.Origin != peer.Identity().NodeID || v.Actor != "test" || !v.SignatureValid {
			t.Fatalf("imported version %+v lost its provenance", v)
		}
	}
}

func TestServer_ExportImportRoundTrip(t *testing.T) {
	a := startTestNode(t, testNodeOptions{})
	b := startTestNode(t, testNodeOptions{limits: Limits{MaxBatchEntries: 4}})
	clientA, clientB := a.httpClient(t), b.httpClient(t)
	for i := range 6 {
		status, body := b.call(t, clientB, http.MethodPut, "/v1/things/t"+itoa(i), b.token[ScopeWrite], []byte(`{"data":{"i":1}}`))
		if status != http.StatusOK {
			t.Fatalf("put on B: %d %s", status, body)
		}
	}
	a.pin(t, "b", b.ledger.Identity())

	// Page through B's export with the cursor and push each page to A.
	cursor := ledger.Cursor{}
	pages := 0
	for {
		status, body := b.call(t, clientB, http.MethodGet, "/v1/export?after="+FormatCursor(cursor), b.token[ScopeExport], nil)
		if status != http.StatusOK {
			t.Fatalf("export: %d %s", status, body)
		}
		var page ExportResponse
		if err := json.Unmarshal(body, &page); err != nil {
			t.Fatalf("decode export: %v", err)
		}
		if !page.Verify(b.ledger.Identity().SigningKey) {
			t.Fatal("export batch signature does not verify")
		}
		status, body = a.call(t, clientA, http.MethodPost, "/v1/import", a.token[ScopeImport], mustJSON(t, page.Batch))
		if status != http.StatusOK {
			t.Fatalf("import page %d: %d %s", pages, status, body)
		}
		pages++
		for _, line := range page.Lines {
			e, err := ledger.DecodeEntry([]byte(line))
			if err != nil {
				t.Fatalf("decode exported line: %v", err)
			}
			cursor[e.Origin] = e.Sequence
		}
		if !page.More {
			break
		}
	}
	if pages < 2 {
		t.Fatalf("export of 6 entries with the limit 4 took %d pages, want 2 or more", pages)
	}
	if got, want := a.ledger.Heads(), b.ledger.Heads(); len(got) != 1 || got[0] != want[0] {
		t.Fatalf("heads of A = %+v, want B's %+v", got, want)
	}
}

func TestServer_HeadsAreSigned(t *testing.T) {
	n := startTestNode(t, testNodeOptions{})
	client := n.httpClient(t)
	appendThings(t, n.ledger, "h", 2)
	status, body := n.call(t, client, http.MethodGet, "/v1/heads", n.token[ScopeExport], nil)
	if status != http.StatusOK {
		t.Fatalf("heads: %d %s", status, body)
	}
	var heads SignedHeads
	if err := json.Unmarshal(body, &heads); err != nil {
		t.Fatalf("decode: %v", err)
	}
	if !heads.Verify(n.ledger.Identity().SigningKey) {
		t.Fatal("heads signature does not verify")
	}
	if len(heads.Heads) != 1 || heads.Heads[0].Sequence != 2 {
		t.Fatalf("heads = %+v, want one origin at sequence 2", heads.Heads)
	}
	heads.Heads[0].Sequence = 1
	if heads.Verify(n.ledger.Identity().SigningKey) {
		t.Fatal("heads signature still verifies after a change")
	}
}

func repeatLines(line []byte, count int) [][]byte {
	lines := make([][]byte, count)
	for i := range lines {
		lines[i] = line
	}
	return lines
}

func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatalf("read %s: %v", src, err)
	}
	for _, e := range entries {
		if e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), data, 0o600); err != nil {
			t.Fatalf("write: %v", err)
		}
	}
}
