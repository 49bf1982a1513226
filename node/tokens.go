package node

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/thingdb/thingdb/internal/atomicfile"
)

// Scope is a permission a token grants.
type Scope string

// Token scopes. ScopeAdmin grants every other scope as well.
const (
	ScopeRead   Scope = "read"
	ScopeWrite  Scope = "write"
	ScopeExport Scope = "export"
	ScopeImport Scope = "import"
	ScopeAdmin  Scope = "admin"
)

// AllScopes lists every scope in the order help text shows them.
var AllScopes = []Scope{ScopeRead, ScopeWrite, ScopeExport, ScopeImport, ScopeAdmin}

// tokenPrefix starts every token this package makes, so a leaked token is
// easy to recognise in a secret scanner.
const tokenPrefix = "thingdb_"

var tokenNamePattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$`)

// TokenRecord is the stored form of a token: its name, scopes and the hex
// SHA-256 of the token. The token itself is never stored.
type TokenRecord struct {
	Name   string  `json:"name"`
	Scopes []Scope `json:"scopes"`
	SHA256 string  `json:"sha256"`
}

// Allows reports whether the record grants scope, directly or through admin.
func (r TokenRecord) Allows(scope Scope) bool {
	return slices.Contains(r.Scopes, scope) || slices.Contains(r.Scopes, ScopeAdmin)
}

func (r TokenRecord) validate() error {
	if !tokenNamePattern.MatchString(r.Name) {
		return fmt.Errorf("invalid token name %q: use 1 to 63 lower-case letters, digits, '.', '_' or '-', starting and ending with a letter or digit", r.Name)
	}
	if len(r.Scopes) == 0 {
		return fmt.Errorf("token %q has no scopes: list at least one of %s", r.Name, scopeList())
	}
	for _, s := range r.Scopes {
		if !slices.Contains(AllScopes, s) {
			return fmt.Errorf("token %q has unknown scope %q: use %s", r.Name, s, scopeList())
		}
	}
	sum, err := hex.DecodeString(r.SHA256)
	if err != nil || len(sum) != sha256.Size {
		return fmt.Errorf("token %q: sha256 must be 64 hex digits, the SHA-256 of the token", r.Name)
	}
	return nil
}

// ParseScopes parses a comma-separated scope list such as "read,write".
func ParseScopes(list string) ([]Scope, error) {
	var scopes []Scope
	for _, part := range strings.Split(list, ",") {
		s := Scope(strings.TrimSpace(part))
		if s == "" {
			continue
		}
		if !slices.Contains(AllScopes, s) {
			return nil, fmt.Errorf("unknown scope %q: use %s", s, scopeList())
		}
		if !slices.Contains(scopes, s) {
			scopes = append(scopes, s)
		}
	}
	if len(scopes) == 0 {
		return nil, fmt.Errorf("no scopes in %q: list at least one of %s", list, scopeList())
	}
	return scopes, nil
}

func scopeList() string {
	names := make([]string, len(AllScopes))
	for i, s := range AllScopes {
		names[i] = string(s)
	}
	return strings.Join(names, ", ")
}

// HashToken returns the hex SHA-256 of a token, the form token records store.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// NewToken returns a new random token: the prefix and 32 random bytes in
// unpadded base64url.
func NewToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never returns an error since Go 1.24
	return tokenPrefix + base64.RawURLEncoding.EncodeToString(b)
}

// LoadTokenDir reads every token record in dir. Names starting with '.' are
// skipped, which covers the "..data" and timestamped directories of a
// mounted Kubernetes Secret. Symbolic links are followed, and directories
// are skipped. A missing directory holds no records. Any invalid record or two
// records with the same name or hash fail the whole load, so a reload never
// applies half of a change.
func LoadTokenDir(dir string) ([]TokenRecord, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read token directory %s: %w", dir, err)
	}

	var records []TokenRecord
	names := map[string]string{}
	hashes := map[string]string{}
	for _, entry := range entries {
		if strings.HasPrefix(entry.Name(), ".") {
			continue
		}
		path := filepath.Join(dir, entry.Name())
		info, err := os.Stat(path)
		if err != nil {
			return nil, fmt.Errorf("read token record %s: %w", path, err)
		}
		if info.IsDir() {
			continue
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read token record %s: %w", path, err)
		}
		var record TokenRecord
		if err := json.Unmarshal(data, &record); err != nil {
			return nil, fmt.Errorf("parse token record %s: %w; expected {\"name\":..., \"scopes\":[...], \"sha256\":...}", path, err)
		}
		record.SHA256 = strings.ToLower(record.SHA256)
		if err := record.validate(); err != nil {
			return nil, fmt.Errorf("check token record %s: %w", path, err)
		}
		if other, ok := names[record.Name]; ok {
			return nil, fmt.Errorf("token name %q is in both %s and %s: remove one", record.Name, other, path)
		}
		if other, ok := hashes[record.SHA256]; ok {
			return nil, fmt.Errorf("token records %s and %s have the same hash: remove one", other, path)
		}
		names[record.Name] = path
		hashes[record.SHA256] = path
		records = append(records, record)
	}
	sort.Slice(records, func(i, j int) bool { return records[i].Name < records[j].Name })
	return records, nil
}

// TokenStore holds the token records of a directory and authenticates bearer
// tokens against them. Reload swaps in a new set only when the whole
// directory loads.
type TokenStore struct {
	dir string

	mu      sync.RWMutex
	records []storedToken
}

type storedToken struct {
	record TokenRecord
	sum    []byte
}

// NewTokenStore loads the token records of dir.
func NewTokenStore(dir string) (*TokenStore, error) {
	s := &TokenStore{dir: dir}
	if _, err := s.Reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// Dir returns the directory the store reads.
func (s *TokenStore) Dir() string { return s.dir }

// Reload reads the directory again and reports whether the set of records
// changed. On error the previous records stay in force.
func (s *TokenStore) Reload() (bool, error) {
	records, err := LoadTokenDir(s.dir)
	if err != nil {
		return false, err
	}
	stored := make([]storedToken, len(records))
	for i, r := range records {
		sum, _ := hex.DecodeString(r.SHA256) // validated by LoadTokenDir
		stored[i] = storedToken{record: r, sum: sum}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	changed := !slices.EqualFunc(s.records, stored, func(a, b storedToken) bool {
		return a.record.Name == b.record.Name && a.record.SHA256 == b.record.SHA256 && slices.Equal(a.record.Scopes, b.record.Scopes)
	})
	s.records = stored
	return changed, nil
}

// Len returns the number of loaded records.
func (s *TokenStore) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.records)
}

// Authenticate returns the record whose hash matches token. It compares the
// token's hash with every record in constant time and does not stop at the
// first match, so the time taken does not depend on which record matched.
func (s *TokenStore) Authenticate(token string) (TokenRecord, bool) {
	if token == "" {
		return TokenRecord{}, false
	}
	sum := sha256.Sum256([]byte(token))

	s.mu.RLock()
	defer s.mu.RUnlock()
	found := -1
	for i, t := range s.records {
		if subtle.ConstantTimeCompare(sum[:], t.sum) == 1 {
			found = i
		}
	}
	if found < 0 {
		return TokenRecord{}, false
	}
	return s.records[found].record, true
}

// AddToken creates a token with name and scopes, writes its record to dir as
// NAME.json (mode 0600) and returns the token. The token is not stored and
// cannot be shown again.
func AddToken(dir, name string, scopes []Scope) (string, error) {
	existing, err := LoadTokenDir(dir)
	if err != nil {
		return "", err
	}
	for _, r := range existing {
		if r.Name == name {
			return "", fmt.Errorf("token %q already exists in %s: revoke it first or choose another name", name, dir)
		}
	}
	token := NewToken()
	record := TokenRecord{Name: name, Scopes: scopes, SHA256: HashToken(token)}
	if err := record.validate(); err != nil {
		return "", err
	}
	data, err := json.Marshal(record)
	if err != nil {
		return "", fmt.Errorf("encode token record %q: %w", name, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create token directory %s: %w", dir, err)
	}
	if err := atomicfile.Write(filepath.Join(dir, name+".json"), append(data, '\n'), 0o600); err != nil {
		return "", err
	}
	return token, nil
}

// RevokeToken removes every record named name from dir.
func RevokeToken(dir, name string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("read token directory %s: %w", dir, err)
	}
	removed := 0
	for _, entry := range entries {
		if strings.HasPrefix(entry.Name(), ".") || entry.IsDir() {
			continue
		}
		path := filepath.Join(dir, entry.Name())
		data, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("read token record %s: %w", path, err)
		}
		var record TokenRecord
		if json.Unmarshal(data, &record) != nil || record.Name != name {
			continue
		}
		if err := os.Remove(path); err != nil {
			return fmt.Errorf("remove token record %s: %w", path, err)
		}
		removed++
	}
	if removed == 0 {
		return fmt.Errorf("token %q not found in %s: `thingdb token list` shows the names", name, dir)
	}
	return nil
}
