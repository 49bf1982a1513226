package node

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/thingdb/thingdb/internal/syncstatus"
	"github.com/thingdb/thingdb/ledger"
)

func TestResolveMap_Set(t *testing.T) {
	tests := map[string]struct {
		value   string
		want    map[string]string
		wantErr string
	}{
		"address keeps the port":  {value: "node-b-0.b.svc:8443=127.0.0.2", want: map[string]string{"node-b-0.b.svc:8443": "127.0.0.2:8443"}},
		"address with a port":     {value: "Node-B:8443=127.0.0.1:18443", want: map[string]string{"node-b:8443": "127.0.0.1:18443"}},
		"comma-separated":         {value: "a:1=127.0.0.1:2, b:3=127.0.0.1", want: map[string]string{"a:1": "127.0.0.1:2", "b:3": "127.0.0.1:3"}},
		"IPv6 address":            {value: "a:8443=[::1]:9443", want: map[string]string{"a:8443": "[::1]:9443"}},
		"missing address":         {value: "a:8443", wantErr: "use HOST:PORT=ADDR"},
		"missing port":            {value: "a=127.0.0.1", wantErr: "use HOST:PORT=ADDR"},
		"port out of range":       {value: "a:70000=127.0.0.1", wantErr: "use HOST:PORT=ADDR"},
		"empty address":           {value: "a:8443=", wantErr: "address after = is empty"},
		"address port not number": {value: "a:8443=127.0.0.1:x", wantErr: "use an address"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			var m ResolveMap
			err := m.Set(tt.value)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Set(%q) error = %v, want one containing %q", tt.value, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Set(%q): %v", tt.value, err)
			}
			if len(m) != len(tt.want) {
				t.Fatalf("Set(%q) = %v, want %v", tt.value, m, tt.want)
			}
			for key, addr := range tt.want {
				if m[key] != addr {
					t.Fatalf("Set(%q)[%q] = %q, want %q", tt.value, key, m[key], addr)
				}
			}
		})
	}
}

func TestRetryDelay(t *testing.T) {
	tests := map[string]struct {
		interval time.Duration
		failures int
		random   float64
		want     time.Duration
	}{
		"success, low jitter":          {interval: 30 * time.Second, failures: 0, random: 0, want: 27 * time.Second},
		"success, high jitter":         {interval: 30 * time.Second, failures: 0, random: 1, want: 33 * time.Second},
		"first failure":                {interval: 30 * time.Second, failures: 1, random: 1, want: 30 * time.Second},
		"third failure doubles twice":  {interval: 30 * time.Second, failures: 3, random: 1, want: 120 * time.Second},
		"capped at five minutes":       {interval: 30 * time.Second, failures: 20, random: 1, want: 5 * time.Minute},
		"capped at 32 intervals":       {interval: 100 * time.Millisecond, failures: 20, random: 1, want: 3200 * time.Millisecond},
		"long interval is its own cap": {interval: time.Hour, failures: 5, random: 1, want: time.Hour},
		"jitter halves at most":        {interval: 30 * time.Second, failures: 3, random: 0, want: 60 * time.Second},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if got := retryDelay(tt.interval, tt.failures, tt.random); got != tt.want {
				t.Fatalf("retryDelay(%s, %d, %v) = %s, want %s", tt.interval, tt.failures, tt.random, got, tt.want)
			}
		})
	}
}

func TestLineOriginSequence(t *testing.T) {
	l, _ := newTestLedger(t, ledger.DurabilityNone)
	lines := appendThings(t, l, "x", 2)
	origin, seq, ok := lineOriginSequence(lines[1])
	if !ok || origin != l.Identity().NodeID || seq != 2 {
		t.Fatalf("lineOriginSequence = %q, %d, %v; want %s, 2, true", origin, seq, ok, l.Identity().NodeID)
	}
	for _, bad := range []string{``, `{"v":2,"origin":"ab","seq":1}`, `{"v":1,"origin":"","seq":1}`, `{"v":1,"origin":"ab","seq":x}`} {
		if _, _, ok := lineOriginSequence([]byte(bad)); ok {
			t.Fatalf("lineOriginSequence(%q) accepted it", bad)
		}
	}
}

// TestSyncer_AttemptReasons runs single attempts against an in-process node
// over TLS and checks the outcome and reason of each.
func TestSyncer_AttemptReasons(t *testing.T) {
	peerNode := startTestNode(t, testNodeOptions{})
	appendThings(t, peerNode.ledger, "p", 5)
	other, _ := newTestLedger(t, ledger.DurabilityNone)
	otherCA := testCA(t)

	dir := t.TempDir()
	write := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	caFile := write("ca.crt", string(peerNode.ca.CertPEM))
	wrongCAFile := write("wrong-ca.crt", string(otherCA.CertPEM))
	tokenFile := write("token", peerNode.token[ScopeExport])
	readTokenFile := write("read-token", peerNode.token[ScopeRead])
	id := peerNode.ledger.Identity()
	good := Peer{Name: "p", URL: peerNode.url, NodeID: id.NodeID, SigningKey: id.SigningKey, CAFile: caFile, TokenFile: tokenFile}

	tests := map[string]struct {
		peer       func(Peer) Peer
		wantReason string
		wantPulled uint64
	}{
		"unreachable":                {peer: func(p Peer) Peer { p.URL = "https://127.0.0.1:1"; return p }, wantReason: syncstatus.ReasonUnreachable},
		"wrong CA":                   {peer: func(p Peer) Peer { p.CAFile = wrongCAFile; return p }, wantReason: syncstatus.ReasonTLS},
		"missing CA file":            {peer: func(p Peer) Peer { p.CAFile = filepath.Join(dir, "absent.crt"); return p }, wantReason: syncstatus.ReasonConfig},
		"token without export scope": {peer: func(p Peer) Peer { p.TokenFile = readTokenFile; return p }, wantReason: syncstatus.ReasonUnauthorized},
		"no token":                   {peer: func(p Peer) Peer { p.TokenFile = ""; return p }, wantReason: syncstatus.ReasonUnauthorized},
		"pinned key of another node": {peer: func(p Peer) Peer {
			p.NodeID, p.SigningKey = other.Identity().NodeID, other.Identity().SigningKey
			return p
		}, wantReason: syncstatus.ReasonKeyMismatch},
		"pulls everything": {peer: func(p Peer) Peer { return p }, wantPulled: 5},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			local, _ := newTestLedger(t, ledger.DurabilityNone)
			pins, err := NewPinStore("")
			if err != nil {
				t.Fatal(err)
			}
			s := NewSyncer(SyncOptions{Ledger: local, Pins: pins, Logger: testLogger(t)})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			result := s.syncPeer(ctx, tt.peer(good), 2)

			reason := ""
			if result.err != nil {
				reason = result.err.reason
			}
			if reason != tt.wantReason {
				t.Fatalf("reason = %q (%v), want %q", reason, result.err, tt.wantReason)
			}
			if result.accepted != tt.wantPulled {
				t.Fatalf("accepted %d entries, want %d", result.accepted, tt.wantPulled)
			}
			if tt.wantReason == "" && result.lag != 0 {
				t.Fatalf("lag %d after a full pull", result.lag)
			}
			if result.err != nil && strings.Contains(result.err.Error(), peerNode.token[ScopeExport]) {
				t.Fatal("the error shows the token")
			}
		})
	}
}
