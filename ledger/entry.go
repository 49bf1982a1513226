package ledger

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// Limits on entry fields. They bound the memory one line can take and are
// checked on append, on import and on decode.
const (
	// FormatVersion is the entry format version this package writes and reads.
	FormatVersion = 1
	// MaxIDLen is the maximum length in bytes of a thing id or actor id.
	MaxIDLen = 256
	// MaxDataSize is the maximum size in bytes of an entry's JSON data.
	MaxDataSize = 1 << 20
	// MaxRecipients is the maximum number of envelope recipients of one entry.
	MaxRecipients = 16
	// MaxLineSize is the maximum length of one entry line without its newline.
	MaxLineSize = 2 << 20

	idHexLen     = 32 // node ids and key ids: 16 bytes in hex
	nonceSize    = 12
	keySize      = 32
	wrappedSize  = keySize + 16 // AES-256-GCM of a 32-byte key
	timeLayout   = "2006-01-02T15:04:05.000000000Z"
	signedDomain = "thingdb ledger entry v1\x00"
	aadDomain    = "thingdb ledger data v1\x00"
)

// Envelope is the content key of an entry made readable for one recipient node.
type Envelope struct {
	To     string // recipient node id
	Sealed []byte // HPKE-sealed epoch key, shared by the entries of one epoch
	Wrap   []byte // content key under a per-entry key derived from the epoch key
}

// Entry is one decoded ledger line. Hash of an entry is SHA-256 of its line.
type Entry struct {
	Version    int
	Origin     string
	Sequence   uint64
	Thing      string
	Time       time.Time
	Actor      string
	KeyID      string
	ActorKey   ed25519.PublicKey
	Prev       [32]byte // hash of the previous line of the same origin; zero for sequence 1
	Nonce      []byte   // GCM nonce of the data and the entry's key-derivation identity
	Ciphertext []byte
	DataHash   []byte // HMAC-SHA256 of the plaintext under a key derived from the content key
	Wrap       []byte // content key wrapped for ledgers that share the master key
	Envelopes  []Envelope
	Signature  []byte
}

// DecodeEntry parses one ledger line (without its newline) and checks that it
// is in canonical form: the line must be byte-identical to the encoding of the
// decoded entry. It does not check the signature or the chain.
func DecodeEntry(line []byte) (*Entry, error) {
	e, err := parseEntry(line)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(e.appendLine(nil), line) {
		return nil, errors.New("decode entry: line is not in canonical form")
	}
	return e, nil
}

// Hash returns the hex SHA-256 of a line, the form used in heads and EntryInfo.
func lineHash(line []byte) [32]byte { return sha256.Sum256(line) }

// appendLine appends the canonical JSON line of e (without newline) to b.
// The parts that do not depend on sequence, time, previous hash and
// signature come from appendLinePart, which newLineTemplate shares.
func (e *Entry) appendLine(b []byte) []byte {
	b = e.appendLinePart(b, linePartHead)
	b = strconv.AppendUint(b, e.Sequence, 10)
	b = e.appendLinePart(b, linePartThing)
	b = e.Time.UTC().AppendFormat(b, timeLayout)
	b = e.appendLinePart(b, linePartActor)
	b = hex.AppendEncode(b, e.Prev[:])
	b = e.appendLinePart(b, linePartBody)
	b = base64.StdEncoding.AppendEncode(b, e.Signature)
	return append(b, `"}`...)
}

// The fixed parts of an entry line, in line order. Each ends where the next
// field that is set at commit starts: sequence, time, previous hash, signature.
const (
	linePartHead  = iota // from the opening brace to the sequence
	linePartThing        // thing, up to the time
	linePartActor        // actor, key id and actor key, up to the previous hash
	linePartBody         // nonce, ciphertext, data hash, wrapped keys, up to the signature
	lineParts
)

func (e *Entry) appendLinePart(b []byte, part int) []byte {
	switch part {
	case linePartHead:
		b = append(b, `{"v":`...)
		b = strconv.AppendInt(b, int64(e.Version), 10)
		b = append(b, `,"origin":"`...)
		b = append(b, e.Origin...)
		return append(b, `","seq":`...)
	case linePartThing:
		b = append(b, `,"thing":`...)
		b = appendJSONString(b, e.Thing)
		return append(b, `,"time":"`...)
	case linePartActor:
		b = append(b, `","actor":`...)
		b = appendJSONString(b, e.Actor)
		b = append(b, `,"kid":"`...)
		b = append(b, e.KeyID...)
		b = append(b, `","akey":"`...)
		b = base64.StdEncoding.AppendEncode(b, e.ActorKey)
		return append(b, `","prev":"`...)
	case linePartBody:
		b = append(b, `","nonce":"`...)
		b = base64.StdEncoding.AppendEncode(b, e.Nonce)
		b = append(b, `","ct":"`...)
		b = base64.StdEncoding.AppendEncode(b, e.Ciphertext)
		b = append(b, `","dh":"`...)
		b = base64.StdEncoding.AppendEncode(b, e.DataHash)
		b = append(b, `","wk":"`...)
		b = base64.StdEncoding.AppendEncode(b, e.Wrap)
		b = append(b, '"')
		if len(e.Envelopes) > 0 {
			b = append(b, `,"env":[`...)
			for i, env := range e.Envelopes {
				if i > 0 {
					b = append(b, ',')
				}
				b = append(b, `{"to":"`...)
				b = append(b, env.To...)
				b = append(b, `","ek":"`...)
				b = base64.StdEncoding.AppendEncode(b, env.Sealed)
				b = append(b, `","wk":"`...)
				b = base64.StdEncoding.AppendEncode(b, env.Wrap)
				b = append(b, `"}`...)
			}
			b = append(b, ']')
		}
		return append(b, `,"sig":"`...)
	}
	// Broken invariant: part is one of the constants above.
	panic(fmt.Sprintf("ledger: unknown line part %d", part))
}

// lineTemplate is an entry line built before the entry is sequenced: the
// fixed parts, concatenated, and where each part ends.
type lineTemplate struct {
	fixed []byte
	ends  [lineParts]int
}

// newLineTemplate builds the fixed parts of e's line.
func newLineTemplate(e *Entry) lineTemplate {
	var t lineTemplate
	t.fixed = make([]byte, 0, 512+base64.StdEncoding.EncodedLen(len(e.Ciphertext))+len(e.Envelopes)*192)
	for part := range lineParts {
		t.fixed = e.appendLinePart(t.fixed, part)
		t.ends[part] = len(t.fixed)
	}
	return t
}

// appendLine appends e's line to b, in the same order as Entry.appendLine,
// with the fields set at commit taken from e. e must be the entry the
// template was built from.
func (t *lineTemplate) appendLine(b []byte, e *Entry) []byte {
	b = append(b, t.fixed[:t.ends[linePartHead]]...)
	b = strconv.AppendUint(b, e.Sequence, 10)
	b = append(b, t.fixed[t.ends[linePartHead]:t.ends[linePartThing]]...)
	b = e.Time.UTC().AppendFormat(b, timeLayout)
	b = append(b, t.fixed[t.ends[linePartThing]:t.ends[linePartActor]]...)
	b = hex.AppendEncode(b, e.Prev[:])
	b = append(b, t.fixed[t.ends[linePartActor]:t.ends[linePartBody]]...)
	b = base64.StdEncoding.AppendEncode(b, e.Signature)
	return append(b, `"}`...)
}

// maxLineLen returns an upper bound of the length of a line built from t.
func (t *lineTemplate) maxLineLen() int {
	const (
		seqDigits = 20 // a uint64 in decimal
		sigBase64 = 88 // an Ed25519 signature in base64
	)
	return len(t.fixed) + seqDigits + len(timeLayout) + 64 + sigBase64 + 2
}

// signedBytes returns the bytes the entry signature covers: a domain string,
// then every field except the signature, each prefixed with its length as a
// 4-byte big-endian integer. JSON is never signed, so no re-serialisation can
// change what a signature means.
func (e *Entry) signedBytes() []byte {
	b, _ := e.appendSigned(nil)
	return b
}

// signedOffsets locates in the signed bytes the fields that are set at
// commit, so a template built before can be completed in place.
type signedOffsets struct {
	sequence int // 8 bytes, big-endian
	time     int // 8 bytes, big-endian unix nanoseconds
	prev     int // 32 bytes
}

// appendSigned appends the signed bytes of e to b and returns where the
// sequence, time and previous hash are in them.
func (e *Entry) appendSigned(b []byte) ([]byte, signedOffsets) {
	var at signedOffsets
	if b == nil {
		b = make([]byte, 0, 256+len(e.Ciphertext)+len(e.Envelopes)*160)
	}
	b = append(b, signedDomain...)
	b = appendField(b, []byte{byte(e.Version)})
	b = appendField(b, []byte(e.Origin))
	at.sequence = len(b) + 4
	b = appendField(b, binary.BigEndian.AppendUint64(nil, e.Sequence))
	b = appendField(b, []byte(e.Thing))
	at.time = len(b) + 4
	b = appendField(b, binary.BigEndian.AppendUint64(nil, uint64(e.Time.UnixNano())))
	b = appendField(b, []byte(e.Actor))
	b = appendField(b, []byte(e.KeyID))
	b = appendField(b, e.ActorKey)
	at.prev = len(b) + 4
	b = appendField(b, e.Prev[:])
	b = appendField(b, e.Nonce)
	b = appendField(b, e.Ciphertext)
	b = appendField(b, e.DataHash)
	b = appendField(b, e.Wrap)
	b = binary.BigEndian.AppendUint32(b, uint32(len(e.Envelopes)))
	for _, env := range e.Envelopes {
		b = appendField(b, []byte(env.To))
		b = appendField(b, env.Sealed)
		b = appendField(b, env.Wrap)
	}
	return b, at
}

// setSigned writes sequence, time and previous hash into signed bytes that
// appendSigned built, at the offsets it returned.
func setSigned(b []byte, at signedOffsets, sequence uint64, unixNano int64, prev [32]byte) {
	binary.BigEndian.PutUint64(b[at.sequence:], sequence)
	binary.BigEndian.PutUint64(b[at.time:], uint64(unixNano))
	copy(b[at.prev:], prev[:])
}

// additionalData returns the GCM additional data of the entry's ciphertext:
// the header fields that are fixed before the entry is given its sequence.
// Sequence, time and previous hash are bound by the signature instead, so
// encryption can run outside the append lock.
func (e *Entry) additionalData() []byte {
	b := make([]byte, 0, 192)
	b = append(b, aadDomain...)
	b = appendField(b, []byte{byte(e.Version)})
	b = appendField(b, []byte(e.Origin))
	b = appendField(b, []byte(e.Thing))
	b = appendField(b, []byte(e.Actor))
	b = appendField(b, []byte(e.KeyID))
	b = appendField(b, e.ActorKey)
	b = appendField(b, e.Nonce)
	return b
}

func appendField(b, field []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(field)))
	return append(b, field...)
}

// verifySignature checks the Ed25519 signature and that the key id names the actor key.
func (e *Entry) verifySignature() error {
	if e.KeyID != keyID(e.ActorKey) {
		return fmt.Errorf("key id %s does not match the actor key", e.KeyID)
	}
	signed := e.signedBytes()
	var cacheKey [32]byte
	if testSignatureCache != nil {
		cacheKey = sha256.Sum256(append(append(append([]byte{}, e.ActorKey...), e.Signature...), signed...))
		if _, ok := testSignatureCache.Load(cacheKey); ok {
			return nil
		}
	}
	if !ed25519.Verify(e.ActorKey, signed, e.Signature) {
		return errors.New("invalid signature")
	}
	if testSignatureCache != nil {
		testSignatureCache.Store(cacheKey, true)
	}
	return nil
}

// testSignatureCache remembers signatures that verified, keyed by a hash of
// key, signature and signed bytes. It is nil outside tests; the tamper tests
// set it so that thousands of verifications of nearly the same file check
// each unchanged line's signature once.
var testSignatureCache *sync.Map

// appendJSONString appends s as a JSON string. Only '"', '\' and control
// characters are escaped (controls as \u00xx), so the encoding is unique.
func appendJSONString(b []byte, s string) []byte {
	const digits = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', digits[c>>4], digits[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// validID checks a thing or actor id: 1 to MaxIDLen bytes of valid UTF-8
// without control characters.
func validID(kind, s string) error {
	if s == "" {
		return fmt.Errorf("missing %s id", kind)
	}
	if len(s) > MaxIDLen {
		return fmt.Errorf("invalid %s id: %d bytes, the maximum is %d", kind, len(s), MaxIDLen)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("invalid %s id %q: not valid UTF-8", kind, s)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("invalid %s id %q: contains a control character", kind, s)
		}
	}
	return nil
}

func validHexID(s string) bool {
	if len(s) != idHexLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// parser reads the one canonical field order of an entry line. It accepts
// only what appendLine writes, apart from the final byte-equality check that
// DecodeEntry adds.
type parser struct {
	b   []byte
	i   int
	err error
}

func (p *parser) fail(format string, args ...any) {
	if p.err == nil {
		p.err = fmt.Errorf("decode entry at byte %d: %s", p.i, fmt.Sprintf(format, args...))
	}
}

func (p *parser) lit(s string) {
	if p.err != nil {
		return
	}
	if !bytes.HasPrefix(p.b[p.i:], []byte(s)) {
		p.fail("expected %s", s)
		return
	}
	p.i += len(s)
}

func (p *parser) peek(s string) bool {
	return p.err == nil && bytes.HasPrefix(p.b[p.i:], []byte(s))
}

// raw returns the bytes up to the next '"' and consumes the quote. Used for
// fields that never contain escapes.
func (p *parser) raw() []byte {
	if p.err != nil {
		return nil
	}
	j := bytes.IndexByte(p.b[p.i:], '"')
	if j < 0 {
		p.fail("unterminated string")
		return nil
	}
	s := p.b[p.i : p.i+j]
	p.i += j + 1
	return s
}

func (p *parser) uint() uint64 {
	if p.err != nil {
		return 0
	}
	j := p.i
	for j < len(p.b) && p.b[j] >= '0' && p.b[j] <= '9' {
		j++
	}
	digits := p.b[p.i:j]
	if len(digits) == 0 || len(digits) > 1 && digits[0] == '0' {
		p.fail("invalid number")
		return 0
	}
	n, err := strconv.ParseUint(string(digits), 10, 63)
	if err != nil {
		p.fail("invalid number %s", digits)
		return 0
	}
	p.i = j
	return n
}

// str reads a JSON string body after its opening quote, in the form that
// appendJSONString writes.
func (p *parser) str() string {
	if p.err != nil {
		return ""
	}
	var out []byte
	for p.i < len(p.b) && len(out) <= MaxIDLen {
		c := p.b[p.i]
		switch {
		case c == '"':
			p.i++
			if !utf8.Valid(out) {
				p.fail("string is not valid UTF-8")
			}
			return string(out)
		case c < 0x20:
			p.fail("raw control character in string")
			return ""
		case c == '\\':
			if p.i+1 >= len(p.b) {
				p.fail("truncated escape")
				return ""
			}
			switch e := p.b[p.i+1]; e {
			case '"', '\\':
				out = append(out, e)
				p.i += 2
			case 'u':
				if p.i+6 > len(p.b) {
					p.fail("truncated escape")
					return ""
				}
				digits := p.b[p.i+2 : p.i+6]
				v, err := hex.DecodeString(string(digits))
				if err != nil || v[0] != 0 || v[1] >= 0x20 || bytes.ContainsAny(digits, "ABCDEF") {
					p.fail("escape is not canonical")
					return ""
				}
				out = append(out, v[1])
				p.i += 6
			default:
				p.fail("escape is not canonical")
				return ""
			}
		default:
			out = append(out, c)
			p.i++
		}
	}
	p.fail("unterminated or overlong string")
	return ""
}

func (p *parser) b64(field string, size int) []byte {
	s := p.raw()
	if p.err != nil {
		return nil
	}
	v, err := base64.StdEncoding.Strict().DecodeString(string(s))
	if err != nil {
		p.fail("invalid base64 in %s", field)
		return nil
	}
	if size >= 0 && len(v) != size {
		p.fail("%s has %d bytes, want %d", field, len(v), size)
		return nil
	}
	return v
}

func (p *parser) hexID(field string) string {
	s := p.raw()
	if p.err == nil && !validHexID(string(s)) {
		p.fail("%s is not a %d-digit lower-case hex id", field, idHexLen)
	}
	return string(s)
}

func parseEntry(line []byte) (*Entry, error) {
	if len(line) > MaxLineSize {
		return nil, fmt.Errorf("decode entry: line of %d bytes exceeds the maximum of %d", len(line), MaxLineSize)
	}
	p := &parser{b: line}
	e := &Entry{}
	p.lit(`{"v":`)
	e.Version = int(p.uint())
	if p.err == nil && e.Version != FormatVersion {
		p.fail("unsupported format version %d", e.Version)
	}
	p.lit(`,"origin":"`)
	e.Origin = p.hexID("origin")
	p.lit(`,"seq":`)
	e.Sequence = p.uint()
	if p.err == nil && e.Sequence == 0 {
		p.fail("sequence 0; sequences start at 1")
	}
	p.lit(`,"thing":"`)
	e.Thing = p.str()
	if p.err == nil {
		if err := validID("thing", e.Thing); err != nil {
			p.fail("%s", err)
		}
	}
	p.lit(`,"time":"`)
	if ts := p.raw(); p.err == nil {
		t, err := time.Parse(timeLayout, string(ts))
		if err != nil {
			p.fail("invalid time")
		}
		e.Time = t
	}
	p.lit(`,"actor":"`)
	e.Actor = p.str()
	if p.err == nil {
		if err := validID("actor", e.Actor); err != nil {
			p.fail("%s", err)
		}
	}
	p.lit(`,"kid":"`)
	e.KeyID = p.hexID("kid")
	p.lit(`,"akey":"`)
	e.ActorKey = p.b64("akey", ed25519.PublicKeySize)
	p.lit(`,"prev":"`)
	if s := p.raw(); p.err == nil {
		if len(s) != 64 || !validHexID(string(s[:32])) || !validHexID(string(s[32:])) {
			p.fail("prev is not a 64-digit lower-case hex hash")
		} else {
			hex.Decode(e.Prev[:], s)
		}
	}
	p.lit(`,"nonce":"`)
	e.Nonce = p.b64("nonce", nonceSize)
	p.lit(`,"ct":"`)
	e.Ciphertext = p.b64("ct", -1)
	if p.err == nil && len(e.Ciphertext) < 16 {
		p.fail("ct is shorter than a GCM tag")
	}
	p.lit(`,"dh":"`)
	e.DataHash = p.b64("dh", sha256.Size)
	p.lit(`,"wk":"`)
	e.Wrap = p.b64("wk", wrappedSize)
	if p.peek(`,"env":[`) {
		p.lit(`,"env":[`)
		for p.err == nil {
			var env Envelope
			p.lit(`{"to":"`)
			env.To = p.hexID("env.to")
			p.lit(`,"ek":"`)
			env.Sealed = p.b64("env.ek", -1)
			p.lit(`,"wk":"`)
			env.Wrap = p.b64("env.wk", wrappedSize)
			p.lit(`}`)
			e.Envelopes = append(e.Envelopes, env)
			if len(e.Envelopes) > MaxRecipients {
				p.fail("more than %d envelopes", MaxRecipients)
			}
			if !p.peek(",") {
				break
			}
			p.lit(",")
		}
		p.lit("]")
	}
	p.lit(`,"sig":"`)
	e.Signature = p.b64("sig", ed25519.SignatureSize)
	p.lit("}")
	if p.err == nil && p.i != len(line) {
		p.fail("trailing bytes after entry")
	}
	if p.err != nil {
		return nil, p.err
	}
	return e, nil
}
