package node

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeSecretLayout lays records out as a mounted Kubernetes Secret does:
// files in a timestamped directory, reached through the ..data link.
func writeSecretLayout(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	stamp := filepath.Join(dir, "..2026_01_01_00_00_00.000000001")
	if err := os.Mkdir(stamp, 0o700); err != nil {
		t.Fatalf("mkdir: %v", err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(stamp, name), []byte(content), 0o600); err != nil {
			t.Fatalf("write: %v", err)
		}
	}
	if err := os.Symlink(filepath.Base(stamp), filepath.Join(dir, "..data")); err != nil {
		t.Fatalf("symlink: %v", err)
	}
	for name := range files {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(dir, name)); err != nil {
			t.Fatalf("symlink: %v", err)
		}
	}
}

func TestLoadTokenDir(t *testing.T) {
	ci := `{"name":"ci","scopes":["read","write"],"sha256":"` + HashToken("ci-token") + `"}`
	ops := `{"name":"ops","scopes":["admin"],"sha256":"` + HashToken("ops-token") + `"}`

	tests := map[string]struct {
		files     map[string]string
		secret    bool // lay the files out as a mounted Secret
		wantNames []string
		wantErr   string
	}{
		"plain files":     {files: map[string]string{"ci.json": ci, "ops.json": ops}, wantNames: []string{"ci", "ops"}},
		"mounted Secret":  {files: map[string]string{"ci": ci, "ops": ops}, secret: true, wantNames: []string{"ci", "ops"}},
		"dotfile skipped": {files: map[string]string{"ci.json": ci, ".hidden": "not json"}, wantNames: []string{"ci"}},
		"invalid JSON":    {files: map[string]string{"bad.json": "{"}, wantErr: "parse token record"},
		"unknown scope":   {files: map[string]string{"x.json": `{"name":"x","scopes":["root"],"sha256":"` + HashToken("x") + `"}`}, wantErr: `unknown scope "root"`},
		"short hash":      {files: map[string]string{"x.json": `{"name":"x","scopes":["read"],"sha256":"abcd"}`}, wantErr: "64 hex digits"},
		"bad name":        {files: map[string]string{"x.json": `{"name":"X Y","scopes":["read"],"sha256":"` + HashToken("x") + `"}`}, wantErr: "invalid token name"},
		"duplicate name":  {files: map[string]string{"a.json": ci, "b.json": strings.Replace(ci, HashToken("ci-token"), HashToken("other"), 1)}, wantErr: "token name \"ci\" is in both"},
		"duplicate hash":  {files: map[string]string{"a.json": ci, "b.json": strings.Replace(ci, `"ci"`, `"ci2"`, 1)}, wantErr: "same hash"},
		"no scopes":       {files: map[string]string{"x.json": `{"name":"x","scopes":[],"sha256":"` + HashToken("x") + `"}`}, wantErr: "no scopes"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if tt.secret {
				writeSecretLayout(t, dir, tt.files)
			} else {
				for file, content := range tt.files {
					if err := os.WriteFile(filepath.Join(dir, file), []byte(content), 0o600); err != nil {
						t.Fatalf("write: %v", err)
					}
				}
			}
			records, err := LoadTokenDir(dir)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("LoadTokenDir: %v", err)
			}
			var names []string
			for _, r := range records {
				names = append(names, r.Name)
			}
			if strings.Join(names, ",") != strings.Join(tt.wantNames, ",") {
				t.Fatalf("names = %v, want %v", names, tt.wantNames)
			}
		})
	}
}

func TestTokenStore_Authenticate(t *testing.T) {
	dir := t.TempDir()
	readToken, err := AddToken(dir, "reader", []Scope{ScopeRead})
	if err != nil {
		t.Fatalf("AddToken: %v", err)
	}
	adminToken, err := AddToken(dir, "admin", []Scope{ScopeAdmin})
	if err != nil {
		t.Fatalf("AddToken: %v", err)
	}
	if _, err := AddToken(dir, "reader", []Scope{ScopeRead}); err == nil {
		t.Fatal("AddToken accepted a second token named reader")
	}
	store, err := NewTokenStore(dir)
	if err != nil {
		t.Fatalf("NewTokenStore: %v", err)
	}

	tests := map[string]struct {
		token     string
		wantName  string
		wantScope Scope
		wantAllow bool
	}{
		"reader reads":        {token: readToken, wantName: "reader", wantScope: ScopeRead, wantAllow: true},
		"reader cannot write": {token: readToken, wantName: "reader", wantScope: ScopeWrite, wantAllow: false},
		"admin imports":       {token: adminToken, wantName: "admin", wantScope: ScopeImport, wantAllow: true},
		"unknown token":       {token: readToken + "x"},
		"empty token":         {token: ""},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			record, ok := store.Authenticate(tt.token)
			if ok != (tt.wantName != "") || record.Name != tt.wantName {
				t.Fatalf("Authenticate = %q, %v; want %q", record.Name, ok, tt.wantName)
			}
			if ok && record.Allows(tt.wantScope) != tt.wantAllow {
				t.Fatalf("Allows(%s) = %v, want %v", tt.wantScope, !tt.wantAllow, tt.wantAllow)
			}
		})
	}

	// The directory holds hashes only.
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		data, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		if strings.Contains(string(data), readToken) || strings.Contains(string(data), adminToken) {
			t.Fatalf("token record %s contains a token", e.Name())
		}
	}
}

func TestTokenStore_ReloadKeepsOldOnError(t *testing.T) {
	dir := t.TempDir()
	token, err := AddToken(dir, "ci", []Scope{ScopeRead})
	if err != nil {
		t.Fatalf("AddToken: %v", err)
	}
	store, err := NewTokenStore(dir)
	if err != nil {
		t.Fatalf("NewTokenStore: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "broken.json"), []byte("{"), 0o600); err != nil {
		t.Fatalf("write: %v", err)
	}
	if _, err := store.Reload(); err == nil {
		t.Fatal("Reload accepted a broken record")
	}
	if _, ok := store.Authenticate(token); !ok {
		t.Fatal("a failed reload dropped the tokens loaded before")
	}
}

func TestParseScopes(t *testing.T) {
	tests := map[string]struct {
		in      string
		want    string
		wantErr bool
	}{
		"two":        {in: "read,write", want: "read,write"},
		"spaces":     {in: " read , export ", want: "export,read"},
		"duplicates": {in: "read,read", want: "read"},
		"empty":      {in: "", wantErr: true},
		"unknown":    {in: "read,sudo", wantErr: true},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			scopes, err := ParseScopes(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("error = %v, want error %v", err, tt.wantErr)
			}
			if err == nil && joinScopes(scopes) != tt.want {
				t.Fatalf("scopes = %s, want %s", joinScopes(scopes), tt.want)
			}
		})
	}
}
