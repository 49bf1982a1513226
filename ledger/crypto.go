package ledger

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/hpke"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
)

// HKDF info strings. Each derived key has its own, so no key is used for two purposes.
const (
	infoLedgerWrap   = "thingdb ledger wrap v1"
	infoEnvelopeWrap = "thingdb envelope wrap v1"
	infoDataHash     = "thingdb data hash v1"
	infoNodeKeys     = "thingdb node keys v1"
	infoHeadsMAC     = "thingdb heads mac v1"
	infoEpochKey     = "thingdb epoch key v1"
	signDomainPrefix = "thingdb signed message v1\x00"
	nodeIDDomain     = "thingdb node id v1\x00"
	keyIDDomain      = "thingdb key id v1\x00"
)

// nodeID derives a node id from the node's Ed25519 public key: hex of the
// first 16 bytes of a domain-separated SHA-256.
func nodeID(pub ed25519.PublicKey) string {
	h := sha256.Sum256(append([]byte(nodeIDDomain), pub...))
	return hex.EncodeToString(h[:16])
}

// keyID derives a key id from an Ed25519 public key like nodeID, with another domain.
func keyID(pub ed25519.PublicKey) string {
	h := sha256.Sum256(append([]byte(keyIDDomain), pub...))
	return hex.EncodeToString(h[:16])
}

// KeyID returns the key id that entries signed by pub carry.
func KeyID(pub ed25519.PublicKey) string { return keyID(pub) }

// NodeID returns the node id derived from a node's Ed25519 public key.
func NodeID(pub ed25519.PublicKey) string { return nodeID(pub) }

// deriveKey returns a 32-byte HKDF-SHA256 key for one purpose and context.
func deriveKey(secret []byte, info string, context ...[]byte) []byte {
	var salt []byte
	for _, c := range context {
		salt = appendField(salt, c)
	}
	k, err := hkdf.Key(sha256.New, secret, salt, info, keySize)
	if err != nil {
		// Broken invariant: HKDF-SHA256 fails only for outputs over 8160 bytes.
		panic(fmt.Sprintf("hkdf: %v", err))
	}
	return k
}

func newGCM(key []byte) cipher.AEAD {
	block, err := aes.NewCipher(key)
	if err != nil {
		// Broken invariant: every key here is 32 bytes.
		panic(fmt.Sprintf("aes: %v", err))
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic(fmt.Sprintf("gcm: %v", err))
	}
	return aead
}

// zeroNonce is used only with keys that encrypt exactly one message: the
// per-entry wrapping keys, each derived from a random 96-bit entry nonce.
var zeroNonce = make([]byte, nonceSize)

// wrapContentKey seals a content key under a per-entry key derived from
// secret (the master key or an epoch key) and the entry's identity.
func wrapContentKey(secret []byte, info, origin string, entryNonce, cek []byte) []byte {
	k := deriveKey(secret, info, []byte(origin), entryNonce)
	return newGCM(k).Seal(nil, zeroNonce, cek, []byte(origin))
}

func unwrapContentKey(secret []byte, info, origin string, entryNonce, wrapped []byte) ([]byte, error) {
	k := deriveKey(secret, info, []byte(origin), entryNonce)
	return newGCM(k).Open(nil, zeroNonce, wrapped, []byte(origin))
}

// dataHash is HMAC-SHA256 of the plaintext under a key derived from the
// content key. Without the content key a guessed plaintext cannot be
// confirmed. Because the HMAC key comes from the content key, a reader who
// unwrapped a different content key cannot match the same hash with another
// plaintext, which AES-GCM alone does not prevent (it does not commit to its
// key).
func dataHash(cek, data []byte) []byte {
	m := hmac.New(sha256.New, deriveKey(cek, infoDataHash))
	m.Write(data)
	return m.Sum(nil)
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		// crypto/rand.Read never returns an error since Go 1.24; it crashes instead.
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	return b
}

// HPKE suite of envelope mode: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM.
var (
	hpkeKDF  = hpke.HKDFSHA256()
	hpkeAEAD = hpke.AES256GCM()
)

func hpkeInfo(recipient string) []byte { return []byte(infoEpochKey + "\x00" + recipient) }

// sealEpochKey seals an epoch key to a recipient's X25519 public key.
func sealEpochKey(recipient string, pub []byte, epochKey []byte) ([]byte, error) {
	pk, err := ecdh.X25519().NewPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("parse X25519 key of recipient %s: %w", recipient, err)
	}
	hpk, err := hpke.NewDHKEMPublicKey(pk)
	if err != nil {
		return nil, fmt.Errorf("use X25519 key of recipient %s: %w", recipient, err)
	}
	sealed, err := hpke.Seal(hpk, hpkeKDF, hpkeAEAD, hpkeInfo(recipient), epochKey)
	if err != nil {
		return nil, fmt.Errorf("seal epoch key for recipient %s: %w", recipient, err)
	}
	return sealed, nil
}

func openEpochKey(self string, priv *ecdh.PrivateKey, sealed []byte) ([]byte, error) {
	hk, err := hpke.NewDHKEMPrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("use X25519 key: %w", err)
	}
	k, err := hpke.Open(hk, hpkeKDF, hpkeAEAD, hpkeInfo(self), sealed)
	if err != nil {
		return nil, fmt.Errorf("open epoch key: %w", err)
	}
	if len(k) != keySize {
		return nil, errors.New("open epoch key: wrong key size")
	}
	return k, nil
}

// signedMessage builds the domain-separated input of Sign and VerifySigned.
func signedMessage(domain string, msg []byte) []byte {
	b := make([]byte, 0, len(signDomainPrefix)+8+len(domain)+len(msg))
	b = append(b, signDomainPrefix...)
	b = appendField(b, []byte(domain))
	b = binary.BigEndian.AppendUint64(b, uint64(len(msg)))
	return append(b, msg...)
}

// VerifySigned checks a signature made by Ledger.Sign with the same domain.
func VerifySigned(pub ed25519.PublicKey, domain string, msg, sig []byte) bool {
	if len(pub) != ed25519.PublicKeySize || len(sig) != ed25519.SignatureSize {
		return false
	}
	return ed25519.Verify(pub, signedMessage(domain, msg), sig)
}
