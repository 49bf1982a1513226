package node

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/thingdb/thingdb/ledger"
)

// TestServer_LoadWithImport runs concurrent writers and readers over HTTPS
// while batches from a peer are imported, then checks that every
// acknowledged write is readable and the ledger verifies. It is bounded in
// count (writers x writesEach puts, importEntries entries) and in time.
func TestServer_LoadWithImport(t *testing.T) {
	const (
		writers       = 8
		writesEach    = 25
		readers       = 4
		importEntries = 300
		importPage    = 50
		timeLimit     = 90 * time.Second
	)
	if testing.Short() {
		t.Skip("load test skipped in -short mode")
	}
	n := startTestNode(t, testNodeOptions{})
	client := n.httpClient(t)
	peer, _ := newTestLedger(t, ledger.DurabilityNone)
	peerLines := appendThings(t, peer, "peer", importEntries)
	n.pin(t, "peer", peer.Identity())

	ctx, cancel := context.WithTimeout(context.Background(), timeLimit)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, writers+readers+1)

	// Writers: each put that returns 200 is acknowledged and recorded.
	type ack struct {
		thing string
		info  EntryInfoJSON
		data  string
	}
	acks := make(chan ack, writers*writesEach)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range writesEach {
				if ctx.Err() != nil {
					errs <- fmt.Errorf("writer %d stopped at the time limit after %d puts", w, i)
					return
				}
				thing := fmt.Sprintf("w%d-t%d", w, i%5)
				data := fmt.Sprintf(`{"writer":%d,"i":%d}`, w, i)
				status, body, err := n.do(client, http.MethodPut, "/v1/things/"+thing, n.token[ScopeWrite], []byte(`{"data":`+data+`}`))
				if err != nil {
					errs <- err
					return
				}
				if status != http.StatusOK {
					errs <- fmt.Errorf("writer %d put %d: status %d: %s", w, i, status, body)
					return
				}
				var info EntryInfoJSON
				if err := json.Unmarshal(body, &info); err != nil {
					errs <- fmt.Errorf("writer %d: decode: %w", w, err)
					return
				}
				acks <- ack{thing, info, data}
			}
		}()
	}

	// Readers: read the things the writers touch until the writers finish.
	writersDone := make(chan struct{})
	var readerWG sync.WaitGroup
	for r := range readers {
		readerWG.Add(1)
		go func() {
			defer readerWG.Done()
			for i := 0; ; i++ {
				select {
				case <-writersDone:
					return
				case <-ctx.Done():
					return
				default:
				}
				path := fmt.Sprintf("/v1/things/w%d-t%d", (r+i)%writers, i%5)
				status, body, err := n.do(client, http.MethodGet, path, n.token[ScopeRead], nil)
				if err != nil {
					errs <- err
					return
				}
				if status != http.StatusOK && status != http.StatusNotFound {
					errs <- fmt.Errorf("reader %d: %s: status %d: %s", r, path, status, body)
					return
				}
			}
		}()
	}

	// Import: the peer's entries in pages while the writers run.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for start := 0; start < len(peerLines); start += importPage {
			page := peerLines[start:min(start+importPage, len(peerLines))]
			batch, err := json.Marshal(SignBatch(peer, peer.Identity().NodeID, page))
			if err != nil {
				errs <- err
				return
			}
			status, body, err := n.do(client, http.MethodPost, "/v1/import", n.token[ScopeImport], batch)
			if err != nil {
				errs <- err
				return
			}
			if status != http.StatusOK {
				errs <- fmt.Errorf("import page at %d: status %d: %s", start, status, body)
				return
			}
		}
	}()

	wg.Wait()
	close(writersDone)
	readerWG.Wait()
	close(errs)
	close(acks)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}

	// Every acknowledged write is in its thing's history with its data.
	count := 0
	for a := range acks {
		count++
		history, err := n.ledger.History(a.thing)
		if err != nil {
			t.Fatalf("history of %s: %v", a.thing, err)
		}
		found := false
		for _, v := range history {
			if v.Origin == a.info.Origin && v.Sequence == a.info.Sequence {
				found = string(v.Data) == a.data
			}
		}
		if !found {
			t.Fatalf("acknowledged write %s sequence %d is missing or has other data", a.thing, a.info.Sequence)
		}
	}
	if count != writers*writesEach {
		t.Fatalf("%d acknowledged writes, want %d", count, writers*writesEach)
	}
	report, err := n.ledger.Verify(context.Background())
	if err != nil {
		t.Fatalf("verify after load: %v", err)
	}
	if want := writers*writesEach + importEntries; report.Entries != want {
		t.Fatalf("verify saw %d entries, want %d", report.Entries, want)
	}
}
