package node

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/thingdb/thingdb/internal/pki"
	"github.com/thingdb/thingdb/ledger"
)

// Client calls the API of one node.
type Client struct {
	baseURL string
	token   string
	http    *http.Client
}

// NewClient returns a client for the node at baseURL, such as
// https://node-a:8443, sending token as the bearer token when it is not
// empty. tlsConfig nil means the system roots.
func NewClient(baseURL, token string, tlsConfig *tls.Config) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("invalid server URL %q: use https://host:port", baseURL)
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = tlsConfig
	transport.MaxIdleConnsPerHost = 64
	return &Client{
		baseURL: strings.TrimSuffix(baseURL, "/"),
		token:   token,
		http:    &http.Client{Transport: transport, Timeout: 5 * time.Minute},
	}, nil
}

// ClientTLSConfig builds a client TLS configuration that trusts the CA
// certificates in caFile (system roots when empty) and presents the client
// certificate in certFile and keyFile when both are given.
func ClientTLSConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		caPEM, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("read CA file: %w", err)
		}
		pool, err := pki.CertPool(caPEM)
		if err != nil {
			return nil, fmt.Errorf("load CA file %s: %w", caFile, err)
		}
		cfg.RootCAs = pool
	}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("client certificate needs both --cert-file and --key-file")
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("load client certificate %s: %w", certFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// APIError is a response with a status other than 2xx.
type APIError struct {
	Status int
	ErrorBody
}

func (e *APIError) Error() string {
	switch {
	case e.ErrorBody.Error == "":
		return fmt.Sprintf("server returned %d %s", e.Status, http.StatusText(e.Status))
	case e.Reason == "":
		return fmt.Sprintf("server returned %d %s: %s", e.Status, http.StatusText(e.Status), e.ErrorBody.Error)
	}
	return fmt.Sprintf("server returned %d (%s): %s", e.Status, e.Reason, e.ErrorBody.Error)
}

// tlsHint returns the next step for a certificate that the client did not
// accept, or "" for any other error.
func tlsHint(err error) string {
	var unknownAuthority x509.UnknownAuthorityError
	var hostname x509.HostnameError
	switch {
	case errors.As(err, &unknownAuthority):
		return "; pass --ca-file with the CA certificate that signed the node's certificate"
	case errors.As(err, &hostname):
		return "; use a host name that the certificate lists, or issue one with thingdb tls issue --host"
	}
	return ""
}

// maxPlainErrorBody is how much of a non-JSON error body an APIError keeps.
const maxPlainErrorBody = 200

// plainErrorText returns the first line of a non-JSON error body, such as
// Go's "Client sent an HTTP request to an HTTPS server." for an http:// URL
// that points at a TLS port, cut to maxPlainErrorBody bytes.
func plainErrorText(body []byte) string {
	line, _, _ := strings.Cut(strings.TrimSpace(string(body)), "\n")
	if len(line) > maxPlainErrorBody {
		line = line[:maxPlainErrorBody] + "..."
	}
	return line
}

// do sends a request and decodes a JSON response into out. For a non-2xx
// status it decodes the body into out as well when out is not nil, and
// returns an *APIError.
func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var reader io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		reader = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.baseURL+path, reader)
	if err != nil {
		return fmt.Errorf("build request %s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w%s", method, path, err, tlsHint(err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("read response of %s %s: %w", method, path, err)
	}

	if resp.StatusCode/100 != 2 {
		apiErr := &APIError{Status: resp.StatusCode}
		if json.Unmarshal(data, &apiErr.ErrorBody) != nil {
			apiErr.ErrorBody = ErrorBody{Error: plainErrorText(data)}
		}
		if out != nil {
			_ = json.Unmarshal(data, out)
		}
		return fmt.Errorf("%s %s: %w", method, path, apiErr)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("decode response of %s %s: %w", method, path, err)
		}
	}
	return nil
}

// Identity returns the node's identity; it needs no token.
func (c *Client) Identity(ctx context.Context) (IdentityResponse, error) {
	var out IdentityResponse
	err := c.do(ctx, http.MethodGet, "/v1/identity", nil, &out)
	return out, err
}

// Put appends a new version of thing.
func (c *Client) Put(ctx context.Context, thing string, req PutRequest) (EntryInfoJSON, error) {
	var out EntryInfoJSON
	err := c.do(ctx, http.MethodPut, "/v1/things/"+url.PathEscape(thing), req, &out)
	return out, err
}

// Get returns the latest version of thing.
func (c *Client) Get(ctx context.Context, thing string) (VersionJSON, error) {
	var out VersionJSON
	err := c.do(ctx, http.MethodGet, "/v1/things/"+url.PathEscape(thing), nil, &out)
	return out, err
}

// History returns every version of thing, oldest first.
func (c *Client) History(ctx context.Context, thing string) (HistoryResponse, error) {
	var out HistoryResponse
	err := c.do(ctx, http.MethodGet, "/v1/things/"+url.PathEscape(thing)+"/history", nil, &out)
	return out, err
}

// Heads returns the node's signed heads.
func (c *Client) Heads(ctx context.Context) (SignedHeads, error) {
	var out SignedHeads
	err := c.do(ctx, http.MethodGet, "/v1/heads", nil, &out)
	return out, err
}

// ExportQuery selects the entries of an export.
type ExportQuery struct {
	After     ledger.Cursor
	Recipient string
	Limit     int // 0 means the server's maximum
}

// Export returns a signed batch of entries after the cursor.
func (c *Client) Export(ctx context.Context, q ExportQuery) (ExportResponse, error) {
	values := url.Values{}
	if len(q.After) > 0 {
		values.Set("after", FormatCursor(q.After))
	}
	if q.Recipient != "" {
		values.Set("recipient", q.Recipient)
	}
	if q.Limit > 0 {
		values.Set("limit", strconv.Itoa(q.Limit))
	}
	path := "/v1/export"
	if len(values) > 0 {
		path += "?" + values.Encode()
	}
	var out ExportResponse
	err := c.do(ctx, http.MethodGet, path, nil, &out)
	return out, err
}

// Import sends a signed batch. On rejection it returns the decoded response
// together with an *APIError.
func (c *Client) Import(ctx context.Context, batch Batch) (ImportResponse, error) {
	var out ImportResponse
	err := c.do(ctx, http.MethodPost, "/v1/import", batch, &out)
	return out, err
}

// SyncStatus returns the node's per-peer sync state.
func (c *Client) SyncStatus(ctx context.Context) (SyncStatusResponse, error) {
	var out SyncStatusResponse
	err := c.do(ctx, http.MethodGet, "/v1/sync/status", nil, &out)
	return out, err
}
