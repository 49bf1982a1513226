package node

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// runCLI runs the command line in-process with env as its only environment.
func runCLI(t *testing.T, env map[string]string, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cli := &CLI{
		Stdin:  strings.NewReader(stdin),
		Stdout: &stdout,
		Stderr: &stderr,
		LookupEnv: func(name string) (string, bool) {
			v, ok := env[name]
			return v, ok
		},
	}
	code := cli.Run(context.Background(), args)
	return code, stdout.String(), stderr.String()
}

func TestCLI_LedgerCommands(t *testing.T) {
	dir := t.TempDir()
	passphrase := filepath.Join(dir, "passphrase")
	if err := os.WriteFile(passphrase, []byte("correct horse\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"THINGDB_DATA_DIR": filepath.Join(dir, "a"), "THINGDB_PASSPHRASE_FILE": passphrase}

	steps := []struct {
		args     []string
		stdin    string
		wantCode int
		wantOut  string // substring of stdout
		wantErr  string // substring of stderr
	}{
		{args: []string{"init"}, wantOut: "node id"},
		{args: []string{"init"}, wantCode: 1, wantErr: "already exists"},
		{args: []string{"put", "lamp", `{"on":false}`, "--actor", "alice"}, wantOut: "sequence 1"},
		{args: []string{"put", "lamp", "-"}, stdin: `{"on":true}`, wantOut: "sequence 2"},
		{args: []string{"put", "lamp", "not json"}, wantCode: 1, wantErr: "not valid JSON"},
		{args: []string{"get", "lamp"}, wantOut: `{"on":true}`},
		{args: []string{"get", "-o", "json", "lamp"}, wantOut: `"signatureValid": true`},
		{args: []string{"history", "lamp"}, wantOut: "alice"},
		{args: []string{"get", "missing"}, wantCode: 1, wantErr: `thing "missing" not found`},
		{args: []string{"verify"}, wantOut: "ok: 2 entries"},
		{args: []string{"verify", "-o", "json"}, wantOut: `"ok": true`},
		{args: []string{"export", "--out", filepath.Join(dir, "batch.json")}},
		{args: []string{"identity", "-o", "json"}, wantOut: `"nodeID"`},
		{args: []string{"get"}, wantCode: 2, wantErr: "expected 1 arguments"},
		{args: []string{"frobnicate"}, wantCode: 2, wantErr: "unknown command"},
		{args: []string{"get", "lamp", "--output", "yaml"}, wantCode: 1, wantErr: `invalid output format "yaml"`},
	}
	for _, s := range steps {
		code, stdout, stderr := runCLI(t, env, s.stdin, s.args...)
		if code != s.wantCode {
			t.Fatalf("thingdb %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(s.args, " "), code, s.wantCode, stdout, stderr)
		}
		if !strings.Contains(stdout, s.wantOut) {
			t.Fatalf("thingdb %s: stdout %q does not contain %q", strings.Join(s.args, " "), stdout, s.wantOut)
		}
		if !strings.Contains(stderr, s.wantErr) {
			t.Fatalf("thingdb %s: stderr %q does not contain %q", strings.Join(s.args, " "), stderr, s.wantErr)
		}
	}

	// A second ledger imports the batch, with the sender pinned by key.
	_, idJSON, _ := runCLI(t, env, "", "identity", "-o", "json")
	var id IdentityResponse
	if err := json.Unmarshal([]byte(idJSON), &id); err != nil {
		t.Fatalf("decode identity: %v", err)
	}
	other := map[string]string{"THINGDB_DATA_DIR": filepath.Join(dir, "b"), "THINGDB_PASSPHRASE_FILE": passphrase}
	if code, _, stderr := runCLI(t, other, "", "init"); code != 0 {
		t.Fatalf("init b: %s", stderr)
	}
	batch := filepath.Join(dir, "batch.json")
	if code, _, stderr := runCLI(t, other, "", "import", batch); code != 1 || !strings.Contains(stderr, "--peer-key") {
		t.Fatalf("import without a pinned key: exit %d, stderr %q", code, stderr)
	}
	code, stdout, stderr := runCLI(t, other, "", "import", "--peer-key", id.SigningKey, batch)
	if code != 0 || !strings.Contains(stdout, "accepted 2") {
		t.Fatalf("import: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	code, stdout, _ = runCLI(t, other, "", "get", "-o", "json", "lamp")
	if code != 0 || !strings.Contains(stdout, `"origin": "`+id.NodeID+`"`) {
		t.Fatalf("imported lamp on b: exit %d: %s", code, stdout)
	}

	// The wrong passphrase fails with a hint and never echoes the passphrase.
	wrong := filepath.Join(dir, "wrong")
	if err := os.WriteFile(wrong, []byte("battery staple"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = runCLI(t, map[string]string{"THINGDB_DATA_DIR": env["THINGDB_DATA_DIR"]}, "", "verify", "--passphrase-file", wrong)
	if code != 1 || !strings.Contains(stderr, "wrong passphrase") || strings.Contains(stderr, "battery") {
		t.Fatalf("wrong passphrase: exit %d, stderr %q", code, stderr)
	}
}

func TestCLI_TokenCommands(t *testing.T) {
	env := map[string]string{"THINGDB_TOKEN_DIR": t.TempDir()}
	code, token, stderr := runCLI(t, env, "", "token", "add", "ci", "--scopes", "read,write")
	if code != 0 || !strings.HasPrefix(token, tokenPrefix) {
		t.Fatalf("token add: exit %d, stdout %q, stderr %q", code, token, stderr)
	}
	code, list, _ := runCLI(t, env, "", "token", "list")
	if code != 0 || !strings.Contains(list, "ci") || !strings.Contains(list, "read,write") || strings.Contains(list, strings.TrimSpace(token)) {
		t.Fatalf("token list: exit %d: %q", code, list)
	}
	if code, _, stderr := runCLI(t, env, "", "token", "add", "ci2", "--scopes", "root"); code != 1 || !strings.Contains(stderr, `unknown scope "root"`) {
		t.Fatalf("bad scope: exit %d, stderr %q", code, stderr)
	}
	if code, _, _ := runCLI(t, env, "", "token", "revoke", "ci"); code != 0 {
		t.Fatalf("token revoke: exit %d", code)
	}
	if code, _, stderr := runCLI(t, env, "", "token", "revoke", "ci"); code != 1 || !strings.Contains(stderr, "not found") {
		t.Fatalf("second revoke: exit %d, stderr %q", code, stderr)
	}
	if code, _, stderr := runCLI(t, map[string]string{}, "", "token", "list"); code != 1 || !strings.Contains(stderr, "THINGDB_TOKEN_DIR") {
		t.Fatalf("no token dir: exit %d, stderr %q", code, stderr)
	}
}

func TestCLI_EnvironmentErrorsNameTheVariable(t *testing.T) {
	code, _, stderr := runCLI(t, map[string]string{"THINGDB_LIMIT": "many"}, "", "export")
	if code != 2 || !strings.Contains(stderr, "THINGDB_LIMIT") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
}

func TestRunDemo(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "demo")
	var out bytes.Buffer
	if err := RunDemo(context.Background(), dir, &out); err != nil {
		t.Fatalf("RunDemo: %v\n%s", err, out.String())
	}
	for _, want := range []string{"history of lamp-1", "ok: 5 entries", "caught:"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("demo output lacks %q:\n%s", want, out.String())
		}
	}
	if err := RunDemo(context.Background(), dir, &out); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("second demo in the same directory: %v", err)
	}
}
