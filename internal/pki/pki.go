// Package pki creates certificate authorities and issues TLS certificates
// signed by them, with PEM in and out. It has no ThingDB node concepts, so
// both the `thingdb tls` commands (standalone nodes and demos) and the
// operator (its own CA on clusters without cert-manager) use it.
//
// Keys are ECDSA P-256 and are written as PKCS #8 ("PRIVATE KEY") blocks.
// Certificates are valid from five minutes before they are made, so a peer
// whose clock runs slightly behind still accepts a fresh certificate.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strings"
	"time"
)

// backdate is how long before its creation a certificate becomes valid, so
// small clock differences between hosts do not reject a new certificate.
const backdate = 5 * time.Minute

// KeyPair is a certificate with its private key, parsed and as PEM.
type KeyPair struct {
	Cert    *x509.Certificate
	Key     crypto.Signer
	CertPEM []byte
	KeyPEM  []byte
}

// CARequest describes a new self-signed certificate authority.
type CARequest struct {
	CommonName string
	Validity   time.Duration
	// Now is the creation time; the zero value means time.Now.
	Now time.Time
}

// IssueRequest describes a leaf certificate to sign with a CA.
type IssueRequest struct {
	CommonName string
	// Organization fills the subject's O field, which Kubernetes reads as
	// the groups of a client certificate.
	Organization []string
	DNSNames     []string
	IPAddresses  []net.IP
	// Server and Client select the extended key usages; at least one is set.
	Server, Client bool
	Validity       time.Duration
	// Now is the creation time; the zero value means time.Now.
	Now time.Time
}

// NewCA creates a self-signed CA certificate and key that may sign leaf
// certificates but no intermediate CAs.
func NewCA(req CARequest) (*KeyPair, error) {
	if strings.TrimSpace(req.CommonName) == "" {
		return nil, errors.New("create CA: common name is empty; pass a name such as \"thingdb-ca\"")
	}
	if req.Validity <= 0 {
		return nil, fmt.Errorf("create CA: validity %s is not positive; pass a duration such as 8760h", req.Validity)
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := nowOr(req.Now)
	template := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: req.CommonName},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(req.Validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		SubjectKeyId:          keyID(&key.PublicKey),
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("sign CA certificate %q: %w", req.CommonName, err)
	}
	return newKeyPair(der, key)
}

// Issue signs a leaf certificate for req with ca and returns it with its new
// key.
func Issue(ca *KeyPair, req IssueRequest) (*KeyPair, error) {
	if ca == nil || ca.Cert == nil || ca.Key == nil {
		return nil, errors.New("issue certificate: CA certificate and key are missing")
	}
	if !ca.Cert.IsCA {
		return nil, fmt.Errorf("issue certificate: %q is not a CA certificate; pass the CA's certificate and key", ca.Cert.Subject.CommonName)
	}
	if strings.TrimSpace(req.CommonName) == "" && len(req.DNSNames) == 0 && len(req.IPAddresses) == 0 {
		return nil, errors.New("issue certificate: no common name, DNS name or IP address; pass at least one")
	}
	if !req.Server && !req.Client {
		return nil, errors.New("issue certificate: neither server nor client usage is set; choose at least one")
	}
	if req.Validity <= 0 {
		return nil, fmt.Errorf("issue certificate: validity %s is not positive; pass a duration such as 2160h", req.Validity)
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate certificate key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	var usages []x509.ExtKeyUsage
	if req.Server {
		usages = append(usages, x509.ExtKeyUsageServerAuth)
	}
	if req.Client {
		usages = append(usages, x509.ExtKeyUsageClientAuth)
	}
	now := nowOr(req.Now)
	notAfter := now.Add(req.Validity)
	if notAfter.After(ca.Cert.NotAfter) {
		// A leaf that outlives its CA fails verification after the CA
		// expires anyway, so cap it and keep the chain consistent.
		notAfter = ca.Cert.NotAfter
	}
	template := &x509.Certificate{
		SerialNumber:   serial,
		Subject:        pkix.Name{CommonName: req.CommonName, Organization: req.Organization},
		DNSNames:       req.DNSNames,
		IPAddresses:    req.IPAddresses,
		NotBefore:      now.Add(-backdate),
		NotAfter:       notAfter,
		KeyUsage:       x509.KeyUsageDigitalSignature,
		ExtKeyUsage:    usages,
		SubjectKeyId:   keyID(&key.PublicKey),
		AuthorityKeyId: ca.Cert.SubjectKeyId,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate %q: %w", req.CommonName, err)
	}
	return newKeyPair(der, key)
}

// ParseKeyPair parses a PEM certificate and its PEM private key and checks
// that they belong together. Only the first certificate of certPEM is used.
func ParseKeyPair(certPEM, keyPEM []byte) (*KeyPair, error) {
	certs, err := ParseCertificates(certPEM)
	if err != nil {
		return nil, err
	}
	key, err := ParsePrivateKey(keyPEM)
	if err != nil {
		return nil, err
	}
	if !publicKeysEqual(certs[0].PublicKey, key.Public()) {
		return nil, fmt.Errorf("parse key pair: the private key does not match certificate %q", certs[0].Subject.CommonName)
	}
	return &KeyPair{Cert: certs[0], Key: key, CertPEM: certPEM, KeyPEM: keyPEM}, nil
}

// ParseCertificates parses every CERTIFICATE block of data, in order. Other
// block types are skipped; no certificate at all is an error.
func ParseCertificates(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, cert)
	}
	if len(certs) == 0 {
		return nil, errors.New("parse certificates: no PEM CERTIFICATE block found")
	}
	return certs, nil
}

// CertPool parses every certificate of data into a new pool.
func CertPool(data []byte) (*x509.CertPool, error) {
	certs, err := ParseCertificates(data)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for _, cert := range certs {
		pool.AddCert(cert)
	}
	return pool, nil
}

// ParsePrivateKey parses the first PEM private key of data: PKCS #8, SEC 1
// ("EC PRIVATE KEY") or PKCS #1 ("RSA PRIVATE KEY").
func ParsePrivateKey(data []byte) (crypto.Signer, error) {
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("parse private key: no PEM private key block found")
		}

		var key any
		var err error
		switch block.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("parse private key block %q: %w", block.Type, err)
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("parse private key: key type %T cannot sign", key)
		}
		return signer, nil
	}
}

// SplitHosts sorts host names and IP addresses, as given on a command line,
// into the DNS and IP subject alternative names of a certificate.
func SplitHosts(hosts []string) (dnsNames []string, ips []net.IP) {
	for _, host := range hosts {
		host = strings.TrimSpace(host)
		if host == "" {
			continue
		}
		if ip := net.ParseIP(host); ip != nil {
			ips = append(ips, ip)
			continue
		}
		dnsNames = append(dnsNames, host)
	}
	return dnsNames, ips
}

func newKeyPair(der []byte, key *ecdsa.PrivateKey) (*KeyPair, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse signed certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return &KeyPair{
		Cert:    cert,
		Key:     key,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

// randomSerial returns a random serial number from 1 to 2^128.
// RFC 5280 allows up to 20 octets, and unpredictable serials make
// certificate collisions harder to craft.
func randomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	serial, err := rand.Int(rand.Reader, limit)
	if err != nil {
		return nil, fmt.Errorf("generate serial number: %w", err)
	}
	return serial.Add(serial, big.NewInt(1)), nil
}

// keyID is the subject key identifier: a truncated SHA-256 of the encoded
// public key (RFC 7093, method 1).
func keyID(pub *ecdsa.PublicKey) []byte {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		// A P-256 key made by this package always encodes; anything
		// else is a broken internal invariant.
		panic(fmt.Sprintf("encode public key: %v", err))
	}
	sum := sha256.Sum256(der)
	return sum[:20]
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	key, ok := a.(equaler)
	return ok && key.Equal(b)
}

func nowOr(t time.Time) time.Time {
	if t.IsZero() {
		return time.Now()
	}
	return t
}
