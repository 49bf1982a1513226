package node

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/thingdb/thingdb/internal/atomicfile"
	"github.com/thingdb/thingdb/internal/pki"
	"github.com/thingdb/thingdb/ledger"
)

// testKDF keeps Argon2id cheap in tests; production uses ledger.DefaultKDF.
var testKDF = ledger.KDFParams{Time: 1, MemoryKiB: 1024, Threads: 1}

// newTestLedger creates a ledger in a temporary directory and verifies it
// when the test ends.
func newTestLedger(t testing.TB, durability ledger.Durability) (*ledger.Ledger, string) {
	t.Helper()
	dir := t.TempDir()
	l, err := ledger.Create(dir, []byte("test passphrase"), ledger.Options{KDF: testKDF, Durability: durability})
	if err != nil {
		t.Fatalf("create ledger: %v", err)
	}
	t.Cleanup(func() {
		if _, err := l.Verify(context.Background()); err != nil && !errors.Is(err, ledger.ErrClosed) {
			t.Errorf("verify ledger at cleanup: %v", err)
		}
		_ = l.Close()
	})
	return l, dir
}

// testCA creates a CA and writes a server certificate for 127.0.0.1 into
// dir with the file names --tls-dir reads.
func testCA(t testing.TB) *pki.KeyPair {
	t.Helper()
	ca, err := pki.NewCA(pki.CARequest{CommonName: "test-ca", Validity: time.Hour})
	if err != nil {
		t.Fatalf("create CA: %v", err)
	}
	return ca
}

func writeServerCert(t testing.TB, ca *pki.KeyPair, dir string) {
	t.Helper()
	leaf, err := pki.Issue(ca, pki.IssueRequest{CommonName: "node", DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, Server: true, Validity: time.Hour})
	if err != nil {
		t.Fatalf("issue server certificate: %v", err)
	}
	for name, data := range map[string][]byte{tlsKeyFile: leaf.KeyPEM, tlsCertFile: leaf.CertPEM, tlsCAFile: ca.CertPEM} {
		if err := atomicfile.Write(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatalf("write %s: %v", name, err)
		}
	}
}

// testNode is a node served over TLS on a loopback port.
type testNode struct {
	ledger   *ledger.Ledger
	dataDir  string
	tokenDir string
	tlsDir   string
	peers    string
	ca       *pki.KeyPair
	server   *Server
	certs    *CertReloader
	tokens   *TokenStore
	pins     *PinStore
	url      string
	token    map[Scope]string // a token with exactly that scope
}

type testNodeOptions struct {
	limits     Limits
	clientAuth ClientAuth
	durability ledger.Durability
}

func startTestNode(t testing.TB, opts testNodeOptions) *testNode {
	t.Helper()
	l, dataDir := newTestLedger(t, opts.durability)
	n := &testNode{ledger: l, dataDir: dataDir, tokenDir: t.TempDir(), tlsDir: t.TempDir(), ca: testCA(t), token: map[Scope]string{}}
	n.peers = filepath.Join(t.TempDir(), "peers.json")

	for _, scope := range AllScopes {
		token, err := AddToken(n.tokenDir, string(scope)+"-only", []Scope{scope})
		if err != nil {
			t.Fatalf("add token: %v", err)
		}
		n.token[scope] = token
	}
	writeServerCert(t, n.ca, n.tlsDir)

	var err error
	if n.tokens, err = NewTokenStore(n.tokenDir); err != nil {
		t.Fatalf("load tokens: %v", err)
	}
	if n.pins, err = NewPinStore(n.peers); err != nil {
		t.Fatalf("load peers: %v", err)
	}
	clientAuth := opts.clientAuth
	if clientAuth == "" {
		clientAuth = ClientAuthNone
	}
	if n.certs, err = NewCertReloader(n.tlsDir, clientAuth); err != nil {
		t.Fatalf("load TLS: %v", err)
	}
	n.server = NewServer(ServerOptions{Ledger: l, Tokens: n.tokens, Pins: n.pins, Limits: opts.limits, Logger: testLogger(t)})

	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	httpServer := &http.Server{Handler: n.server.Handler(), ReadHeaderTimeout: 5 * time.Second, ErrorLog: slog.NewLogLogger(testLogger(t).Handler(), slog.LevelDebug)}
	go func() { _ = httpServer.Serve(tls.NewListener(listener, n.certs.TLSConfig())) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = httpServer.Shutdown(ctx)
	})
	n.url = "https://" + listener.Addr().String()
	return n
}

// testLogger writes the node's logs to the test log.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// httpClient trusts the node's CA.
func (n *testNode) httpClient(t testing.TB) *http.Client {
	t.Helper()
	pool, err := pki.CertPool(n.ca.CertPEM)
	if err != nil {
		t.Fatalf("CA pool: %v", err)
	}
	transport := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, MaxIdleConnsPerHost: 64}
	t.Cleanup(transport.CloseIdleConnections)
	return &http.Client{Transport: transport, Timeout: 30 * time.Second}
}

// call sends a request and returns the status and body; a transport error
// fails the test.
func (n *testNode) call(t testing.TB, client *http.Client, method, path, token string, body []byte) (int, []byte) {
	t.Helper()
	status, data, err := n.do(client, method, path, token, body)
	if err != nil {
		t.Fatal(err)
	}
	return status, data
}

// do is call for goroutines other than the test's, which must not call
// t.Fatal.
func (n *testNode) do(client *http.Client, method, path, token string, body []byte) (int, []byte, error) {
	var reader io.Reader
	if body != nil {
		reader = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, n.url+path, reader)
	if err != nil {
		return 0, nil, fmt.Errorf("build request: %w", err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, fmt.Errorf("read response of %s %s: %w", method, path, err)
	}
	return resp.StatusCode, data, nil
}

// pin adds a ledger's identity to the node's peer file and reloads it.
func (n *testNode) pin(t testing.TB, name string, id ledger.Identity) {
	t.Helper()
	pf := &PeerFile{}
	if data, err := os.ReadFile(n.peers); err == nil {
		if pf, err = ParsePeerFile(data, ""); err != nil {
			t.Fatalf("parse peer file: %v", err)
		}
	}
	pf.Peers = append(pf.Peers, Peer{Name: name, URL: "https://" + name + ".invalid:8443", NodeID: id.NodeID, SigningKey: id.SigningKey, RecipientKey: id.RecipientKey})
	data, err := MarshalPeerFile(pf)
	if err != nil {
		t.Fatalf("encode peer file: %v", err)
	}
	if err := atomicfile.Write(n.peers, data, 0o600); err != nil {
		t.Fatalf("write peer file: %v", err)
	}
	if _, err := n.pins.Reload(); err != nil {
		t.Fatalf("reload peer file: %v", err)
	}
}

func (n *testNode) ledgerBytes(t testing.TB) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(n.dataDir, "ledger.ndjson"))
	if err != nil {
		t.Fatalf("read ledger file: %v", err)
	}
	return data
}

// appendThings appends count entries to l and returns their lines in file
// order.
func appendThings(t testing.TB, l *ledger.Ledger, prefix string, count int) [][]byte {
	t.Helper()
	for i := range count {
		data, _ := json.Marshal(map[string]int{"n": i})
		if _, err := l.Append(context.Background(), ledger.AppendRequest{Thing: prefix + "-" + itoa(i%7), Actor: "test", Data: data}); err != nil {
			t.Fatalf("append: %v", err)
		}
	}
	return exportLines(t, l, nil)
}

func exportLines(t testing.TB, l *ledger.Ledger, after ledger.Cursor) [][]byte {
	t.Helper()
	var lines [][]byte
	err := l.Export(context.Background(), ledger.ExportOptions{After: after}, func(line []byte) error {
		lines = append(lines, append([]byte(nil), line...))
		return nil
	})
	if err != nil {
		t.Fatalf("export: %v", err)
	}
	return lines
}

func itoa(i int) string { return string(rune('a' + i)) }

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("encode JSON: %v", err)
	}
	return data
}
