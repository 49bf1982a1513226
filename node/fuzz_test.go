package node

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/thingdb/thingdb/ledger"
)

// FuzzImportBody sends arbitrary bodies to POST /v1/import. Every response
// must have a documented status, and the ledger file may change only when
// the import succeeded.
func FuzzImportBody(f *testing.F) {
	peer, _ := newTestLedger(f, ledger.DurabilityNone)
	lines := appendThings(f, peer, "f", 3)
	valid := mustJSON(f, SignBatch(peer, peer.Identity().NodeID, lines))
	f.Add(valid)
	f.Add([]byte(`{"node":"x","lines":[],"signature":""}`))
	f.Add([]byte(`{"node":"","lines":null}`))
	f.Add([]byte(`[]`))
	f.Add(bytes.Replace(valid, []byte(`"ct":"`), []byte(`"ct":"A`), 1))

	l, _ := newTestLedger(f, ledger.DurabilityNone)
	tokens, err := NewTokenStore(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	token, err := AddToken(tokens.Dir(), "importer", []Scope{ScopeImport})
	if err != nil {
		f.Fatal(err)
	}
	if _, err := tokens.Reload(); err != nil {
		f.Fatal(err)
	}
	n := &testNode{ledger: l, peers: filepath.Join(f.TempDir(), "peers.json")}
	if n.pins, err = NewPinStore(n.peers); err != nil {
		f.Fatal(err)
	}
	// Pin the peer so that valid batches reach the ledger.
	n.pin(f, "peer", peer.Identity())
	handler := NewServer(ServerOptions{Ledger: l, Tokens: tokens, Pins: n.pins, Limits: Limits{MaxImportBytes: 1 << 20}}).Handler()

	f.Fuzz(func(t *testing.T, body []byte) {
		before := l.Size()
		req := httptest.NewRequest(http.MethodPost, "/v1/import", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)

		switch rec.Code {
		case http.StatusOK:
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity, http.StatusConflict:
			if l.Size() != before {
				t.Fatalf("status %d but the ledger grew from %d to %d bytes", rec.Code, before, l.Size())
			}
		default:
			t.Fatalf("undocumented status %d: %s", rec.Code, rec.Body.Bytes())
		}
	})
}
