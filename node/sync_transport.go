package node

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/thingdb/thingdb/internal/pki"
)

// ResolveMap overrides the address that outbound peer connections dial, in
// the manner of curl's --resolve: a connection to the key "host:port" dials
// the value "addr:port" instead, while TLS still checks the certificate
// against host. It lets tests and laptops run the peer files of pods, which
// name peers by pod DNS, against processes on 127.0.0.x. Keys are lower case.
type ResolveMap map[string]string

// String returns the entries as HOST:PORT=ADDR, sorted and comma-separated.
func (m *ResolveMap) String() string {
	if m == nil || len(*m) == 0 {
		return ""
	}
	pairs := make([]string, 0, len(*m))
	for key, addr := range *m {
		pairs = append(pairs, key+"="+addr)
	}
	sort.Strings(pairs)
	return strings.Join(pairs, ",")
}

// Set adds one or more comma-separated HOST:PORT=ADDR entries, so that the
// flag can repeat and THINGDB_RESOLVE can list several.
func (m *ResolveMap) Set(value string) error {
	if *m == nil {
		*m = ResolveMap{}
	}
	for _, entry := range strings.Split(value, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		key, addr, err := parseResolveEntry(entry)
		if err != nil {
			return err
		}
		(*m)[key] = addr
	}
	return nil
}

// parseResolveEntry parses HOST:PORT=ADDR, where ADDR is a host or
// host:port; without a port, ADDR keeps PORT.
func parseResolveEntry(entry string) (string, string, error) {
	target, addr, ok := strings.Cut(entry, "=")
	host, port, err := net.SplitHostPort(target)
	if !ok || err != nil || host == "" || !validPort(port) {
		return "", "", fmt.Errorf("invalid resolve entry %q: use HOST:PORT=ADDR, such as node-b-0.node-b-headless.default.svc:8443=127.0.0.2", entry)
	}
	if addr == "" {
		return "", "", fmt.Errorf("invalid resolve entry %q: the address after = is empty", entry)
	}
	addrHost, addrPort, err := net.SplitHostPort(addr)
	if err != nil {
		// No port: the address is a bare host or IP, such as 127.0.0.2 or ::1.
		addrHost, addrPort = strings.Trim(addr, "[]"), port
	}
	if addrHost == "" || !validPort(addrPort) || strings.ContainsAny(addrHost, "/ ") {
		return "", "", fmt.Errorf("invalid resolve entry %q: use an address such as 127.0.0.2 or 127.0.0.1:18443 after =", entry)
	}
	return strings.ToLower(net.JoinHostPort(host, port)), net.JoinHostPort(addrHost, addrPort), nil
}

func validPort(port string) bool {
	n, err := strconv.Atoi(port)
	return err == nil && n > 0 && n <= 65535
}

// dialContext dials the address that m maps addr to, or addr itself.
func (m ResolveMap) dialContext(dialer *net.Dialer) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if target, ok := m[strings.ToLower(addr)]; ok {
			addr = target
		}
		return dialer.DialContext(ctx, network, addr)
	}
}

// peerClients keeps one HTTP client per peer so that connections are
// reused across rounds. A client is rebuilt when the peer's URL or the
// content of its CA file changes.
type peerClients struct {
	resolve    ResolveMap
	clientCert func(*tls.CertificateRequestInfo) (*tls.Certificate, error)

	mu      sync.Mutex
	clients map[string]*cachedClient // by peer name
}

type cachedClient struct {
	url    string
	caHash [sha256.Size]byte
	http   *http.Client
}

// Timeouts of peer requests. An export of a full batch (up to half the
// import body limit, 32 MiB by default) must fit in peerRequestTimeout.
const (
	peerDialTimeout    = 10 * time.Second
	peerRequestTimeout = 2 * time.Minute
)

// client returns a client for peer that sends token, which may be empty.
func (c *peerClients) client(peer Peer, token string) (*Client, error) {
	var caPEM []byte
	if peer.CAFile != "" {
		var err error
		if caPEM, err = os.ReadFile(peer.CAFile); err != nil {
			return nil, fmt.Errorf("read CA file of peer %q: %w", peer.Name, err)
		}
	}
	caHash := sha256.Sum256(caPEM)

	c.mu.Lock()
	defer c.mu.Unlock()
	cached := c.clients[peer.Name]
	if cached == nil || cached.url != peer.URL || !bytes.Equal(cached.caHash[:], caHash[:]) {
		httpClient, err := c.newHTTPClient(peer, caPEM)
		if err != nil {
			return nil, err
		}
		if cached != nil {
			cached.http.CloseIdleConnections()
		}
		cached = &cachedClient{url: peer.URL, caHash: caHash, http: httpClient}
		if c.clients == nil {
			c.clients = map[string]*cachedClient{}
		}
		c.clients[peer.Name] = cached
	}
	return &Client{baseURL: strings.TrimSuffix(peer.URL, "/"), token: token, http: cached.http}, nil
}

func (c *peerClients) newHTTPClient(peer Peer, caPEM []byte) (*http.Client, error) {
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12, GetClientCertificate: c.clientCert}
	if len(caPEM) > 0 {
		pool, err := pki.CertPool(caPEM)
		if err != nil {
			return nil, fmt.Errorf("load CA file %s of peer %q: %w", peer.CAFile, peer.Name, err)
		}
		tlsConfig.RootCAs = pool
	}
	transport := &http.Transport{
		DialContext:           c.resolve.dialContext(&net.Dialer{Timeout: peerDialTimeout, KeepAlive: 30 * time.Second}),
		TLSClientConfig:       tlsConfig,
		TLSHandshakeTimeout:   peerDialTimeout,
		ResponseHeaderTimeout: peerRequestTimeout,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		ForceAttemptHTTP2:     false,
	}
	return &http.Client{Transport: transport, Timeout: peerRequestTimeout}, nil
}

// forget drops the clients of peers not in names and closes their idle
// connections.
func (c *peerClients) forget(names map[string]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, cached := range c.clients {
		if !names[name] {
			cached.http.CloseIdleConnections()
			delete(c.clients, name)
		}
	}
}

// closeAll closes the idle connections of every client.
func (c *peerClients) closeAll() {
	c.forget(nil)
}
