package ledger

import (
	"bufio"
	"context"
	"crypto/ecdh"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
)

// Identity is the public identity of a ledger's node.
type Identity struct {
	NodeID       string
	KeyID        string
	SigningKey   ed25519.PublicKey
	RecipientKey []byte // X25519 public key for envelope mode
}

// TailRepair records where Open cut a torn last line and how many bytes it cut.
type TailRepair struct {
	Offset int64
	Bytes  int64
}

// Head is the last entry of one origin.
type Head struct {
	Origin   string `json:"origin"`
	Sequence uint64 `json:"sequence"`
	Hash     string `json:"hash"` // hex SHA-256 of the line
}

// originState is the in-memory index of one origin's chain.
type originState struct {
	seq  uint64
	hash [32]byte
	time int64 // unix nanoseconds of the head entry
	// Where the head line is, to name the right line when a link breaks.
	line   int
	offset int64
	length int
}

// thingState is the in-memory index of one thing: where its latest entry is
// and how many entries it has. The latest entry is the one with the greatest
// (time, origin, sequence), so it does not depend on file order.
type thingState struct {
	offset int64
	length int32
	count  int32
	time   int64
	origin string
	seq    uint64
}

func (s *thingState) olderThan(time int64, origin string, seq uint64) bool {
	if s.time != time {
		return s.time < time
	}
	if s.origin != origin {
		return s.origin < origin
	}
	return s.seq < seq
}

// Ledger is an open ledger directory. Its methods are safe for concurrent use.
type Ledger struct {
	dir    string
	opts   Options
	file   *os.File
	master []byte
	keys   nodeKeys
	id     Identity
	repair *TailRepair

	// closeMu is held shared by every operation and exclusively by Close,
	// so Close waits for operations in flight.
	closeMu sync.RWMutex
	closed  bool

	// mu serialises writes to the file and guards the index.
	mu      sync.Mutex
	size    atomic.Int64 // bytes of complete lines written to the file
	lines   int          // complete lines in the file
	origins map[string]*originState
	things  map[string]*thingState
	failed  atomic.Pointer[error]

	// Commit queue of own entries, guarded by queueMu. committing is true
	// while an appender has the committer role (see commitOwn).
	queueMu    sync.Mutex
	queue      []*pendingAppend
	committing bool

	// headsMu serialises writes of heads.json and guards remembered.
	headsMu    sync.Mutex
	remembered map[string]Head

	// Group commit state, guarded by syncMu.
	syncMu   sync.Mutex
	syncCond *sync.Cond
	synced   int64
	syncing  bool

	// testSync replaces the ledger file's fsync in tests.
	testSync func() error

	epochs     epochCache
	openEpochs openedEpochCache
}

// Exists reports whether dir holds a ledger.
func Exists(dir string) (bool, error) {
	for _, name := range []string{headerFile, ledgerFile} {
		_, err := os.Stat(filepath.Join(dir, name))
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return false, fmt.Errorf("check ledger in %s: %w", dir, err)
		}
	}
	return false, nil
}

// Create makes a new ledger in dir, creating dir if needed. It returns
// ErrExists when dir already holds a ledger.
func Create(dir string, passphrase []byte, opts Options) (*Ledger, error) {
	opts, err := opts.normalize()
	if err != nil {
		return nil, fmt.Errorf("create ledger: %w", err)
	}
	if len(passphrase) == 0 {
		return nil, errors.New("create ledger: the passphrase is empty; use a non-empty passphrase")
	}
	exists, err := Exists(dir)
	if err != nil {
		return nil, fmt.Errorf("create ledger: %w", err)
	}
	if exists {
		return nil, fmt.Errorf("create ledger in %s: %w", dir, ErrExists)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create ledger directory: %w", err)
	}

	// Derive the master key and make the node keys.
	master := argon2Key(passphrase, []byte(masterSalt), opts.KDF)
	_, signing, err := ed25519.GenerateKey(nil)
	if err != nil {
		return nil, fmt.Errorf("generate signing key: %w", err)
	}
	recipient, err := ecdh.X25519().GenerateKey(nil)
	if err != nil {
		return nil, fmt.Errorf("generate recipient key: %w", err)
	}
	pub := signing.Public().(ed25519.PublicKey)
	h := &header{
		Format:       headerFormat,
		NodeID:       nodeID(pub),
		KeyID:        keyID(pub),
		SigningKey:   pub,
		RecipientKey: recipient.PublicKey().Bytes(),
		Keys:         []headerKey{{KeyID: keyID(pub), SigningKey: pub}},
	}
	h.Slots = []keySlot{newKeySlot(h.NodeID, passphrase, master, opts.KDF)}
	h.NodeKeys = sealNodeKeys(master, h.NodeID, nodeKeys{signing: signing, recipient: recipient})

	// Create the empty ledger file and the remembered heads before the
	// header, so a directory with a header is always complete. O_EXCL
	// keeps a concurrent Create from sharing the file.
	f, err := os.OpenFile(filepath.Join(dir, ledgerFile), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create ledger file: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, fmt.Errorf("fsync ledger file: %w", err)
	}
	f.Close()
	if err := writeHeads(dir, master, nil); err != nil {
		return nil, fmt.Errorf("create ledger: %w", err)
	}
	if err := writeHeader(dir, h); err != nil {
		return nil, fmt.Errorf("create ledger: %w", err)
	}
	return open(dir, h, master, opts)
}

// Open opens the ledger in dir. It returns ErrNoLedger when there is none and
// ErrWrongPassphrase, before anything is written, when no key slot opens.
// Open cuts a torn last line (see TailRepair); any other damage is an error.
func Open(dir string, passphrase []byte, opts Options) (*Ledger, error) {
	opts, err := opts.normalize()
	if err != nil {
		return nil, fmt.Errorf("open ledger: %w", err)
	}
	h, err := readHeader(dir)
	if err != nil {
		return nil, fmt.Errorf("open ledger: %w", err)
	}
	master, _, err := h.unlock(passphrase)
	if err != nil {
		return nil, fmt.Errorf("open ledger in %s: %w", dir, err)
	}
	return open(dir, h, master, opts)
}

func open(dir string, h *header, master []byte, opts Options) (*Ledger, error) {
	keys, err := h.openNodeKeys(master)
	if err != nil {
		return nil, fmt.Errorf("open ledger: %w", err)
	}
	remembered, err := readHeads(dir, master)
	if err != nil {
		return nil, fmt.Errorf("open ledger: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, ledgerFile), os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("open ledger file: %w", err)
	}
	// One process at a time: the lock goes away with the process, so a
	// crashed writer never blocks the next Open.
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w; another process has the ledger open", filepath.Join(dir, ledgerFile), err)
	}
	l := &Ledger{
		dir:    dir,
		opts:   opts,
		file:   f,
		master: master,
		keys:   keys,
		id: Identity{
			NodeID:       h.NodeID,
			KeyID:        h.KeyID,
			SigningKey:   append(ed25519.PublicKey{}, h.SigningKey...),
			RecipientKey: append([]byte{}, h.RecipientKey...),
		},
		origins:    map[string]*originState{},
		things:     map[string]*thingState{},
		remembered: remembered,
	}
	l.syncCond = sync.NewCond(&l.syncMu)
	if err := l.load(); err != nil {
		f.Close()
		return nil, fmt.Errorf("open ledger in %s: %w", dir, err)
	}
	return l, nil
}

// load scans the ledger file once, builds the index, checks each origin's
// chain links (not the signatures, which Verify checks) and cuts a torn tail.
func (l *Ledger) load() error {
	info, err := l.file.Stat()
	if err != nil {
		return fmt.Errorf("stat ledger file: %w", err)
	}
	fileSize := info.Size()
	r := bufio.NewReaderSize(io.NewSectionReader(l.file, 0, fileSize), 1<<20)
	var (
		offset int64
		lines  int // complete lines indexed so far
		torn   bool
	)
	for offset < fileSize {
		line, err := readLine(r)
		lineNo := lines + 1
		if errors.Is(err, io.EOF) || errors.Is(err, errLineTooLong) {
			// The last line has no newline: a write that did not finish.
			torn = true
			break
		}
		if err != nil {
			return fmt.Errorf("read line %d: %w", lineNo, err)
		}
		e, err := parseEntry(line[:len(line)-1])
		if err != nil {
			if offset+int64(len(line)) == fileSize {
				// An unparsable last line is also a torn write, for
				// example a tail of zeros after a crash.
				torn = true
				break
			}
			return l.pinpoint(offset+int64(len(line)), &VerifyError{Line: lineNo, Reason: err.Error()})
		}
		if err := l.index(e, lineHash(line[:len(line)-1]), offset, len(line)); err != nil {
			return l.pinpoint(offset+int64(len(line)), &VerifyError{Line: lineNo, Origin: e.Origin, Sequence: e.Sequence, Reason: err.Error()})
		}
		offset += int64(len(line))
		lines++
	}
	l.size.Store(offset)
	l.synced = offset

	// Entries this node recorded as durable must still be there, before any
	// repair is written.
	if err := l.checkRemembered(lines + 1); err != nil {
		return l.pinpoint(offset, err)
	}

	// Cut the torn tail, then fsync so the cut lasts before any append.
	if torn {
		if err := l.file.Truncate(offset); err != nil {
			return fmt.Errorf("truncate torn tail at offset %d: %w", offset, err)
		}
		if err := l.file.Sync(); err != nil {
			return fmt.Errorf("fsync after truncating torn tail: %w", err)
		}
		l.repair = &TailRepair{Offset: offset, Bytes: fileSize - offset}
	}
	return nil
}

// index checks that e continues its origin's chain and adds it to the index.
// The caller holds mu or has the ledger to itself.
func (l *Ledger) index(e *Entry, hash [32]byte, offset int64, length int) error {
	st := l.origins[e.Origin]
	if st == nil {
		st = &originState{}
	}
	if err := checkLink(st, e); err != nil {
		return err
	}
	if l.origins[e.Origin] == nil {
		l.origins[e.Origin] = st
	}
	l.lines++
	st.seq, st.hash, st.time = e.Sequence, hash, e.Time.UnixNano()
	st.line, st.offset, st.length = l.lines, offset, length

	t := l.things[e.Thing]
	if t == nil {
		t = &thingState{}
		l.things[e.Thing] = t
	}
	t.count++
	if t.count == 1 || t.olderThan(st.time, e.Origin, e.Sequence) {
		t.offset, t.length, t.time, t.origin, t.seq = offset, int32(length), st.time, e.Origin, e.Sequence
	}
	return nil
}

// checkLink checks that e directly follows the head st of its origin.
func checkLink(st *originState, e *Entry) error {
	if e.Sequence != st.seq+1 {
		return fmt.Errorf("sequence %d does not follow head sequence %d of the origin", e.Sequence, st.seq)
	}
	if e.Prev != st.hash {
		return fmt.Errorf("previous hash %s does not match the hash %s of sequence %d", hex.EncodeToString(e.Prev[:]), hex.EncodeToString(st.hash[:]), st.seq)
	}
	if e.Time.UnixNano() < st.time {
		return fmt.Errorf("time %s is before the time of sequence %d", e.Time.Format(timeLayout), st.seq)
	}
	return nil
}

// pinpoint re-reads the first size bytes of the file with every check of
// Verify after Open found an error, because Open does not check signatures:
// a line that Open accepted may be the altered one, and a broken link found
// later only points near it. It returns the error Verify names first, or
// found when Verify finds nothing before it.
func (l *Ledger) pinpoint(size int64, found error) error {
	_, err := verifyStream(context.Background(), io.NewSectionReader(l.file, 0, size), l.remembered)
	var ve, foundVE *VerifyError
	if errors.As(err, &ve) && (!errors.As(found, &foundVE) || ve.Line <= foundVE.Line) {
		return ve
	}
	return found
}

// checkRemembered reports the first origin whose head is below the head
// recorded in heads.json.
func (l *Ledger) checkRemembered(line int) error {
	for _, origin := range sortedKeys(l.remembered) {
		h := l.remembered[origin]
		var have uint64
		if st := l.origins[origin]; st != nil {
			have = st.seq
			if st.seq == h.Sequence && hex.EncodeToString(st.hash[:]) != h.Hash {
				return &VerifyError{Line: st.line, Origin: origin, Sequence: h.Sequence, Reason: "the line differs from the head recorded in " + headsFile, Err: ErrRollback}
			}
		}
		if have < h.Sequence {
			return &VerifyError{Line: line, Origin: origin, Sequence: have + 1,
				Reason: fmt.Sprintf("the file ends at sequence %d but sequence %d was recorded as durable; sequences %d to %d were removed", have, h.Sequence, have+1, h.Sequence),
				Err:    ErrRollback}
		}
	}
	return nil
}

var errLineTooLong = errors.New("line too long")

// readLine returns the next line including its newline. It returns io.EOF
// with a partial line that has no newline, and errLineTooLong past MaxLineSize.
func readLine(r *bufio.Reader) ([]byte, error) {
	line, err := r.ReadSlice('\n')
	if err == nil {
		return line, nil
	}
	if !errors.Is(err, bufio.ErrBufferFull) {
		if err == io.EOF && len(line) == 0 {
			return nil, io.EOF
		}
		return line, err
	}
	buf := append([]byte{}, line...)
	for {
		line, err = r.ReadSlice('\n')
		buf = append(buf, line...)
		if len(buf) > MaxLineSize+1 {
			return buf, errLineTooLong
		}
		if err == nil {
			return buf, nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return buf, err
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Close waits for operations in flight, fsyncs what was written, records the
// heads in heads.json and closes the file. Closing twice returns ErrClosed.
func (l *Ledger) Close() error {
	l.closeMu.Lock()
	defer l.closeMu.Unlock()
	if l.closed {
		return ErrClosed
	}
	l.closed = true
	// Closing a file opened for writing reports no error worth acting on
	// once it was fsynced, and an fsync failure is returned below.
	defer l.file.Close()

	if err := l.failure(); err != nil {
		return fmt.Errorf("close ledger: %w", err)
	}
	// Flush: fsync everything written, then record the heads it covers.
	if err := l.fsync(); err != nil {
		return fmt.Errorf("close ledger: fsync %s: %w", ledgerFile, err)
	}
	if err := l.rememberHeads(l.Heads()); err != nil {
		return fmt.Errorf("close ledger: %w", err)
	}
	return nil
}

// rememberHeads records heads in heads.json, keeping the higher of the new
// and the recorded sequence per origin. The caller must have fsynced the
// entries of these heads first, so heads.json never runs ahead of the file.
func (l *Ledger) rememberHeads(heads []Head) error {
	l.headsMu.Lock()
	defer l.headsMu.Unlock()
	merged := make(map[string]Head, len(l.remembered)+len(heads))
	for origin, h := range l.remembered {
		merged[origin] = h
	}
	changed := false
	for _, h := range heads {
		if old, ok := merged[h.Origin]; !ok || h.Sequence > old.Sequence {
			merged[h.Origin] = h
			changed = true
		}
	}
	if !changed {
		return nil
	}
	list := make([]Head, 0, len(merged))
	for _, h := range merged {
		list = append(list, h)
	}
	if err := writeHeads(l.dir, l.master, list); err != nil {
		return err
	}
	l.remembered = merged
	return nil
}

// rememberedHeads returns a copy of the heads recorded in heads.json.
func (l *Ledger) rememberedHeads() map[string]Head {
	l.headsMu.Lock()
	defer l.headsMu.Unlock()
	out := make(map[string]Head, len(l.remembered))
	for origin, h := range l.remembered {
		out[origin] = h
	}
	return out
}

func (l *Ledger) failure() error {
	if p := l.failed.Load(); p != nil {
		return fmt.Errorf("%w: %w", ErrFailed, *p)
	}
	return nil
}

// fail records a write or fsync error. The ledger rejects later writes
// because the file's state after a failed fsync is unknown; retrying could
// report data as durable that the kernel already dropped.
func (l *Ledger) fail(err error) error {
	l.failed.CompareAndSwap(nil, &err)
	return fmt.Errorf("%w: %w", ErrFailed, err)
}

// begin takes the shared close lock and reports ErrClosed after Close.
func (l *Ledger) begin() error {
	l.closeMu.RLock()
	if l.closed {
		l.closeMu.RUnlock()
		return ErrClosed
	}
	return nil
}

func (l *Ledger) end() { l.closeMu.RUnlock() }

// Identity returns the node's public identity.
func (l *Ledger) Identity() Identity { return l.id }

// TailRepair returns what Open cut from the end of the file, or nil.
func (l *Ledger) TailRepair() *TailRepair {
	if l.repair == nil {
		return nil
	}
	r := *l.repair
	return &r
}

// Sign signs msg with the node key under a domain string, for messages
// outside the ledger such as sync batches. Check it with VerifySigned.
func (l *Ledger) Sign(domain string, msg []byte) []byte {
	return ed25519.Sign(l.keys.signing, signedMessage(domain, msg))
}

// Heads returns every origin's head, sorted by origin.
func (l *Ledger) Heads() []Head {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.headsLocked()
}

func (l *Ledger) headsLocked() []Head {
	heads := make([]Head, 0, len(l.origins))
	for _, origin := range sortedKeys(l.origins) {
		st := l.origins[origin]
		heads = append(heads, Head{Origin: origin, Sequence: st.seq, Hash: hex.EncodeToString(st.hash[:])})
	}
	return heads
}

// Size returns the length in bytes of ledger.ndjson.
func (l *Ledger) Size() int64 { return l.size.Load() }

// fsync flushes the ledger file to stable storage.
func (l *Ledger) fsync() error {
	if l.testSync != nil {
		return l.testSync()
	}
	return l.file.Sync()
}
