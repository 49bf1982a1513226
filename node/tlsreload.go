package node

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/thingdb/thingdb/internal/pki"
)

// File names in the TLS directory: the keys of a cert-manager Secret.
const (
	tlsCertFile = "tls.crt"
	tlsKeyFile  = "tls.key"
	tlsCAFile   = "ca.crt"
)

// ClientAuth selects whether the server requests client certificates.
type ClientAuth string

// Client certificate modes. Request and Require verify a presented
// certificate against ca.crt of the TLS directory.
const (
	ClientAuthNone    ClientAuth = "none"
	ClientAuthRequest ClientAuth = "request"
	ClientAuthRequire ClientAuth = "require"
)

// ParseClientAuth parses a --client-auth value.
func ParseClientAuth(s string) (ClientAuth, error) {
	switch ClientAuth(s) {
	case "":
		return ClientAuthNone, nil
	case ClientAuthNone, ClientAuthRequest, ClientAuthRequire:
		return ClientAuth(s), nil
	}
	return "", fmt.Errorf("invalid client auth %q: use none, request or require", s)
}

func (c ClientAuth) tlsType() tls.ClientAuthType {
	switch c {
	case ClientAuthRequest:
		return tls.VerifyClientCertIfGiven
	case ClientAuthRequire:
		return tls.RequireAndVerifyClientCert
	}
	return tls.NoClientCert
}

// CertReloader serves the certificate, key and CA of a TLS directory and
// swaps them when the files change. Reload keeps the previous material when
// the new files do not load, for example while cert-manager is halfway
// through an update.
type CertReloader struct {
	dir        string
	clientAuth ClientAuth

	mu      sync.RWMutex
	cert    *tls.Certificate
	leaf    *x509.Certificate
	caPool  *x509.CertPool
	content []byte // certificate, key and CA as read, to detect changes
}

// NewCertReloader loads the TLS directory. With client auth other than none,
// ca.crt must be present.
func NewCertReloader(dir string, clientAuth ClientAuth) (*CertReloader, error) {
	r := &CertReloader{dir: dir, clientAuth: clientAuth}
	if _, err := r.Reload(); err != nil {
		return nil, err
	}
	return r, nil
}

// Reload reads the files again and reports whether they changed.
func (r *CertReloader) Reload() (bool, error) {
	certPEM, err := os.ReadFile(filepath.Join(r.dir, tlsCertFile))
	if err != nil {
		return false, fmt.Errorf("read TLS certificate: %w; put tls.crt and tls.key in --tls-dir or pass --insecure", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(r.dir, tlsKeyFile))
	if err != nil {
		return false, fmt.Errorf("read TLS key: %w", err)
	}
	caPEM, err := os.ReadFile(filepath.Join(r.dir, tlsCAFile))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("read TLS CA: %w", err)
	}
	content := bytes.Join([][]byte{certPEM, keyPEM, caPEM}, []byte{0})

	r.mu.RLock()
	same := bytes.Equal(content, r.content)
	r.mu.RUnlock()
	if same {
		return false, nil
	}

	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return false, fmt.Errorf("load TLS key pair from %s: %w", r.dir, err)
	}
	var pool *x509.CertPool
	if len(caPEM) > 0 {
		pool, err = pki.CertPool(caPEM)
		if err != nil {
			return false, fmt.Errorf("load %s: %w", filepath.Join(r.dir, tlsCAFile), err)
		}
	}
	if pool == nil && r.clientAuth != ClientAuthNone {
		return false, fmt.Errorf("client auth %q needs %s to verify client certificates: add it or use --client-auth none", r.clientAuth, filepath.Join(r.dir, tlsCAFile))
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	r.cert = &cert
	r.leaf = cert.Leaf
	r.caPool = pool
	r.content = content
	return true, nil
}

// Leaf returns the certificate currently served.
func (r *CertReloader) Leaf() *x509.Certificate {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.leaf
}

// ClientCertificate returns the current certificate for outbound
// connections whose server requests one, for tls.Config's
// GetClientCertificate. A server that requires client certificates accepts
// it only when it has the client-auth usage and the server's CA signed it.
func (r *CertReloader) ClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.cert, nil
}

// TLSConfig returns a server configuration that picks up the current
// certificate and CA at every handshake. TLS 1.2 is the minimum.
func (r *CertReloader) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1"},
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			r.mu.RLock()
			defer r.mu.RUnlock()
			return &tls.Config{
				MinVersion:   tls.VersionTLS12,
				NextProtos:   []string{"http/1.1"},
				Certificates: []tls.Certificate{*r.cert},
				ClientAuth:   r.clientAuth.tlsType(),
				ClientCAs:    r.caPool,
			}, nil
		},
	}
}
