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
// the durability policy holds for the entry. Encryption, key wrapping and
// most of the encoding run before the append lock. Sequencing, signing,
// hashing and the write run under it, in groups of queued appends, because
// each signature covers the hash of the line before it.
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

	// Seal the entry and build everything that does not depend on its place
	// in the chain.
	signer := req.Signer
	if signer == nil {
		signer = l.keys.signing
	}
	e, err := l.sealEntry(req, data, signer.Public().(ed25519.PublicKey))
	if err != nil {
		return EntryInfo{}, fmt.Errorf("append: %w", err)
	}
	p := newPendingAppend(e, signer)

	// A context cancelled while sealing stops the append before it is
	// queued. A queued entry is written even if the context is cancelled.
	if err := ctx.Err(); err != nil {
		return EntryInfo{}, fmt.Errorf("append: %w", err)
	}

	// Queue the entry and wait until a group write holds it.
	if err := l.commitOwn(p); err != nil {
		return EntryInfo{}, fmt.Errorf("append to thing %q: %w", req.Thing, err)
	}

	// Under "batch", wait for an fsync that started after the write.
	if l.opts.Durability == DurabilityBatch {
		if err := l.waitSynced(p.end); err != nil {
			return EntryInfo{}, fmt.Errorf("append to thing %q: %w", req.Thing, err)
		}
	}
	return p.info, nil
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

// maxGroupBytes bounds the lines of one group write. A group takes at least
// one entry, whatever its size. The bound keeps the group buffer and the
// time the append lock is held for one group (readers wait for it) bounded
// when many large entries are queued.
const maxGroupBytes = 4 << 20

// pendingAppend is one sealed own entry in the commit queue. The committer
// sets end, info and err before it sends on done.
type pendingAppend struct {
	entry  *Entry
	signer ed25519.PrivateKey
	// signed and line are built before the entry is queued, with zero
	// sequence, time and previous hash, which the committer fills in.
	signed   []byte
	signedAt signedOffsets
	line     lineTemplate

	end  int64 // file offset just past the entry's line
	info EntryInfo
	err  error
	// done receives true when a committer has written the entry (or failed
	// to), or false when this appender must commit the next group itself.
	done chan bool
}

func newPendingAppend(e *Entry, signer ed25519.PrivateKey) *pendingAppend {
	p := &pendingAppend{entry: e, signer: signer, done: make(chan bool, 1)}
	p.signed, p.signedAt = e.appendSigned(nil)
	p.line = newLineTemplate(e)
	return p
}

// commitOwn queues p and returns once p's line is written (and fsynced
// under "always"), or the group write failed. Appends commit in groups. The
// appender that finds no committer running becomes the committer and writes
// every queued entry with one write. Then it hands the role to the first
// appender queued meanwhile, so each appender commits at most one group,
// the one that contains its own entry.
func (l *Ledger) commitOwn(p *pendingAppend) error {
	// Join the queue, and take the committer role if no appender has it.
	l.queueMu.Lock()
	l.queue = append(l.queue, p)
	lead := !l.committing
	l.committing = true
	l.queueMu.Unlock()

	// Wait for a committer to write p, or to hand over the role. A handed
	// over role finds p first in the queue, so p is in the next group.
	if !lead {
		if written := <-p.done; written {
			return p.err
		}
	}

	// Commit one group: every entry queued by the time the lock is taken,
	// up to maxGroupBytes.
	l.mu.Lock()
	group := l.takeGroup()
	l.writeGroup(group)
	l.mu.Unlock()

	// Hand the role to the next queued appender before waking this group,
	// so the next group's signing starts at once.
	l.queueMu.Lock()
	var next *pendingAppend
	if len(l.queue) > 0 {
		next = l.queue[0]
	} else {
		l.committing = false
	}
	l.queueMu.Unlock()
	if next != nil {
		next.done <- false
	}

	// Hand every other appender of the group its result.
	for _, q := range group {
		if q != p {
			q.done <- true
		}
	}
	return p.err
}

// takeGroup removes the next group from the front of the queue.
func (l *Ledger) takeGroup() []*pendingAppend {
	l.queueMu.Lock()
	defer l.queueMu.Unlock()
	n, size := 0, 0
	for n < len(l.queue) {
		size += l.queue[n].line.maxLineLen() + 1
		if n > 0 && size > maxGroupBytes {
			break
		}
		n++
	}
	group := l.queue[:n:n]
	l.queue = append([]*pendingAppend(nil), l.queue[n:]...)
	return group
}

// writeGroup gives each entry of group the next sequence of this node's
// chain in queue order, signs it and writes all their lines with one write.
// It sets end and info of each, or the same err on all of them. The caller
// holds mu.
func (l *Ledger) writeGroup(group []*pendingAppend) {
	failAll := func(err error) {
		for _, q := range group {
			q.err = err
		}
	}
	if err := l.failure(); err != nil {
		failAll(err)
		return
	}

	// Start from the head of this node's chain.
	var head originState
	if st := l.origins[l.id.NodeID]; st != nil {
		head = *st
	}
	size := 0
	for _, q := range group {
		size += q.line.maxLineLen() + 1
	}
	buf := make([]byte, 0, size)
	hashes := make([][32]byte, len(group))
	starts := make([]int, len(group)+1)

	for i, q := range group {
		e := q.entry

		// Take the next sequence and a time that never goes back within the chain.
		now := l.opts.Now().UTC().UnixNano()
		if now <= head.time {
			now = head.time + 1
		}
		e.Sequence, e.Prev, e.Time = head.seq+1, head.hash, time.Unix(0, now).UTC()

		// Sign with the appender's key, node or client. The signature
		// covers the previous hash, so the entries are signed in order.
		setSigned(q.signed, q.signedAt, e.Sequence, now, e.Prev)
		e.Signature = ed25519.Sign(q.signer, q.signed)

		// Encode the line; the entry hash is over the exact line.
		starts[i] = len(buf)
		buf = q.line.appendLine(buf, e)
		hashes[i] = lineHash(buf[starts[i]:])
		buf = append(buf, '\n')
		head.seq, head.hash, head.time = e.Sequence, hashes[i], now
	}
	starts[len(group)] = len(buf)

	// Write the group at the end of the file with one write. A failed or
	// short write leaves the file in an unknown state, so it is fatal like a
	// failed fsync, and it fails every entry of the group.
	offset := l.size.Load()
	if _, err := l.file.WriteAt(buf, offset); err != nil {
		failAll(l.fail(fmt.Errorf("write %s at offset %d: %w", ledgerFile, offset, err)))
		return
	}

	// Index the entries, then publish the new file size.
	for i, q := range group {
		if err := l.index(q.entry, hashes[i], offset+int64(starts[i]), starts[i+1]-starts[i]); err != nil {
			// Broken invariant: the group was built from this origin's head under mu.
			panic(fmt.Sprintf("ledger: own entry does not continue its chain: %v", err))
		}
	}
	l.size.Store(offset + int64(len(buf)))

	// Under "always" the group gets one fsync before the lock is released
	// and before any appender of the group returns.
	if l.opts.Durability == DurabilityAlways {
		if err := l.fsync(); err != nil {
			failAll(l.fail(fmt.Errorf("fsync %s: %w", ledgerFile, err)))
			return
		}
	}
	for i, q := range group {
		e := q.entry
		q.end = offset + int64(starts[i+1])
		q.info = EntryInfo{Origin: e.Origin, Sequence: e.Sequence, Hash: hex.EncodeToString(hashes[i][:]), Time: e.Time, KeyID: e.KeyID}
	}
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
