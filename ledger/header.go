package ledger

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"golang.org/x/crypto/argon2"

	"github.com/thingdb/thingdb/internal/atomicfile"
)

// File names inside a ledger directory.
const (
	headerFile = "header.json"
	ledgerFile = "ledger.ndjson"
	headsFile  = "heads.json"

	headerFormat = 1
	// masterSalt is the fixed Argon2id salt that derives the master key from
	// the passphrase at Create. It is the same for every ledger, so ledgers
	// created with the same passphrase and KDF parameters share a master key
	// and read each other's entries.
	masterSalt   = "thingdb ledger master key v1"
	slotAADLabel = "thingdb key slot v1\x00"
)

// header is the content of header.json. Byte fields are base64 in JSON.
type header struct {
	Format       int         `json:"format"`
	NodeID       string      `json:"nodeID"`
	KeyID        string      `json:"keyID"`
	SigningKey   []byte      `json:"signingKey"`
	RecipientKey []byte      `json:"recipientKey"`
	Keys         []headerKey `json:"keys"`
	Slots        []keySlot   `json:"slots"`
	// NodeKeys is the Ed25519 seed followed by the X25519 private key,
	// sealed with AES-256-GCM under a key derived from the master key.
	NodeKeys []byte `json:"nodeKeys"`
}

// headerKey is a signing key this node has used. Retired keys stay listed so
// that the entries they signed can still be attributed.
type headerKey struct {
	KeyID      string `json:"keyID"`
	SigningKey []byte `json:"signingKey"`
	Retired    bool   `json:"retired,omitempty"`
}

// keySlot wraps the master key under a key derived from a passphrase.
type keySlot struct {
	KDF       string `json:"kdf"`
	Salt      []byte `json:"salt"`
	Time      uint32 `json:"time"`
	MemoryKiB uint32 `json:"memoryKiB"`
	Threads   uint8  `json:"threads"`
	Wrapped   []byte `json:"wrapped"` // GCM nonce followed by the sealed master key
}

func argon2Key(passphrase, salt []byte, p KDFParams) []byte {
	return argon2.IDKey(passphrase, salt, p.Time, p.MemoryKiB, p.Threads, keySize)
}

func newKeySlot(nodeID string, passphrase, master []byte, p KDFParams) keySlot {
	salt := randomBytes(16)
	kek := argon2Key(passphrase, salt, p)
	nonce := randomBytes(nonceSize)
	sealed := newGCM(kek).Seal(nonce, nonce, master, []byte(slotAADLabel+nodeID))
	return keySlot{KDF: "argon2id", Salt: salt, Time: p.Time, MemoryKiB: p.MemoryKiB, Threads: p.Threads, Wrapped: sealed}
}

// unlock tries each key slot and returns the master key and the slot index.
func (h *header) unlock(passphrase []byte) ([]byte, int, error) {
	for i, s := range h.Slots {
		p := KDFParams{Time: s.Time, MemoryKiB: s.MemoryKiB, Threads: s.Threads}
		if s.KDF != "argon2id" {
			return nil, 0, fmt.Errorf("key slot %d: unsupported KDF %q", i, s.KDF)
		}
		if err := p.validate(); err != nil {
			return nil, 0, fmt.Errorf("key slot %d: %w", i, err)
		}
		if len(s.Wrapped) != nonceSize+keySize+16 {
			return nil, 0, fmt.Errorf("key slot %d: wrapped key has %d bytes", i, len(s.Wrapped))
		}
		kek := argon2Key(passphrase, s.Salt, p)
		master, err := newGCM(kek).Open(nil, s.Wrapped[:nonceSize], s.Wrapped[nonceSize:], []byte(slotAADLabel+h.NodeID))
		if err == nil {
			return master, i, nil
		}
	}
	return nil, 0, ErrWrongPassphrase
}

// nodeKeys holds the node's private keys once the header is unlocked.
type nodeKeys struct {
	signing   ed25519.PrivateKey
	recipient *ecdh.PrivateKey
}

func sealNodeKeys(master []byte, nodeID string, k nodeKeys) []byte {
	plain := append(append([]byte{}, k.signing.Seed()...), k.recipient.Bytes()...)
	nonce := randomBytes(nonceSize)
	return newGCM(deriveKey(master, infoNodeKeys)).Seal(nonce, nonce, plain, []byte(nodeID))
}

func (h *header) openNodeKeys(master []byte) (nodeKeys, error) {
	if len(h.NodeKeys) < nonceSize {
		return nodeKeys{}, errors.New("node keys are missing from the header")
	}
	plain, err := newGCM(deriveKey(master, infoNodeKeys)).Open(nil, h.NodeKeys[:nonceSize], h.NodeKeys[nonceSize:], []byte(h.NodeID))
	if err != nil || len(plain) != 2*keySize {
		return nodeKeys{}, errors.New("node keys in the header do not decrypt under the master key")
	}
	signing := ed25519.NewKeyFromSeed(plain[:keySize])
	recipient, err := ecdh.X25519().NewPrivateKey(plain[keySize:])
	if err != nil {
		return nodeKeys{}, fmt.Errorf("parse X25519 key: %w", err)
	}
	if !bytes.Equal(signing.Public().(ed25519.PublicKey), h.SigningKey) || !bytes.Equal(recipient.PublicKey().Bytes(), h.RecipientKey) {
		return nodeKeys{}, errors.New("node keys in the header do not match its public keys")
	}
	return nodeKeys{signing: signing, recipient: recipient}, nil
}

func (h *header) check() error {
	if h.Format != headerFormat {
		return fmt.Errorf("unsupported header format %d", h.Format)
	}
	if len(h.SigningKey) != ed25519.PublicKeySize || len(h.RecipientKey) != keySize {
		return errors.New("header public keys have the wrong size")
	}
	if len(h.Keys) == 0 || len(h.Slots) == 0 {
		return errors.New("header has no signing keys or no key slots")
	}
	if h.KeyID != keyID(h.SigningKey) {
		return fmt.Errorf("header key id %s does not match its signing key", h.KeyID)
	}
	// The node id stays that of the first key when keys are rotated.
	if h.NodeID != nodeID(h.Keys[0].SigningKey) {
		return fmt.Errorf("header node id %s does not match its first signing key", h.NodeID)
	}
	return nil
}

func readHeader(dir string) (*header, error) {
	raw, err := os.ReadFile(filepath.Join(dir, headerFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read header in %s: %w", dir, ErrNoLedger)
	}
	if err != nil {
		return nil, fmt.Errorf("read header: %w", err)
	}
	h := &header{}
	if err := json.Unmarshal(raw, h); err != nil {
		return nil, fmt.Errorf("parse %s: %w", filepath.Join(dir, headerFile), err)
	}
	if err := h.check(); err != nil {
		return nil, fmt.Errorf("check %s: %w", filepath.Join(dir, headerFile), err)
	}
	return h, nil
}

func writeHeader(dir string, h *header) error {
	raw, err := json.MarshalIndent(h, "", "  ")
	if err != nil {
		return fmt.Errorf("encode header: %w", err)
	}
	return atomicfile.Write(filepath.Join(dir, headerFile), append(raw, '\n'), 0o600)
}

// ChangePassphrase replaces the key slot that oldPassphrase opens with one for
// newPassphrase. Only header.json is rewritten, atomically; the master key and
// every entry stay as they are. A zero kdf means DefaultKDF.
func ChangePassphrase(dir string, oldPassphrase, newPassphrase []byte, kdf KDFParams) error {
	kdf = kdf.orDefault()
	if err := kdf.validate(); err != nil {
		return fmt.Errorf("change passphrase: %w", err)
	}
	if len(newPassphrase) == 0 {
		return errors.New("change passphrase: the new passphrase is empty; use a non-empty passphrase")
	}
	h, err := readHeader(dir)
	if err != nil {
		return fmt.Errorf("change passphrase: %w", err)
	}
	master, slot, err := h.unlock(oldPassphrase)
	if err != nil {
		return fmt.Errorf("change passphrase: %w", err)
	}
	h.Slots[slot] = newKeySlot(h.NodeID, newPassphrase, master, kdf)
	if err := writeHeader(dir, h); err != nil {
		return fmt.Errorf("change passphrase: %w", err)
	}
	return nil
}

// remembered heads: heads.json records, per origin, the highest head this
// node has made durable, so that Open and Verify notice entries that were
// removed from the end of ledger.ndjson. It is authenticated with an HMAC
// under a key derived from the master key, so it cannot be lowered without
// the passphrase; replacing it with an older copy of itself is still possible.
type headsFileContent struct {
	Heads []Head `json:"heads"`
	MAC   []byte `json:"mac"`
}

func headsMAC(master []byte, heads []Head) []byte {
	m := hmac.New(sha256.New, deriveKey(master, infoHeadsMAC))
	for _, h := range heads {
		m.Write(appendField(nil, []byte(h.Origin)))
		m.Write(binary.BigEndian.AppendUint64(nil, h.Sequence))
		m.Write(appendField(nil, []byte(h.Hash)))
	}
	return m.Sum(nil)
}

func readHeads(dir string, master []byte) (map[string]Head, error) {
	raw, err := os.ReadFile(filepath.Join(dir, headsFile))
	if err != nil {
		return nil, fmt.Errorf("read remembered heads: %w", err)
	}
	var c headsFileContent
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, fmt.Errorf("parse %s: %w", headsFile, err)
	}
	if !hmac.Equal(c.MAC, headsMAC(master, c.Heads)) {
		return nil, fmt.Errorf("check %s: MAC mismatch; the file was altered or belongs to another ledger", headsFile)
	}
	out := make(map[string]Head, len(c.Heads))
	for _, h := range c.Heads {
		if _, err := hex.DecodeString(h.Hash); err != nil || len(h.Hash) != 64 || !validHexID(h.Origin) {
			return nil, fmt.Errorf("check %s: invalid head for origin %q", headsFile, h.Origin)
		}
		out[h.Origin] = h
	}
	return out, nil
}

func writeHeads(dir string, master []byte, heads []Head) error {
	sort.Slice(heads, func(i, j int) bool { return heads[i].Origin < heads[j].Origin })
	raw, err := json.Marshal(headsFileContent{Heads: heads, MAC: headsMAC(master, heads)})
	if err != nil {
		return fmt.Errorf("encode remembered heads: %w", err)
	}
	return atomicfile.Write(filepath.Join(dir, headsFile), append(raw, '\n'), 0o600)
}
