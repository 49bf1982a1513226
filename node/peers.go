package node

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/thingdb/thingdb/internal/peerfile"
	"github.com/thingdb/thingdb/ledger"
)

// Defaults of the peer file.
const (
	DefaultSyncInterval  = 30 * time.Second
	DefaultSyncBatchSize = 1000
)

// PeerFile is the peer list the operator writes for a node; the JSON shape
// is documented in docs/architecture.md.
type PeerFile struct {
	Interval  time.Duration
	BatchSize int
	// SealToPeers makes a put without a recipients field seal its entry to
	// every peer that has a recipient key (envelope mode).
	SealToPeers bool
	Peers       []Peer
}

// Peer is one peer of a node with its pinned keys. CAFile and TokenFile are
// absolute after ParsePeerFile resolved them against the peer file's
// directory.
type Peer struct {
	Name         string
	URL          string
	NodeID       string
	SigningKey   ed25519.PublicKey
	RecipientKey []byte
	CAFile       string
	TokenFile    string
}

// ParsePeerFile parses and checks a peer file. baseDir resolves the relative
// caFile and tokenFile paths. Each peer's node id must be the one derived
// from its signing key, so a peer file cannot pin a key under another
// node's id.
func ParsePeerFile(data []byte, baseDir string) (*PeerFile, error) {
	var raw peerfile.File
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("parse peer file: %w", err)
	}

	pf := &PeerFile{Interval: DefaultSyncInterval, BatchSize: DefaultSyncBatchSize, SealToPeers: raw.SealToPeers}
	if raw.Interval != "" {
		d, err := time.ParseDuration(raw.Interval)
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("invalid peer file interval %q: use a positive duration such as 30s", raw.Interval)
		}
		pf.Interval = d
	}
	if raw.BatchSize < 0 {
		return nil, fmt.Errorf("invalid peer file batchSize %d: use a positive number of entries", raw.BatchSize)
	}
	if raw.BatchSize > 0 {
		pf.BatchSize = raw.BatchSize
	}

	names := map[string]bool{}
	ids := map[string]bool{}
	for i, p := range raw.Peers {
		peer, err := parsePeer(p, baseDir)
		if err != nil {
			return nil, fmt.Errorf("check peer %d (%q): %w", i, p.Name, err)
		}
		if names[peer.Name] {
			return nil, fmt.Errorf("peer name %q appears twice: give each peer its own name", peer.Name)
		}
		if ids[peer.NodeID] {
			return nil, fmt.Errorf("peer node id %s appears twice: list each node once", peer.NodeID)
		}
		names[peer.Name] = true
		ids[peer.NodeID] = true
		pf.Peers = append(pf.Peers, peer)
	}
	return pf, nil
}

func parsePeer(p peerfile.Peer, baseDir string) (Peer, error) {
	if p.Name == "" {
		return Peer{}, errors.New("name is empty")
	}
	u, err := url.Parse(p.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return Peer{}, fmt.Errorf("invalid url %q: use https://host:port", p.URL)
	}
	key, err := base64.StdEncoding.DecodeString(p.SigningKey)
	if err != nil || len(key) != ed25519.PublicKeySize {
		return Peer{}, fmt.Errorf("invalid signingKey %q: use the base64 Ed25519 public key that GET /v1/identity returns", p.SigningKey)
	}
	if want := ledger.NodeID(key); p.NodeID != want {
		return Peer{}, fmt.Errorf("nodeID %q does not match signingKey, whose node id is %s: copy both from the peer's GET /v1/identity", p.NodeID, want)
	}
	var recipientKey []byte
	if p.RecipientKey != "" {
		recipientKey, err = base64.StdEncoding.DecodeString(p.RecipientKey)
		if err != nil || len(recipientKey) != 32 {
			return Peer{}, fmt.Errorf("invalid recipientKey %q: use the base64 X25519 public key that GET /v1/identity returns", p.RecipientKey)
		}
	}
	return Peer{
		Name:         p.Name,
		URL:          p.URL,
		NodeID:       p.NodeID,
		SigningKey:   ed25519.PublicKey(key),
		RecipientKey: recipientKey,
		CAFile:       resolvePath(baseDir, p.CAFile),
		TokenFile:    resolvePath(baseDir, p.TokenFile),
	}, nil
}

func resolvePath(baseDir, path string) string {
	if path == "" || filepath.IsAbs(path) {
		return path
	}
	return filepath.Join(baseDir, path)
}

// MarshalPeerFile encodes pf in the peer file format, with caFile and
// tokenFile as given.
func MarshalPeerFile(pf *PeerFile) ([]byte, error) {
	raw := peerfile.File{BatchSize: pf.BatchSize, SealToPeers: pf.SealToPeers, Peers: []peerfile.Peer{}}
	if pf.Interval > 0 {
		raw.Interval = pf.Interval.String()
	}
	for _, p := range pf.Peers {
		pj := peerfile.Peer{
			Name:       p.Name,
			URL:        p.URL,
			NodeID:     p.NodeID,
			SigningKey: base64.StdEncoding.EncodeToString(p.SigningKey),
			CAFile:     p.CAFile,
			TokenFile:  p.TokenFile,
		}
		if len(p.RecipientKey) > 0 {
			pj.RecipientKey = base64.StdEncoding.EncodeToString(p.RecipientKey)
		}
		raw.Peers = append(raw.Peers, pj)
	}
	data, err := json.MarshalIndent(raw, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode peer file: %w", err)
	}
	return append(data, '\n'), nil
}

// PinStore holds the pinned keys of a peer file, by node id, and reloads
// them when the file changes. An empty path means no peers: every import
// is rejected because no sender is pinned.
type PinStore struct {
	path string

	mu       sync.RWMutex
	file     *PeerFile
	byID     map[string]Peer
	content  []byte
	loadedAt time.Time
	loadErr  error
	changed  chan struct{} // closed and replaced when the file changes
}

// NewPinStore loads the peer file at path. An empty path, or a file that
// does not exist yet, gives an empty store; a reload picks the file up when
// it appears.
func NewPinStore(path string) (*PinStore, error) {
	s := &PinStore{
		path:    path,
		file:    &PeerFile{Interval: DefaultSyncInterval, BatchSize: DefaultSyncBatchSize},
		byID:    map[string]Peer{},
		changed: make(chan struct{}),
	}
	if _, err := s.Reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// Reload reads the peer file again and reports whether it changed. On error
// the previous pins stay in force, and Status reports the error until a
// later reload succeeds.
func (s *PinStore) Reload() (bool, error) {
	changed, err := s.reload()
	s.mu.Lock()
	s.loadErr = err
	s.mu.Unlock()
	return changed, err
}

func (s *PinStore) reload() (bool, error) {
	if s.path == "" {
		return false, nil
	}
	data, err := os.ReadFile(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read peer file: %w", err)
	}

	s.mu.RLock()
	same := s.content != nil && bytes.Equal(data, s.content)
	s.mu.RUnlock()
	if same {
		return false, nil
	}

	pf, err := ParsePeerFile(data, filepath.Dir(s.path))
	if err != nil {
		return false, fmt.Errorf("load peer file %s: %w", s.path, err)
	}
	byID := make(map[string]Peer, len(pf.Peers))
	for _, p := range pf.Peers {
		byID[p.NodeID] = p
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.file = pf
	s.byID = byID
	s.content = data
	s.loadedAt = time.Now().UTC()
	close(s.changed)
	s.changed = make(chan struct{})
	return true, nil
}

// Changed returns a channel that is closed at the next change of the peer
// file, so that the sync loop applies it without polling.
func (s *PinStore) Changed() <-chan struct{} {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.changed
}

// Status returns the path, the time of the last successful load and the
// error of the last reload, if it failed.
func (s *PinStore) Status() PeerFileStatus {
	s.mu.RLock()
	defer s.mu.RUnlock()
	st := PeerFileStatus{Path: s.path, Peers: len(s.file.Peers)}
	if !s.loadedAt.IsZero() {
		at := s.loadedAt
		st.LoadedAt = &at
	}
	if s.loadErr != nil {
		st.Error = s.loadErr.Error()
	}
	return st
}

// Lookup returns the peer pinned under nodeID.
func (s *PinStore) Lookup(nodeID string) (Peer, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	p, ok := s.byID[nodeID]
	return p, ok
}

// File returns the current peer file. Callers must not modify it.
func (s *PinStore) File() *PeerFile {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.file
}

// SyncStatusSource reports per-peer sync state. The sync loop implements it;
// a node without one reports an empty peer list.
type SyncStatusSource interface {
	SyncStatus() []PeerStatus
}

func sortPeerStatus(list []PeerStatus) {
	sort.Slice(list, func(i, j int) bool { return list[i].Name < list[j].Name })
}
