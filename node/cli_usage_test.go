package node

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestCLI_CommandGroupUsage(t *testing.T) {
	cases := []struct {
		args     []string
		wantCode int
		wantErr  string // substring of stderr
	}{
		{args: []string{"token"}, wantCode: 2, wantErr: "missing subcommand: use one of add, list, revoke"},
		{args: []string{"token", "--help"}, wantCode: 0, wantErr: `run "thingdb token add --help"`},
		{args: []string{"tls", "-h"}, wantCode: 0, wantErr: "subcommands ca, issue"},
		{args: []string{"peers", "help"}, wantCode: 0, wantErr: "subcommands add"},
		{args: []string{"tls", "sign"}, wantCode: 2, wantErr: `unknown subcommand "sign": use one of ca, issue`},
		{args: []string{"passphrase"}, wantCode: 2, wantErr: "use one of change"},
		{args: []string{"tokens"}, wantCode: 2, wantErr: `unknown command "tokens"`},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, stdout, stderr := runCLI(t, map[string]string{}, "", tc.args...)
			if code != tc.wantCode {
				t.Errorf("exit %d, want %d; stderr %q", code, tc.wantCode, stderr)
			}
			if !strings.Contains(stderr, tc.wantErr) {
				t.Errorf("stderr %q does not contain %q", stderr, tc.wantErr)
			}
			if stdout != "" {
				t.Errorf("stdout %q, want nothing", stdout)
			}
		})
	}
}

func TestCLI_FlagErrorPrintedOnce(t *testing.T) {
	code, _, stderr := runCLI(t, map[string]string{}, "", "verify", "--server", "https://127.0.0.1:1")
	if code != 2 {
		t.Errorf("exit %d, want 2", code)
	}
	if n := strings.Count(stderr, "flag provided but not defined: -server"); n != 1 {
		t.Errorf("error printed %d times, want once; stderr %q", n, stderr)
	}
	if n := strings.Count(stderr, "Usage: thingdb verify"); n != 1 {
		t.Errorf("usage printed %d times, want once; stderr %q", n, stderr)
	}
}

func TestCLI_HelpFlagPrintsUsage(t *testing.T) {
	code, _, stderr := runCLI(t, map[string]string{}, "", "get", "--help")
	if code != 0 {
		t.Errorf("exit %d, want 0", code)
	}
	if !strings.Contains(stderr, "Usage: thingdb get [flags] THING") || !strings.Contains(stderr, "--server (THINGDB_SERVER)") {
		t.Errorf("stderr %q lacks the usage of get", stderr)
	}
}

func TestClient_PlainHTTPToTLSPort(t *testing.T) {
	server := httptest.NewTLSServer(http.NotFoundHandler())
	t.Cleanup(server.Close)

	// The same host and port with http://: Go's TLS server returns 400 with
	// a plain-text body, which the error must carry.
	plainURL := "http://" + strings.TrimPrefix(server.URL, "https://")
	client, err := NewClient(plainURL, "", nil)
	if err != nil {
		t.Fatalf("NewClient(%q): %v", plainURL, err)
	}
	_, err = client.Identity(context.Background())
	var apiErr *APIError
	if !errors.As(err, &apiErr) {
		t.Fatalf("Identity over http:// = %v, want an *APIError", err)
	}
	if apiErr.Status != http.StatusBadRequest {
		t.Errorf("status %d, want 400", apiErr.Status)
	}
	if !strings.Contains(err.Error(), "HTTPS server") {
		t.Errorf("error %q does not say the port serves HTTPS", err)
	}
}

func TestAPIError_Message(t *testing.T) {
	cases := []struct {
		name string
		err  APIError
		want string
	}{
		{name: "json body", err: APIError{Status: 403, ErrorBody: ErrorBody{Reason: "forbidden", Error: "token lacks scope"}}, want: "server returned 403 (forbidden): token lacks scope"},
		{name: "plain body", err: APIError{Status: 502, ErrorBody: ErrorBody{Error: "upstream down"}}, want: "server returned 502 Bad Gateway: upstream down"},
		{name: "empty body", err: APIError{Status: 500}, want: "server returned 500 Internal Server Error"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.err.Error(); got != tc.want {
				t.Errorf("Error() = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestPlainErrorText_CutsLongBody(t *testing.T) {
	body := strings.Repeat("x", 3*maxPlainErrorBody) + "\nsecond line"
	got := plainErrorText([]byte(body))
	if len(got) != maxPlainErrorBody+len("...") {
		t.Errorf("length %d, want %d", len(got), maxPlainErrorBody+len("..."))
	}
	if strings.Contains(got, "second line") {
		t.Errorf("%q keeps the second line", got)
	}
}

func TestClient_CertificateErrorsNameTheFix(t *testing.T) {
	server := httptest.NewTLSServer(http.NotFoundHandler())
	t.Cleanup(server.Close)
	trusting := server.Client().Transport.(*http.Transport).TLSClientConfig
	port := server.URL[strings.LastIndex(server.URL, ":")+1:]

	cases := []struct {
		name      string
		url       string
		tlsConfig *tls.Config
		want      string
	}{
		// The test server's certificate comes from a CA outside the system roots.
		{name: "unknown CA", url: server.URL, tlsConfig: nil, want: "pass --ca-file"},
		// It lists 127.0.0.1, ::1 and example.com, but not localhost.
		{name: "wrong host name", url: "https://localhost:" + port, tlsConfig: trusting, want: "thingdb tls issue --host"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			client, err := NewClient(tc.url, "", tc.tlsConfig)
			if err != nil {
				t.Fatalf("NewClient(%q): %v", tc.url, err)
			}
			_, err = client.Identity(context.Background())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Identity = %v, want an error that contains %q", err, tc.want)
			}
		})
	}
}
