package ledger

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Version is one entry of a thing as a reader sees it.
type Version struct {
	EntryInfo
	Thing    string
	Actor    string
	ActorKey ed25519.PublicKey
	// Data is the decrypted value, or nil when this node holds no key for it.
	Data           json.RawMessage
	Readable       bool
	SignatureValid bool
}

// Cursor maps an origin to the last sequence a reader already has.
type Cursor map[string]uint64

// ExportOptions select the entries Export streams.
type ExportOptions struct {
	After Cursor
	// Recipient, when set, keeps only entries with an envelope for that node id.
	Recipient string
	// Limit is the maximum number of entries; 0 means no limit.
	Limit int
}

// decrypt returns the plaintext of e, or false when this node has no key
// for it: neither the master key nor an envelope addressed to this node.
func (l *Ledger) decrypt(e *Entry) ([]byte, bool) {
	cek, err := unwrapContentKey(l.master, infoLedgerWrap, e.Origin, e.Nonce, e.Wrap)
	if err != nil {
		cek = nil
		for _, env := range e.Envelopes {
			if env.To != l.id.NodeID {
				continue
			}
			key, err := l.openEpochs.open(l.id.NodeID, l.keys.recipient, env.Sealed)
			if err != nil {
				break
			}
			cek, err = unwrapContentKey(key, infoEnvelopeWrap, e.Origin, e.Nonce, env.Wrap)
			if err != nil {
				cek = nil
			}
			break
		}
	}
	if cek == nil {
		return nil, false
	}
	data, err := newGCM(cek).Open(nil, e.Nonce, e.Ciphertext, e.additionalData())
	if err != nil || !hmac.Equal(dataHash(cek, data), e.DataHash) {
		return nil, false
	}
	return data, true
}

func (l *Ledger) version(e *Entry, line []byte) Version {
	hash := lineHash(line)
	v := Version{
		EntryInfo: EntryInfo{Origin: e.Origin, Sequence: e.Sequence, Hash: hex.EncodeToString(hash[:]), Time: e.Time, KeyID: e.KeyID},
		Thing:     e.Thing,
		Actor:     e.Actor,
		ActorKey:  e.ActorKey,
	}
	v.SignatureValid = e.verifySignature() == nil
	if data, ok := l.decrypt(e); ok {
		v.Data, v.Readable = data, true
	}
	return v
}

// Get returns the latest version of a thing: the entry with the greatest
// time, then origin, then sequence. When this node cannot decrypt it, Get
// returns the version without data and an error wrapping ErrNotReadable.
func (l *Ledger) Get(thing string) (Version, error) {
	if err := l.begin(); err != nil {
		return Version{}, fmt.Errorf("get thing %q: %w", thing, err)
	}
	defer l.end()

	l.mu.Lock()
	st := l.things[thing]
	var offset int64
	var length int32
	if st != nil {
		offset, length = st.offset, st.length
	}
	l.mu.Unlock()
	if st == nil {
		return Version{}, fmt.Errorf("get thing %q: %w", thing, ErrThingNotFound)
	}

	line := make([]byte, length)
	if _, err := l.file.ReadAt(line, offset); err != nil {
		return Version{}, fmt.Errorf("get thing %q: read offset %d: %w", thing, offset, err)
	}
	line = line[:length-1]
	e, err := parseEntry(line)
	if err != nil {
		return Version{}, fmt.Errorf("get thing %q: entry at offset %d: %w", thing, offset, err)
	}
	v := l.version(e, line)
	if !v.Readable {
		return v, fmt.Errorf("get thing %q: %w", thing, ErrNotReadable)
	}
	return v, nil
}

// History returns every version of a thing, oldest first in file order, with
// the provenance of each. It reads the file from the start.
func (l *Ledger) History(thing string) ([]Version, error) {
	if err := l.begin(); err != nil {
		return nil, fmt.Errorf("history of thing %q: %w", thing, err)
	}
	defer l.end()

	l.mu.Lock()
	st := l.things[thing]
	var want int
	if st != nil {
		want = int(st.count)
	}
	l.mu.Unlock()
	if st == nil {
		return nil, fmt.Errorf("history of thing %q: %w", thing, ErrThingNotFound)
	}

	// A line of this thing contains its encoded id right after "thing":.
	needle := appendJSONString([]byte(`,"thing":`), thing)
	needle = append(needle, `,"time":`...)
	var versions []Version
	err := l.scan(context.Background(), func(line []byte) error {
		if !bytes.Contains(line, needle) {
			return nil
		}
		e, err := parseEntry(line)
		if err != nil {
			return err
		}
		if e.Thing != thing {
			return nil
		}
		versions = append(versions, l.version(e, line))
		if len(versions) == want {
			return errStop
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("history of thing %q: %w", thing, err)
	}
	return versions, nil
}

var errStop = errors.New("stop scan")

// scan calls fn for each line (without newline) of the file as it was when
// scan started. The line is valid only during the call. fn may return
// errStop to end the scan without error.
func (l *Ledger) scan(ctx context.Context, fn func(line []byte) error) error {
	size := l.size.Load()
	r := bufio.NewReaderSize(io.NewSectionReader(l.file, 0, size), 1<<20)
	for n := 0; ; n++ {
		if n%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		line, err := readLine(r)
		if errors.Is(err, io.EOF) && len(line) == 0 {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", ledgerFile, err)
		}
		if err := fn(line[:len(line)-1]); err != nil {
			if errors.Is(err, errStop) {
				return nil
			}
			return err
		}
	}
}

// Export calls fn with each line after the cursor, in file order, without
// the newline. The slice is valid only during the call. An error from fn
// ends the export and is returned.
func (l *Ledger) Export(ctx context.Context, opts ExportOptions, fn func(line []byte) error) error {
	if opts.Recipient != "" && !validHexID(opts.Recipient) {
		return fmt.Errorf("export: invalid recipient node id %q: use the %d-digit hex node id", opts.Recipient, idHexLen)
	}
	if opts.Limit < 0 {
		return fmt.Errorf("export: invalid limit %d: use 0 for no limit or a positive count", opts.Limit)
	}
	if err := l.begin(); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	defer l.end()

	// The envelope list is the only place the sequence {"to":" occurs,
	// because quotes inside strings are escaped.
	var recipientNeedle []byte
	if opts.Recipient != "" {
		recipientNeedle = []byte(`{"to":"` + opts.Recipient + `"`)
	}
	sent := 0
	err := l.scan(ctx, func(line []byte) error {
		origin, seq, err := originSequence(line)
		if err != nil {
			return err
		}
		if seq <= opts.After[origin] {
			return nil
		}
		if recipientNeedle != nil && !bytes.Contains(line, recipientNeedle) {
			return nil
		}
		if err := fn(line); err != nil {
			return err
		}
		sent++
		if opts.Limit > 0 && sent >= opts.Limit {
			return errStop
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	return nil
}

// originSequence reads only the origin and sequence at the start of a line.
func originSequence(line []byte) (string, uint64, error) {
	p := &parser{b: line}
	p.lit(`{"v":1,"origin":"`)
	origin := p.hexID("origin")
	p.lit(`,"seq":`)
	seq := p.uint()
	if p.err != nil {
		return "", 0, p.err
	}
	return origin, seq, nil
}
