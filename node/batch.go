package node

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/thingdb/thingdb/ledger"
)

// Signature domains of the node's signed messages. Each message kind has its
// own, so a signature over one kind is never valid as another.
const (
	BatchDomain = "thingdb/batch/v1"
	HeadsDomain = "thingdb/heads/v1"
)

// Batch is the body of GET /v1/export and POST /v1/import: entry lines from
// one sending node, signed by that node's Ed25519 key. Lines are the ledger
// lines as JSON strings, so each round-trips byte for byte.
type Batch struct {
	Node      string   `json:"node"`
	Lines     []string `json:"lines"`
	Signature []byte   `json:"signature"`
}

// Signer signs a message under a domain; *ledger.Ledger implements it.
type Signer interface {
	Sign(domain string, msg []byte) []byte
}

// SignBatch builds a batch of lines signed by signer for the node nodeID.
func SignBatch(signer Signer, nodeID string, lines [][]byte) Batch {
	b := Batch{Node: nodeID, Lines: make([]string, len(lines))}
	for i, line := range lines {
		b.Lines[i] = string(line)
	}
	b.Signature = signer.Sign(BatchDomain, batchMessage(b.Node, b.Lines))
	return b
}

// Verify checks the batch signature against the sender's pinned key.
func (b Batch) Verify(pub ed25519.PublicKey) bool {
	return ledger.VerifySigned(pub, BatchDomain, batchMessage(b.Node, b.Lines), b.Signature)
}

// LineBytes returns the lines as byte slices for ledger.Import.
func (b Batch) LineBytes() [][]byte {
	lines := make([][]byte, len(b.Lines))
	for i, line := range b.Lines {
		lines[i] = []byte(line)
	}
	return lines
}

// batchMessage is the signed encoding of a batch: the sender's node id, the
// number of lines as a big-endian uint64, then each line, every variable
// field prefixed with its length as a big-endian uint64. The prefixes make
// the encoding unambiguous, so no two batches share signed bytes.
func batchMessage(node string, lines []string) []byte {
	size := 16 + len(node)
	for _, line := range lines {
		size += 8 + len(line)
	}
	msg := make([]byte, 0, size)
	msg = appendField(msg, node)
	msg = binary.BigEndian.AppendUint64(msg, uint64(len(lines)))
	for _, line := range lines {
		msg = appendField(msg, line)
	}
	return msg
}

func appendField(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(len(s)))
	return append(b, s...)
}

// BatchLimits bound a decoded batch.
type BatchLimits struct {
	MaxEntries   int // entries per batch
	MaxLineBytes int // bytes per entry line
}

// Errors of DecodeBatch. ErrBatchTooLarge is a batch over a limit; the
// others are malformed input.
var (
	ErrBatchTooLarge  = errors.New("batch too large")
	ErrBatchMalformed = errors.New("malformed batch")
)

// DecodeBatch parses an import request body. It rejects unknown fields,
// trailing data, a missing sender or signature and batches over limits, but
// does not check the signature.
func DecodeBatch(r io.Reader, limits BatchLimits) (Batch, error) {
	var b Batch
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		return Batch{}, fmt.Errorf("%w: %w", ErrBatchMalformed, err)
	}
	if err := expectEOF(dec); err != nil {
		return Batch{}, fmt.Errorf("%w: %w", ErrBatchMalformed, err)
	}
	if b.Node == "" {
		return Batch{}, fmt.Errorf("%w: field \"node\" is missing; set it to the sender's node id", ErrBatchMalformed)
	}
	if b.Lines == nil {
		return Batch{}, fmt.Errorf("%w: field \"lines\" is missing; send an array of entry lines", ErrBatchMalformed)
	}
	if len(b.Signature) != ed25519.SignatureSize {
		return Batch{}, fmt.Errorf("%w: field \"signature\" has %d bytes, want a base64 Ed25519 signature of %d bytes", ErrBatchMalformed, len(b.Signature), ed25519.SignatureSize)
	}
	if limits.MaxEntries > 0 && len(b.Lines) > limits.MaxEntries {
		return Batch{}, fmt.Errorf("%w: %d entries, the limit is %d; split the batch", ErrBatchTooLarge, len(b.Lines), limits.MaxEntries)
	}
	for i, line := range b.Lines {
		if limits.MaxLineBytes > 0 && len(line) > limits.MaxLineBytes {
			return Batch{}, fmt.Errorf("%w: entry %d has %d bytes, the limit is %d", ErrBatchTooLarge, i, len(line), limits.MaxLineBytes)
		}
		if line == "" || bytes.ContainsAny([]byte(line), "\n\r") {
			return Batch{}, fmt.Errorf("%w: entry %d is empty or contains a line break", ErrBatchMalformed, i)
		}
	}
	return b, nil
}

// SignedHeads is the body of GET /v1/heads: the node's per-origin heads at
// a time, signed by the node.
type SignedHeads struct {
	Node      string     `json:"node"`
	Time      time.Time  `json:"time"`
	Heads     []HeadJSON `json:"heads"`
	Signature []byte     `json:"signature"`
}

// HeadJSON is one origin's head sequence and entry hash.
type HeadJSON struct {
	Origin   string `json:"origin"`
	Sequence uint64 `json:"sequence"`
	Hash     string `json:"hash"`
}

// SignHeads builds signed heads for nodeID.
func SignHeads(signer Signer, nodeID string, at time.Time, heads []ledger.Head) SignedHeads {
	sh := SignedHeads{Node: nodeID, Time: at.UTC(), Heads: make([]HeadJSON, len(heads))}
	for i, h := range heads {
		sh.Heads[i] = HeadJSON{Origin: h.Origin, Sequence: h.Sequence, Hash: h.Hash}
	}
	sh.Signature = signer.Sign(HeadsDomain, sh.message())
	return sh
}

// Verify checks the heads signature against the node's key.
func (sh SignedHeads) Verify(pub ed25519.PublicKey) bool {
	return ledger.VerifySigned(pub, HeadsDomain, sh.message(), sh.Signature)
}

// message is the signed encoding of heads: node id, time as Unix
// nanoseconds, the number of heads, then per head origin, sequence and hash,
// with the same length prefixes as batchMessage.
func (sh SignedHeads) message() []byte {
	msg := appendField(nil, sh.Node)
	msg = binary.BigEndian.AppendUint64(msg, uint64(sh.Time.UnixNano()))
	msg = binary.BigEndian.AppendUint64(msg, uint64(len(sh.Heads)))
	for _, h := range sh.Heads {
		msg = appendField(msg, h.Origin)
		msg = binary.BigEndian.AppendUint64(msg, h.Sequence)
		msg = appendField(msg, h.Hash)
	}
	return msg
}
