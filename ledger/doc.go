// Package ledger is ThingDB's storage engine: an append-only, encrypted,
// signed and hash-chained log of thing versions, kept in one directory.
//
// # Files
//
// A ledger directory holds three files:
//
//   - header.json: format version, node id, the node's Ed25519 signing key
//     and X25519 recipient key (public halves), every signing key the node
//     has used (retired ones stay listed), the key slots and the node's
//     private keys sealed under the master key.
//   - ledger.ndjson: one entry per line, append-only.
//   - heads.json: per origin, the highest head this node made durable,
//     authenticated with an HMAC under a key derived from the master key.
//
// header.json and heads.json are replaced atomically: write a temporary
// file, fsync it, rename it over the old one, fsync the directory.
//
// # Keys
//
// Create derives the master key from the passphrase with Argon2id and a
// fixed salt ("thingdb ledger master key v1"), so ledgers created with the
// same passphrase and KDF parameters share a master key and read each
// other's entries: the replicas of one ThingNode do. The master key is then
// stored in a key slot, sealed with AES-256-GCM under a key that Argon2id
// derives from the passphrase and a random salt. ChangePassphrase replaces
// that slot and rewrites only header.json; the master key and every entry
// stay as they are, so ledgers that shared a master key keep sharing it. A
// wrong passphrase fails the slot's GCM check, and Open returns
// ErrWrongPassphrase before it writes anything. The fixed salt is the price
// of shared master keys: one Argon2id guess tests a passphrase against every
// ThingDB ledger, so the passphrase must be strong.
//
// The node id is the hex of the first 16 bytes of SHA-256 over a domain
// string and the node's first Ed25519 public key; a key id is derived the
// same way from any Ed25519 public key with another domain string.
//
// # Entry format
//
// An entry is one compact JSON object with its fields in this fixed order:
//
//	{"v":1,"origin":"<node id>","seq":7,"thing":"lamp","time":"2026-01-02T03:04:05.000000006Z",
//	 "actor":"alice","kid":"<key id>","akey":"<Ed25519 public key>","prev":"<64 hex>",
//	 "nonce":"<12 bytes>","ct":"<ciphertext>","dh":"<data hash>","wk":"<wrapped content key>",
//	 "env":[{"to":"<node id>","ek":"<sealed epoch key>","wk":"<wrapped content key>"}],
//	 "sig":"<Ed25519 signature>"}
//
// Byte fields are standard base64 with padding; ids and prev are lower-case
// hex; the time is UTC with nine fractional digits; "env" is left out when
// empty. Thing and actor ids escape only '"', '\' and control characters.
// DecodeEntry accepts only this canonical form (it re-encodes the entry and
// compares the bytes), so every line has exactly one encoding.
//
// # Encryption
//
// Each entry has a fresh random 256-bit content key. The data, compacted
// JSON, is sealed with AES-256-GCM under it, with the entry nonce and, as
// additional data, the fields fixed before the entry is sequenced (format
// version, origin, thing, actor, key id, actor key, nonce). Sequence, time
// and previous hash are bound by the signature instead, so encryption runs
// outside the append lock.
//
// The content key is wrapped ("wk") with AES-256-GCM under a key that HKDF
// derives from the master key, the origin and the entry nonce. Each wrapping
// key seals one content key, so the master key itself never meets the GCM
// limit of about 2^32 random nonces.
//
// In envelope mode each recipient gets an epoch key, sealed once with HPKE
// (RFC 9180: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM) to its
// X25519 key. Entries carry the same sealed blob ("ek") for the epoch and
// wrap their content key under a key derived from the epoch key, the origin
// and the nonce. A sender seals a new epoch key per recipient after 2^20
// entries and after each Open; a recipient caches the epoch keys it opened.
// So an append to three recipients costs three small GCM seals, not three
// X25519 operations. A peer reads an entry if it shares the master key or if
// an envelope is addressed to its node id; nobody else can.
//
// The data hash ("dh") is HMAC-SHA256 of the plaintext under a key derived
// from the content key. A plain SHA-256 of a small JSON value would let
// anyone confirm a guess such as {"state":"on"} without any key. Because the
// HMAC key comes from the content key, the hash also commits the writer to
// one plaintext: AES-GCM alone does not commit to its key, and without this
// check a writer could wrap different content keys for different readers
// that decrypt the same ciphertext to different values.
//
// # Signature and chain
//
// The signature is Ed25519 by the actor key ("akey", the node key unless
// the caller signs client-side) over a binary encoding of every field except
// the signature: the domain string "thingdb ledger entry v1", then each field
// prefixed with its length as a 4-byte big-endian integer. JSON is never
// signed. The key id must match the actor key.
//
// The hash of an entry is SHA-256 of its line bytes without the newline.
// "prev" is the hash of the previous entry of the same origin (all zero for
// sequence 1), so the chain covers the whole previous entry: header fields,
// ciphertext, wrapped keys and signature. Sequences start at 1 and increase
// by one per origin; times never decrease within an origin.
//
// Imported entries keep their bytes, so origin, sequence and signature
// survive any number of hops. Import checks the canonical form, signature,
// clock skew and chain of every entry; a repeated entry is a duplicate and a
// no-op; an entry that skips sequences is a *GapError; a different entry at
// a stored origin and sequence is a *ForkError with both lines.
//
// # What the checks guarantee, and what one node cannot detect
//
// Verify detects any change of a byte in the file (canonical form and
// signature), a deleted, duplicated or reordered entry of one origin (the
// chain), and entries removed from the end of an origin below the head
// recorded in heads.json (ErrRollback). The signature proves which key
// wrote an entry, not that the origin node accepted that key: peers pin
// node keys when they sync.
//
// A single node cannot detect:
//   - a consistent rollback of the whole directory, where older copies of
//     both ledger.ndjson and heads.json are put back, which is the same as
//     truncating its own tail along with its records; only a peer that saw a
//     later head notices;
//   - entries appended after heads.json was last written (at Close and after
//     each Import) and then cut, because heads.json is written only after an
//     fsync, never per append;
//   - a change of order between lines of different origins that keeps each
//     origin's order. File order across origins is local arrival order and
//     carries no meaning: the latest version of a thing is the one with the
//     greatest time, then origin, then sequence.
//
// # Durability and crashes
//
// Appends are written in groups. Each append seals its entry and then
// queues it. One appender at a time takes the append lock and the queue (up
// to 4 MiB of lines), gives the entries their sequences and times in queue
// order, signs them one after the other, and writes their lines with one
// write. Signing is serial because each signature covers the previous hash,
// but encryption and key wrapping run before the append lock, on the
// appenders' goroutines.
//
// Under DurabilityAlways the group is fsynced under the append lock before
// any of its appends returns. Under DurabilityBatch (the default) the
// appends of a group return only after a shared fsync: the first waiter
// fsyncs everything written so far and the others return when an fsync that
// started after their write has finished. DurabilityNone returns after the
// write. After a crash of the machine, lines written but not yet fsynced may
// be lost. Under DurabilityAlways these are the lines of one group at most,
// and none of its appends had returned.
//
// A failed write or fsync is fatal: every append of the group fails, and the
// ledger returns ErrFailed for every later write, because after a failed
// fsync the kernel may have dropped the data and a retry could report it as
// durable. Reopen the ledger instead.
//
// On Open, a last line without a newline, or an unparsable last line, is a
// torn write: Open cuts the file back to the last complete line, fsyncs,
// and reports the cut in TailRepair before any append. Any other damage is
// an error naming the line. Open checks chain links but not signatures,
// which Verify checks on all cores. An Import that crashes during its write
// leaves a prefix of the batch, which is still a valid chain.
//
// # Memory
//
// The index holds, per thing, the offset of its latest entry and its count,
// and per origin the head sequence, hash and time. History, Export, Verify
// and the fork check of Import stream the file.
package ledger
