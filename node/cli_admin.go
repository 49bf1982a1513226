package node

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/thingdb/thingdb/internal/atomicfile"
	"github.com/thingdb/thingdb/internal/pki"
	"github.com/thingdb/thingdb/ledger"
)

// File names of a CA directory written by `thingdb tls ca`.
const (
	caCertFile = "ca.crt"
	caKeyFile  = "ca.key"
)

func (c *CLI) runTLSCA(ctx context.Context, args []string) error {
	cmd := newCommand("tls ca", "", "Create a self-signed certificate authority: ca.crt and ca.key (mode 0600) in --out.", c.Stderr)
	out := cmd.flags.String("out", "", "directory to write ca.crt and ca.key to; it must not already hold a CA")
	name := cmd.flags.String("name", "thingdb-ca", "common name of the CA")
	validity := cmd.flags.Duration("validity", 10*365*24*time.Hour, "how long the CA certificate is valid")
	if _, err := c.parse(cmd, args, 0, 0); err != nil {
		return err
	}
	if *out == "" {
		return errors.New("missing --out: pass the directory for ca.crt and ca.key")
	}
	if _, err := os.Stat(filepath.Join(*out, caKeyFile)); err == nil {
		return fmt.Errorf("%s already exists: pass another --out or remove it first", filepath.Join(*out, caKeyFile))
	}
	ca, err := pki.NewCA(pki.CARequest{CommonName: *name, Validity: *validity})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o700); err != nil {
		return fmt.Errorf("create directory %s: %w", *out, err)
	}
	if err := atomicfile.Write(filepath.Join(*out, caKeyFile), ca.KeyPEM, 0o600); err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(*out, caCertFile), ca.CertPEM, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(c.Stdout, "created CA %q in %s, valid until %s\n", *name, *out, ca.Cert.NotAfter.Format(time.DateOnly))
	return nil
}

func (c *CLI) runTLSIssue(ctx context.Context, args []string) error {
	cmd := newCommand("tls issue", "", "Issue a certificate signed by the CA in --ca-dir and write tls.crt, tls.key (mode 0600) and ca.crt to --out, the layout --tls-dir reads.", c.Stderr)
	caDir := cmd.flags.String("ca-dir", "", "directory with ca.crt and ca.key from thingdb tls ca")
	out := cmd.flags.String("out", "", "directory to write tls.crt, tls.key and ca.crt to")
	name := cmd.flags.String("name", "", "common name of the certificate (default: the first --host)")
	var hosts multiFlag
	cmd.flags.Var(&hosts, "host", "DNS name or IP address the certificate is valid for; repeat or separate with commas")
	client := cmd.flags.Bool("client", false, "issue a client certificate instead of a server certificate")
	validity := cmd.flags.Duration("validity", 365*24*time.Hour, "how long the certificate is valid; capped at the CA's expiry")
	if _, err := c.parse(cmd, args, 0, 0); err != nil {
		return err
	}
	if *caDir == "" || *out == "" {
		return errors.New("missing --ca-dir or --out: pass the CA directory and the output directory")
	}
	certPEM, err := os.ReadFile(filepath.Join(*caDir, caCertFile))
	if err != nil {
		return fmt.Errorf("read CA certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(*caDir, caKeyFile))
	if err != nil {
		return fmt.Errorf("read CA key: %w", err)
	}
	ca, err := pki.ParseKeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("load CA from %s: %w", *caDir, err)
	}
	dnsNames, ips := pki.SplitHosts(hosts)
	commonName := *name
	if commonName == "" && len(hosts) > 0 {
		commonName = strings.TrimSpace(hosts[0])
	}
	if !*client && len(dnsNames) == 0 && len(ips) == 0 {
		return errors.New("missing --host: a server certificate needs at least one DNS name or IP address, such as --host 127.0.0.1,localhost")
	}
	leaf, err := pki.Issue(ca, pki.IssueRequest{CommonName: commonName, DNSNames: dnsNames, IPAddresses: ips, Server: !*client, Client: *client, Validity: *validity})
	if err != nil {
		return err
	}

	// Write the key first, so a reader that sees the new certificate also
	// finds its key.
	if err := os.MkdirAll(*out, 0o700); err != nil {
		return fmt.Errorf("create directory %s: %w", *out, err)
	}
	if err := atomicfile.Write(filepath.Join(*out, tlsKeyFile), leaf.KeyPEM, 0o600); err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(*out, tlsCertFile), leaf.CertPEM, 0o644); err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(*out, tlsCAFile), certPEM, 0o644); err != nil {
		return err
	}
	kind := "server"
	if *client {
		kind = "client"
	}
	fmt.Fprintf(c.Stdout, "issued %s certificate %q for %s in %s, valid until %s\n", kind, commonName, strings.Join(hosts, ","), *out, leaf.Cert.NotAfter.Format(time.DateOnly))
	return nil
}

func (c *CLI) runPeersAdd(ctx context.Context, args []string) error {
	cmd := newCommand("peers add", "", "Add a peer to a peer file, or replace the peer of the same name. Without --signing-key the keys are read from the peer's GET /v1/identity over TLS.", c.Stderr)
	peersFile := cmd.flags.String("peers-file", "", "peer file to update; created when missing")
	name := cmd.flags.String("name", "", "name of the peer")
	peerURL := cmd.flags.String("url", "", "URL of the peer's API, such as https://127.0.0.1:8443")
	signingKey := cmd.flags.String("signing-key", "", "base64 Ed25519 key of the peer (default: fetched from --url)")
	recipientKey := cmd.flags.String("recipient-key", "", "base64 X25519 key of the peer (default: fetched from --url with the signing key)")
	caFile := cmd.flags.String("ca-file", "", "CA file that signs the peer's certificate; used to fetch the identity and stored as caFile")
	tokenFile := cmd.flags.String("token-file", "", "file with a token for the peer's export scope, stored as tokenFile for the sync loop")
	if _, err := c.parse(cmd, args, 0, 0); err != nil {
		return err
	}
	if *peersFile == "" || *name == "" || *peerURL == "" {
		return errors.New("missing --peers-file, --name or --url: all three are required")
	}

	peer := Peer{Name: *name, URL: *peerURL}
	if *signingKey != "" {
		key, err := base64.StdEncoding.DecodeString(*signingKey)
		if err != nil || len(key) != ed25519.PublicKeySize {
			return fmt.Errorf("invalid --signing-key %q: use the base64 Ed25519 key from thingdb identity", *signingKey)
		}
		peer.SigningKey = key
		if *recipientKey != "" {
			if peer.RecipientKey, err = base64.StdEncoding.DecodeString(*recipientKey); err != nil || len(peer.RecipientKey) != 32 {
				return fmt.Errorf("invalid --recipient-key %q: use the base64 X25519 key from thingdb identity", *recipientKey)
			}
		}
	} else {
		tlsConfig, err := ClientTLSConfig(*caFile, "", "")
		if err != nil {
			return err
		}
		client, err := NewClient(*peerURL, "", tlsConfig)
		if err != nil {
			return err
		}
		id, err := client.Identity(ctx)
		if err != nil {
			return fmt.Errorf("fetch identity of peer %q: %w", *name, err)
		}
		peer.SigningKey, _ = base64.StdEncoding.DecodeString(id.SigningKey)
		peer.RecipientKey, _ = base64.StdEncoding.DecodeString(id.RecipientKey)
		if len(peer.SigningKey) != ed25519.PublicKeySize || ledger.NodeID(peer.SigningKey) != id.NodeID {
			return fmt.Errorf("peer %q returned node id %s that does not match its signing key", *name, id.NodeID)
		}
	}
	peer.NodeID = ledger.NodeID(peer.SigningKey)
	baseDir := filepath.Dir(*peersFile)
	peer.CAFile = relativeTo(baseDir, *caFile)
	peer.TokenFile = relativeTo(baseDir, *tokenFile)

	// Read the current file, keeping its relative paths as written.
	pf := &PeerFile{}
	data, err := os.ReadFile(*peersFile)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fmt.Errorf("read peer file: %w", err)
	default:
		if pf, err = ParsePeerFile(data, ""); err != nil {
			return fmt.Errorf("load peer file %s: %w", *peersFile, err)
		}
	}
	replaced := false
	for i := range pf.Peers {
		if pf.Peers[i].Name == peer.Name {
			pf.Peers[i] = peer
			replaced = true
		}
	}
	if !replaced {
		pf.Peers = append(pf.Peers, peer)
	}

	// Check the result as a node would load it before writing it.
	out, err := MarshalPeerFile(pf)
	if err != nil {
		return err
	}
	if _, err := ParsePeerFile(out, baseDir); err != nil {
		return fmt.Errorf("check updated peer file: %w", err)
	}
	if err := os.MkdirAll(baseDir, 0o700); err != nil {
		return fmt.Errorf("create directory %s: %w", baseDir, err)
	}
	if err := atomicfile.Write(*peersFile, out, 0o600); err != nil {
		return err
	}
	fmt.Fprintf(c.Stdout, "pinned peer %q (node %s) in %s\n", peer.Name, peer.NodeID, *peersFile)
	return nil
}

// relativeTo returns path relative to baseDir when it can, since peer files
// store paths relative to themselves.
func relativeTo(baseDir, path string) string {
	if path == "" {
		return ""
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return path
	}
	absBase, err := filepath.Abs(baseDir)
	if err != nil {
		return abs
	}
	rel, err := filepath.Rel(absBase, abs)
	if err != nil {
		return abs
	}
	return rel
}
