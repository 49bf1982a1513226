package node

import (
	"context"
	"crypto/tls"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/thingdb/thingdb/internal/pki"
)

func TestCertReloader_RotationWithoutRestart(t *testing.T) {
	n := startTestNode(t, testNodeOptions{})
	oldClient := n.httpClient(t)
	if status, _ := n.call(t, oldClient, http.MethodGet, "/healthz", "", nil); status != http.StatusOK {
		t.Fatalf("before rotation: status %d", status)
	}

	// Run the reload loop as serve does, with a short interval.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go reloadLoop(ctx, 20*time.Millisecond, testLogger(t), n.server.metrics, n.tokens, n.pins, n.certs)

	// Rotate to a certificate from a new CA, as a CA change would.
	newCA := testCA(t)
	writeServerCert(t, newCA, n.tlsDir)
	pool, err := pki.CertPool(newCA.CertPEM)
	if err != nil {
		t.Fatalf("CA pool: %v", err)
	}
	newClient := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, DisableKeepAlives: true}, Timeout: 5 * time.Second}

	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := newClient.Get(n.url + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("after rotation: status %d", resp.StatusCode)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("client pinned to the new CA still fails after 5s: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// A client that trusts only the old CA now fails the handshake.
	oldOnly := &http.Client{Transport: &http.Transport{TLSClientConfig: oldClient.Transport.(*http.Transport).TLSClientConfig.Clone(), DisableKeepAlives: true}, Timeout: 5 * time.Second}
	if resp, err := oldOnly.Get(n.url + "/healthz"); err == nil {
		resp.Body.Close()
		t.Fatal("client pinned to the old CA still connects after rotation")
	}
}

func TestCertReloader_KeepsOldOnBadFiles(t *testing.T) {
	ca := testCA(t)
	dir := t.TempDir()
	writeServerCert(t, ca, dir)
	r, err := NewCertReloader(dir, ClientAuthNone)
	if err != nil {
		t.Fatalf("NewCertReloader: %v", err)
	}
	before := r.Leaf()

	// A certificate without its matching key, as halfway through an update.
	other, err := pki.Issue(ca, pki.IssueRequest{CommonName: "other", Server: true, Validity: time.Hour})
	if err != nil {
		t.Fatalf("issue: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, tlsCertFile), other.CertPEM, 0o600); err != nil {
		t.Fatalf("write: %v", err)
	}
	if changed, err := r.Reload(); err == nil || changed {
		t.Fatalf("Reload = %v, %v; want an error", changed, err)
	}
	if !r.Leaf().Equal(before) {
		t.Fatal("a failed reload replaced the served certificate")
	}
}

func TestCertReloader_ClientAuth(t *testing.T) {
	n := startTestNode(t, testNodeOptions{clientAuth: ClientAuthRequire})
	pool, err := pki.CertPool(n.ca.CertPEM)
	if err != nil {
		t.Fatalf("CA pool: %v", err)
	}
	clientCert, err := pki.Issue(n.ca, pki.IssueRequest{CommonName: "client", Client: true, Validity: time.Hour})
	if err != nil {
		t.Fatalf("issue client certificate: %v", err)
	}
	pair, err := tls.X509KeyPair(clientCert.CertPEM, clientCert.KeyPEM)
	if err != nil {
		t.Fatalf("key pair: %v", err)
	}
	strangerCA := testCA(t)
	stranger, err := pki.Issue(strangerCA, pki.IssueRequest{CommonName: "stranger", Client: true, Validity: time.Hour})
	if err != nil {
		t.Fatalf("issue: %v", err)
	}
	strangerPair, err := tls.X509KeyPair(stranger.CertPEM, stranger.KeyPEM)
	if err != nil {
		t.Fatalf("key pair: %v", err)
	}

	tests := map[string]struct {
		certs  []tls.Certificate
		wantOK bool
	}{
		"no client certificate":      {certs: nil, wantOK: false},
		"certificate from other CA":  {certs: []tls.Certificate{strangerPair}, wantOK: false},
		"certificate from node's CA": {certs: []tls.Certificate{pair}, wantOK: true},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: tt.certs, MinVersion: tls.VersionTLS12}}, Timeout: 5 * time.Second}
			resp, err := client.Get(n.url + "/healthz")
			if err == nil {
				resp.Body.Close()
			}
			if (err == nil) != tt.wantOK {
				t.Fatalf("error = %v, want success %v", err, tt.wantOK)
			}
		})
	}
}

func TestCertReloader_TLS11Rejected(t *testing.T) {
	n := startTestNode(t, testNodeOptions{})
	pool, _ := pki.CertPool(n.ca.CertPEM)
	conn, err := tls.Dial("tcp", strings.TrimPrefix(n.url, "https://"), &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})
	if err == nil {
		conn.Close()
		t.Fatal("a TLS 1.1 handshake succeeded")
	}
}
