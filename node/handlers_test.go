package node

import (
	"encoding/json"
	"net/http"
	"testing"
)

// TestPutThingActorAndResponse checks that a put over HTTPS records the
// token's name as the actor and returns where the entry landed.
func TestPutThingActorAndResponse(t *testing.T) {
	n := startTestNode(t, testNodeOptions{})
	client := n.httpClient(t)

	status, body := n.call(t, client, http.MethodPut, "/v1/things/lamp", n.token[ScopeWrite], []byte(`{"data": {"on": true}}`))
	if status != http.StatusOK {
		t.Fatalf("put: status %d: %s", status, body)
	}
	var got EntryInfoJSON
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("decode put response %s: %v", body, err)
	}

	history, err := n.ledger.History("lamp")
	if err != nil {
		t.Fatalf("read history: %v", err)
	}
	if len(history) != 1 {
		t.Fatalf("history has %d versions, want 1", len(history))
	}
	v := history[0]
	if v.Actor != string(ScopeWrite)+"-only" {
		t.Errorf("actor %q, want the token name %q", v.Actor, string(ScopeWrite)+"-only")
	}
	if string(v.Data) != `{"on":true}` {
		t.Errorf("data %s, want {\"on\":true}", v.Data)
	}
	want := EntryInfoJSON{Origin: v.Origin, Sequence: v.Sequence, Hash: v.Hash, Time: v.Time, KeyID: v.KeyID}
	if !got.Time.Equal(want.Time) {
		t.Errorf("response time %v, want %v", got.Time, want.Time)
	}
	got.Time = want.Time
	if got != want {
		t.Errorf("put response %+v, want %+v", got, want)
	}
}
