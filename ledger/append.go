package ledger

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Recipient is a peer node that envelope mode makes an entry readable for.
type Recipient struct {
	NodeID    string
	PublicKey []byte // X25519 public key
}

// AppendRequest is one new version of a thing.
type AppendRequest struct {
	Thing string
	Actor string
	// Data is the new value, any JSON value. It is stored compacted.
	Data json.RawMessage
	// Recipients turn on envelope mode: each recipient can decrypt the entry
	// with its X25519 key, whatever its passphrase.
	Recipients []Recipient
	// Signer signs the entry in place of the node key, for client-side
	// signing by the actor. Nil means the node key.
	Signer ed25519.PrivateKey
}

// EntryInfo identifies a stored entry.
type EntryInfo struct {
	Origin   string
	Sequence uint64
	Hash     string // hex SHA-256 of the line
	Time     time.Time
	KeyID    string
}

// epochLimit is how many entries one epoch key serves before a new one is
// sealed. Each entry's wrapping key is derived from the epoch key and the
// entry nonce, so the limit only bounds how long one sealed key stays in use.
const epochLimit = 1 << 20

type epoch struct {
	key    []byte
	sealed []byte
	uses   int
}

// epochCache holds the sender's current epoch key per recipient.
type epochCache struct {
	mu sync.Mutex
	m  map[string]*epoch // recipient node id and public key -> epoch
}

func (c *epochCache) get(r Recipient) (key, sealed []byte, err error) {
	id := r.NodeID + "/" + hex.EncodeToString(r.PublicKey)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]*epoch{}
	}
	ep := c.m[id]
	if ep == nil || ep.uses >= epochLimit {
		key := randomBytes(keySize)
		sealed, err := sealEpochKey(r.NodeID, r.PublicKey, key)
		if err != nil {
			return nil, nil, err
		}
		ep = &epoch{key: key, sealed: sealed}
		c.m[id] = ep
	}
	ep.uses++
	return ep.key, ep.sealed, nil
}

// openedEpochCache holds the epoch keys this node opened as a recipient,
// keyed by the SHA-256 of the sealed blob.
type openedEpochCache struct {
	mu sync.Mutex
	m  map[[32]byte][]byte
}

const openedEpochMax = 4096

func (c *openedEpochCache) open(self string, priv *ecdh.PrivateKey, sealed []byte) ([]byte, error) {
	id := sha256.Sum256(sealed)
	c.mu.Lock()
	key, ok := c.m[id]
	c.mu.Unlock()
	if ok {
		return key, nil
	}
	key, err := openEpochKey(self, priv, sealed)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= openedEpochMax {
		c.m = map[[32]byte][]byte{}
	}
	c.m[id] = key
	c.mu.Unlock()
	return key, nil
}

func (req *AppendRequest) validate() ([]byte, error) {
	if err := validID("thing", req.Thing); err != nil {
		return nil, err
	}
	if err := validID("actor", req.Actor); err != nil {
		return nil, err
	}
	if len(req.Data) == 0 {
		return nil, fmt.Errorf("missing data for thing %q: use any JSON value", req.Thing)
	}
	if len(req.Data) > MaxDataSize {
		return nil, fmt.Errorf("data of thing %q has %d bytes; the maximum is %d", req.Thing, len(req.Data), MaxDataSize)
	}
	var data bytes.Buffer
	if err := json.Compact(&data, req.Data); err != nil {
		return nil, fmt.Errorf("invalid JSON data for thing %q: %w", req.Thing, err)
	}
	if len(req.Recipients) > MaxRecipients {
		return nil, fmt.Errorf("%d recipients; the maximum is %d", len(req.Recipients), MaxRecipients)
	}
	seen := map[string]bool{}
	for _, r := range req.Recipients {
		if !validHexID(r.NodeID) {
			return nil, fmt.Errorf("invalid recipient node id %q: use the %d-digit hex node id", r.NodeID, idHexLen)
		}
		if seen[r.NodeID] {
			return nil, fmt.Errorf("recipient %s is listed twice", r.NodeID)
		}
		seen[r.NodeID] = true
		if _, err := ecdh.X25519().NewPublicKey(r.PublicKey); err != nil {
			return nil, fmt.Errorf("invalid X25519 public key of recipient %s: %w", r.NodeID, err)
		}
	}
	if req.Signer != nil {
		if len(req.Signer) != ed25519.PrivateKeySize {
			return nil, fmt.Errorf("invalid signer key: %d bytes, want %d", len(req.Signer), ed25519.PrivateKeySize)
		}
		derived := ed25519.NewKeyFromSeed(req.Signer.Seed())
		if !bytes.Equal(derived[32:], req.Signer[32:]) {
			return nil, errors.New("invalid signer key: the public half does not match the seed")
		}
	}
	return data.Bytes(), nil
}

// Append adds a new version of a thing to this node's chain. It returns once
// the durability policy holds for the entry. Encryption and key wrapping run
// before the append lock; signing, hashing and the write run under it,
// because each signature covers the hash of the line before it.
func (l *Ledger) Append(ctx context.Context, req AppendRequest) (EntryInfo, error) {
	data, err := req.validate()
	if err != nil {
		return EntryInfo{}, fmt.Errorf("append: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return EntryInfo{}, fmt.Errorf("append: %w", err)
	}
	if err := l.begin(); err != nil {
		return EntryInfo{}, fmt.Errorf("append: %w", err)
	}
	defer l.end()

	signer := req.Signer
	if signer == nil {
		signer = l.keys.signing
	}
	e, err := l.sealEntry(req, data, signer.Public().(ed25519.PublicKey))
	if err != nil {
		return EntryInfo{}, fmt.Errorf("append: %w", err)
	}

	end, info, err := l.writeOwn(e, signer)
	if err != nil {
		return EntryInfo{}, fmt.Errorf("append to thing %q: %w", req.Thing, err)
	}
	if l.opts.Durability == DurabilityBatch {
		if err := l.waitSynced(end); err != nil {
			return EntryInfo{}, fmt.Errorf("append to thing %q: %w", req.Thing, err)
		}
	}
	return info, nil
}

// sealEntry builds an unsigned entry without sequence, time and previous
// hash: fresh content key, ciphertext, data hash and wrapped keys.
func (l *Ledger) sealEntry(req AppendRequest, data []byte, actorKey ed25519.PublicKey) (*Entry, error) {
	e := &Entry{
		Version:  FormatVersion,
		Origin:   l.id.NodeID,
		Thing:    req.Thing,
		Actor:    req.Actor,
		KeyID:    keyID(actorKey),
		ActorKey: actorKey,
		Nonce:    randomBytes(nonceSize),
	}
	cek := randomBytes(keySize)
	e.Ciphertext = newGCM(cek).Seal(nil, e.Nonce, data, e.additionalData())
	e.DataHash = dataHash(cek, data)
	e.Wrap = wrapContentKey(l.master, infoLedgerWrap, e.Origin, e.Nonce, cek)
	for _, r := range req.Recipients {
		key, sealed, err := l.epochs.get(r)
		if err != nil {
			return nil, err
		}
		e.Envelopes = append(e.Envelopes, Envelope{
			To:     r.NodeID,
			Sealed: sealed,
			Wrap:   wrapContentKey(key, infoEnvelopeWrap, e.Origin, e.Nonce, cek),
		})
	}
	return e, nil
}

// writeOwn gives e the next sequence of this node's chain, signs it and
// writes it. It returns the file offset just past the entry.
func (l *Ledger) writeOwn(e *Entry, signer ed25519.PrivateKey) (int64, EntryInfo, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.failure(); err != nil {
		return 0, EntryInfo{}, err
	}

	// Take the next sequence and a time that never goes back within the chain.
	st := l.origins[e.Origin]
	if st == nil {
		st = &originState{}
	}
	e.Sequence, e.Prev = st.seq+1, st.hash
	now := l.opts.Now().UTC().UnixNano()
	if now <= st.time {
		now = st.time + 1
	}
	e.Time = time.Unix(0, now).UTC()

	// Sign and encode; the entry hash is over the exact line.
	e.Signature = ed25519.Sign(signer, e.signedBytes())
	buf := e.appendLine(make([]byte, 0, 1024+len(e.Ciphertext)*4/3))
	hash := lineHash(buf)
	buf = append(buf, '\n')

	// Write at the end of the file. A failed or short write leaves the file
	// in an unknown state, so it is fatal like a failed fsync.
	offset := l.size.Load()
	if _, err := l.file.WriteAt(buf, offset); err != nil {
		return 0, EntryInfo{}, l.fail(fmt.Errorf("write %s at offset %d: %w", ledgerFile, offset, err))
	}
	if err := l.index(e, hash, offset, len(buf)); err != nil {
		// Broken invariant: the entry was built from this origin's head under mu.
		panic(fmt.Sprintf("ledger: own entry does not continue its chain: %v", err))
	}
	end := offset + int64(len(buf))
	l.size.Store(end)

	// Under "always" each entry gets its own fsync before the lock is released.
	if l.opts.Durability == DurabilityAlways {
		if err := l.fsync(); err != nil {
			return 0, EntryInfo{}, l.fail(fmt.Errorf("fsync %s: %w", ledgerFile, err))
		}
	}
	info := EntryInfo{Origin: e.Origin, Sequence: e.Sequence, Hash: hex.EncodeToString(hash[:]), Time: e.Time, KeyID: e.KeyID}
	return end, info, nil
}

// waitSynced returns once an fsync that started after offset end was written
// has finished. This is the group commit: the first waiter fsyncs for
// everyone whose entry was written before the fsync started; entries written
// during that fsync wait for the next one.
func (l *Ledger) waitSynced(end int64) error {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	for {
		if err := l.failure(); err != nil {
			return err
		}
		if l.synced >= end {
			return nil
		}
		if l.syncing {
			l.syncCond.Wait()
			continue
		}

		// Lead one fsync round covering every byte written so far.
		l.syncing = true
		target := l.size.Load()
		l.syncMu.Unlock()
		err := l.fsync()
		l.syncMu.Lock()
		l.syncing = false
		if err != nil {
			l.fail(fmt.Errorf("fsync %s: %w", ledgerFile, err))
		} else if target > l.synced {
			l.synced = target
		}
		l.syncCond.Broadcast()
	}
}
