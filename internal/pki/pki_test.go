package pki

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"strings"
	"testing"
	"time"
)

func TestIssue_VerifiesAgainstCA(t *testing.T) {
	ca, err := NewCA(CARequest{CommonName: "test-ca", Validity: time.Hour})
	if err != nil {
		t.Fatalf("NewCA: %v", err)
	}
	pool, err := CertPool(ca.CertPEM)
	if err != nil {
		t.Fatalf("CertPool: %v", err)
	}

	tests := map[string]struct {
		req       IssueRequest
		verifyDNS string // host name checked by Verify; empty skips the check
		usage     x509.ExtKeyUsage
	}{
		"server with DNS and IP": {
			req:       IssueRequest{CommonName: "node-a", DNSNames: []string{"node-a.local"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, Server: true, Validity: time.Hour},
			verifyDNS: "127.0.0.1",
			usage:     x509.ExtKeyUsageServerAuth,
		},
		"client only": {
			req:   IssueRequest{CommonName: "client", Client: true, Validity: time.Hour},
			usage: x509.ExtKeyUsageClientAuth,
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			leaf, err := Issue(ca, tt.req)
			if err != nil {
				t.Fatalf("Issue: %v", err)
			}
			_, err = leaf.Cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: tt.verifyDNS, KeyUsages: []x509.ExtKeyUsage{tt.usage}})
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if _, err := tls.X509KeyPair(leaf.CertPEM, leaf.KeyPEM); err != nil {
				t.Fatalf("PEM output is not a usable TLS key pair: %v", err)
			}
			parsed, err := ParseKeyPair(leaf.CertPEM, leaf.KeyPEM)
			if err != nil {
				t.Fatalf("ParseKeyPair: %v", err)
			}
			if !parsed.Cert.Equal(leaf.Cert) {
				t.Fatal("ParseKeyPair returned a different certificate")
			}
		})
	}
}

func TestIssue_RejectsBadRequests(t *testing.T) {
	ca, err := NewCA(CARequest{CommonName: "test-ca", Validity: time.Hour})
	if err != nil {
		t.Fatalf("NewCA: %v", err)
	}
	leaf, err := Issue(ca, IssueRequest{CommonName: "leaf", Server: true, Validity: time.Hour})
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}

	tests := map[string]struct {
		ca      *KeyPair
		req     IssueRequest
		wantErr string
	}{
		"no names":       {ca: ca, req: IssueRequest{Server: true, Validity: time.Hour}, wantErr: "no common name"},
		"no usage":       {ca: ca, req: IssueRequest{CommonName: "x", Validity: time.Hour}, wantErr: "neither server nor client"},
		"zero validity":  {ca: ca, req: IssueRequest{CommonName: "x", Server: true}, wantErr: "validity 0s"},
		"leaf as CA":     {ca: leaf, req: IssueRequest{CommonName: "x", Server: true, Validity: time.Hour}, wantErr: "not a CA"},
		"missing the CA": {ca: nil, req: IssueRequest{CommonName: "x", Server: true, Validity: time.Hour}, wantErr: "missing"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := Issue(tt.ca, tt.req)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Issue error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestIssue_CapsValidityAtCA(t *testing.T) {
	ca, err := NewCA(CARequest{CommonName: "short-ca", Validity: time.Hour})
	if err != nil {
		t.Fatalf("NewCA: %v", err)
	}
	leaf, err := Issue(ca, IssueRequest{CommonName: "leaf", Server: true, Validity: 24 * time.Hour})
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	if leaf.Cert.NotAfter.After(ca.Cert.NotAfter) {
		t.Fatalf("leaf expires %s, after its CA %s", leaf.Cert.NotAfter, ca.Cert.NotAfter)
	}
}

func TestParseKeyPair_MismatchedKey(t *testing.T) {
	first, err := NewCA(CARequest{CommonName: "first", Validity: time.Hour})
	if err != nil {
		t.Fatalf("NewCA: %v", err)
	}
	second, err := NewCA(CARequest{CommonName: "second", Validity: time.Hour})
	if err != nil {
		t.Fatalf("NewCA: %v", err)
	}
	if _, err := ParseKeyPair(first.CertPEM, second.KeyPEM); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("ParseKeyPair error = %v, want a mismatch", err)
	}
	if _, err := ParseCertificates([]byte("not pem")); err == nil {
		t.Fatal("ParseCertificates accepted text without a PEM block")
	}
}

func TestSplitHosts(t *testing.T) {
	dns, ips := SplitHosts([]string{"localhost", "127.0.0.1", " ", "::1", "a.example"})
	if strings.Join(dns, ",") != "localhost,a.example" {
		t.Fatalf("DNS names = %v", dns)
	}
	if len(ips) != 2 || !ips[0].Equal(net.ParseIP("127.0.0.1")) || !ips[1].Equal(net.ParseIP("::1")) {
		t.Fatalf("IP addresses = %v", ips)
	}
}
