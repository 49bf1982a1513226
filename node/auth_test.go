package node

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/thingdb/thingdb/ledger"
)

func TestServer_AuthMatrix(t *testing.T) {
	n := startTestNode(t, testNodeOptions{})
	client := n.httpClient(t)

	// One existing thing so that reads of it succeed with the right scope.
	status, body := n.call(t, client, http.MethodPut, "/v1/things/lamp", n.token[ScopeWrite], []byte(`{"data":{"on":true}}`))
	if status != http.StatusOK {
		t.Fatalf("seed put: status %d: %s", status, body)
	}
	peer, _ := newTestLedger(t, ledger.DurabilityBatch)
	n.pin(t, "peer", peer.Identity())
	emptyBatch := mustJSON(t, SignBatch(peer, peer.Identity().NodeID, nil))

	endpoints := []struct {
		method, path string
		scope        Scope // empty: no token needed
		body         []byte
	}{
		{http.MethodGet, "/v1/identity", "", nil},
		{http.MethodPut, "/v1/things/lamp", ScopeWrite, []byte(`{"data":{"on":false}}`)},
		{http.MethodGet, "/v1/things/lamp", ScopeRead, nil},
		{http.MethodGet, "/v1/things/lamp/history", ScopeRead, nil},
		{http.MethodGet, "/v1/heads", ScopeExport, nil},
		{http.MethodGet, "/v1/export", ScopeExport, nil},
		{http.MethodPost, "/v1/import", ScopeImport, emptyBatch},
		{http.MethodGet, "/v1/sync/status", ScopeRead, nil},
		{http.MethodGet, "/healthz", "", nil},
		{http.MethodGet, "/readyz", "", nil},
		{http.MethodGet, "/metrics", "", nil},
	}
	wrongScope := func(scope Scope) Scope {
		// read is wrong for every scoped endpoint except the read ones.
		if scope == ScopeRead {
			return ScopeWrite
		}
		return ScopeRead
	}

	for _, ep := range endpoints {
		cases := map[string]struct {
			token      string
			wantStatus int
			wantReason string
		}{
			"no token":    {token: "", wantStatus: http.StatusUnauthorized, wantReason: "unauthenticated"},
			"bad token":   {token: "thingdb_not-a-real-token", wantStatus: http.StatusUnauthorized, wantReason: "unauthenticated"},
			"wrong scope": {token: n.token[wrongScope(ep.scope)], wantStatus: http.StatusForbidden, wantReason: "forbidden"},
			"right scope": {token: n.token[ep.scope], wantStatus: http.StatusOK},
			"admin":       {token: n.token[ScopeAdmin], wantStatus: http.StatusOK},
		}
		for name, tc := range cases {
			t.Run(ep.method+" "+ep.path+"/"+name, func(t *testing.T) {
				want := tc.wantStatus
				if ep.scope == "" {
					// Endpoints without a scope serve every caller.
					want = http.StatusOK
				}
				status, body := n.call(t, client, ep.method, ep.path, tc.token, ep.body)
				if status != want {
					t.Fatalf("status = %d, want %d; body %s", status, want, body)
				}
				if want == http.StatusOK || tc.wantReason == "" {
					return
				}
				var errBody ErrorBody
				if err := json.Unmarshal(body, &errBody); err != nil {
					t.Fatalf("error body is not JSON: %v: %s", err, body)
				}
				if errBody.Reason != tc.wantReason {
					t.Fatalf("reason = %q, want %q", errBody.Reason, tc.wantReason)
				}
				if tc.token != "" && strings.Contains(string(body), tc.token) {
					t.Fatal("the error body repeats the token")
				}
			})
		}
	}
}

func TestServer_TokenReloadAndRevoke(t *testing.T) {
	n := startTestNode(t, testNodeOptions{})
	client := n.httpClient(t)

	token, err := AddToken(n.tokenDir, "late", []Scope{ScopeRead})
	if err != nil {
		t.Fatalf("add token: %v", err)
	}
	if status, _ := n.call(t, client, http.MethodGet, "/v1/sync/status", token, nil); status != http.StatusUnauthorized {
		t.Fatalf("token added after the load: status %d before reload, want 401", status)
	}
	if changed, err := n.tokens.Reload(); err != nil || !changed {
		t.Fatalf("Reload = %v, %v; want a change", changed, err)
	}
	if status, body := n.call(t, client, http.MethodGet, "/v1/sync/status", token, nil); status != http.StatusOK {
		t.Fatalf("after reload: status %d: %s", status, body)
	}

	if err := RevokeToken(n.tokenDir, "late"); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	if _, err := n.tokens.Reload(); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if status, _ := n.call(t, client, http.MethodGet, "/v1/sync/status", token, nil); status != http.StatusUnauthorized {
		t.Fatalf("revoked token: status %d, want 401", status)
	}
}
