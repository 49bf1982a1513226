package node

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/thingdb/thingdb/internal/atomicfile"
	"github.com/thingdb/thingdb/ledger"
)

// target holds the flags that choose where a ledger command runs: on a
// local ledger directory, or against a node with --server.
type target struct {
	dataDir, passphraseFile, durability *string
	server, tokenFile, caFile           *string
	certFile, keyFile                   *string
}

func targetFlags(cmd *command, remote bool) target {
	f := cmd.flags
	t := target{
		dataDir:        f.String("data-dir", "", "ledger directory"),
		passphraseFile: f.String("passphrase-file", "", "file whose content, without a trailing newline, is the ledger passphrase"),
		durability:     f.String("durability", "batch", "when a write is acknowledged: always, batch or none"),
	}
	if remote {
		t.server = f.String("server", "", "URL of a node, such as https://127.0.0.1:8443; the command then calls its API instead of opening --data-dir")
		t.tokenFile = f.String("token-file", "", "file that contains the bearer token for --server")
		t.caFile = f.String("ca-file", "", "PEM CA certificates to trust for --server (default: the system roots)")
		t.certFile = f.String("cert-file", "", "PEM client certificate for nodes that require one")
		t.keyFile = f.String("key-file", "", "PEM key of --cert-file")
	}
	return t
}

func (t target) remote() bool { return t.server != nil && *t.server != "" }

// open opens the local ledger. create selects Create instead of Open.
func (t target) open(create bool) (*ledger.Ledger, error) {
	if *t.dataDir == "" {
		hint := ""
		if t.server != nil {
			hint = ", or --server for a running node"
		}
		return nil, fmt.Errorf("missing ledger: pass --data-dir or set %s%s", EnvName("data-dir"), hint)
	}
	durability, err := ledger.ParseDurability(*t.durability)
	if err != nil {
		return nil, err
	}
	passphrase, err := readSecretFile("passphrase", *t.passphraseFile)
	if err != nil {
		return nil, err
	}
	defer clear(passphrase)
	opts := ledger.Options{Durability: durability}

	if create {
		if err := os.MkdirAll(*t.dataDir, 0o700); err != nil {
			return nil, fmt.Errorf("create data directory %s: %w", *t.dataDir, err)
		}
		// The ledger's errors for ErrExists, ErrNoLedger and
		// ErrWrongPassphrase already name the directory, so only the hint is
		// added to them.
		l, err := ledger.Create(*t.dataDir, passphrase, opts)
		if errors.Is(err, ledger.ErrExists) {
			return nil, fmt.Errorf("%w; use another --data-dir or open this one", err)
		}
		if err != nil {
			return nil, fmt.Errorf("create ledger in %s: %w", *t.dataDir, err)
		}
		return l, nil
	}
	l, err := ledger.Open(*t.dataDir, passphrase, opts)
	switch {
	case errors.Is(err, ledger.ErrNoLedger):
		return nil, fmt.Errorf("%w; create one with thingdb init", err)
	case errors.Is(err, ledger.ErrWrongPassphrase):
		return nil, fmt.Errorf("%w; check --passphrase-file", err)
	case err != nil:
		return nil, fmt.Errorf("open ledger in %s: %w", *t.dataDir, err)
	}
	return l, nil
}

func (t target) client() (*Client, error) {
	var token string
	if *t.tokenFile != "" {
		data, err := readSecretFile("token", *t.tokenFile)
		if err != nil {
			return nil, err
		}
		token = string(data)
	}
	tlsConfig, err := ClientTLSConfig(*t.caFile, *t.certFile, *t.keyFile)
	if err != nil {
		return nil, err
	}
	return NewClient(*t.server, token, tlsConfig)
}

func (c *CLI) runInit(ctx context.Context, args []string) error {
	cmd := newCommand("init", "", "Create a ledger with a new node identity in --data-dir.", c.Stderr)
	t := targetFlags(cmd, false)
	format := outputFlag(cmd)
	if _, err := c.parse(cmd, args, 0, 0); err != nil {
		return err
	}
	l, err := t.open(true)
	if err != nil {
		return err
	}
	id := identityResponse(l.Identity())
	if err := l.Close(); err != nil {
		return fmt.Errorf("close ledger: %w", err)
	}
	return c.emit(*format, id, func(w io.Writer) {
		fmt.Fprintf(w, "created ledger in %s\n", *t.dataDir)
		printIdentity(w, id)
	})
}

func (c *CLI) runIdentity(ctx context.Context, args []string) error {
	cmd := newCommand("identity", "", "Show the node id, key id and public keys (base64) of a ledger or a node.", c.Stderr)
	t := targetFlags(cmd, true)
	format := outputFlag(cmd)
	if _, err := c.parse(cmd, args, 0, 0); err != nil {
		return err
	}
	var id IdentityResponse
	if t.remote() {
		client, err := t.client()
		if err != nil {
			return err
		}
		if id, err = client.Identity(ctx); err != nil {
			return err
		}
	} else {
		l, err := t.open(false)
		if err != nil {
			return err
		}
		id = identityResponse(l.Identity())
		if err := l.Close(); err != nil {
			return fmt.Errorf("close ledger: %w", err)
		}
	}
	return c.emit(*format, id, func(w io.Writer) { printIdentity(w, id) })
}

func printIdentity(w io.Writer, id IdentityResponse) {
	fmt.Fprintf(w, "node id\t%s\n", id.NodeID)
	fmt.Fprintf(w, "key id\t%s\n", id.KeyID)
	fmt.Fprintf(w, "signing key (Ed25519)\t%s\n", id.SigningKey)
	fmt.Fprintf(w, "recipient key (X25519)\t%s\n", id.RecipientKey)
}

// multiFlag collects a flag given several times.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, strings.Split(v, ",")...); return nil }

func (c *CLI) runPut(ctx context.Context, args []string) error {
	cmd := newCommand("put", "THING JSON", "Append a new version of THING. JSON is the data itself, @FILE to read it from a file, or - for standard input.", c.Stderr)
	t := targetFlags(cmd, true)
	actor := cmd.flags.String("actor", "cli", "actor id recorded with a local write; a node records the token name instead")
	peersFile := cmd.flags.String("peers-file", "", "peer file with the recipient keys of --recipient, for a local write")
	var recipients multiFlag
	cmd.flags.Var(&recipients, "recipient", "node id to seal the entry to (envelope mode); repeat or separate with commas")
	format := outputFlag(cmd)
	positional, err := c.parse(cmd, args, 2, 2)
	if err != nil {
		return err
	}
	thing := positional[0]
	data, err := c.readData(positional[1])
	if err != nil {
		return err
	}

	var info EntryInfoJSON
	if t.remote() {
		client, err := t.client()
		if err != nil {
			return err
		}
		info, err = client.Put(ctx, thing, PutRequest{Data: data, Recipients: recipients})
		if err != nil {
			return err
		}
	} else {
		resolved, err := localRecipients(*peersFile, recipients)
		if err != nil {
			return err
		}
		l, err := t.open(false)
		if err != nil {
			return err
		}
		appended, err := l.Append(ctx, ledger.AppendRequest{Thing: thing, Actor: *actor, Data: data, Recipients: resolved})
		if cerr := l.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("close ledger: %w", cerr)
		}
		if err != nil {
			return fmt.Errorf("append %q: %w", thing, err)
		}
		info = entryInfoJSON(appended)
	}
	return c.emit(*format, info, func(w io.Writer) {
		fmt.Fprintf(w, "appended %s: origin %s sequence %d hash %s\n", thing, info.Origin, info.Sequence, info.Hash)
	})
}

// readData returns the JSON of a put argument: inline, @FILE or - for stdin.
func (c *CLI) readData(arg string) (json.RawMessage, error) {
	var data []byte
	var err error
	source := "argument"
	switch {
	case arg == "-":
		source = "standard input"
		data, err = io.ReadAll(io.LimitReader(c.Stdin, ledger.MaxDataSize+1))
	case strings.HasPrefix(arg, "@"):
		source = arg[1:]
		data, err = os.ReadFile(arg[1:])
	default:
		data = []byte(arg)
	}
	if err != nil {
		return nil, fmt.Errorf("read data from %s: %w", source, err)
	}
	data = bytes.TrimSpace(data)
	if !json.Valid(data) {
		return nil, fmt.Errorf("data from %s is not valid JSON: quote strings, for example '\"text\"' or '{\"on\":true}'", source)
	}
	return data, nil
}

func localRecipients(peersFile string, nodeIDs []string) ([]ledger.Recipient, error) {
	if len(nodeIDs) == 0 {
		return nil, nil
	}
	if peersFile == "" {
		return nil, errors.New("--recipient needs --peers-file with the recipients' keys")
	}
	pins, err := NewPinStore(peersFile)
	if err != nil {
		return nil, err
	}
	s := &Server{pins: pins}
	return s.resolveRecipients(nodeIDs)
}

func (c *CLI) runGet(ctx context.Context, args []string) error {
	cmd := newCommand("get", "THING", "Show the latest version of THING with its provenance.", c.Stderr)
	t := targetFlags(cmd, true)
	format := outputFlag(cmd)
	positional, err := c.parse(cmd, args, 1, 1)
	if err != nil {
		return err
	}
	thing := positional[0]
	var v VersionJSON
	if t.remote() {
		client, err := t.client()
		if err != nil {
			return err
		}
		if v, err = client.Get(ctx, thing); err != nil {
			return err
		}
	} else {
		if v, err = t.localGet(thing); err != nil {
			return err
		}
	}
	return c.emit(*format, v, func(w io.Writer) { printVersion(w, v) })
}

// localGet reads the latest version of thing from the local ledger through
// its index, the same way the server does.
func (t target) localGet(thing string) (VersionJSON, error) {
	l, err := t.open(false)
	if err != nil {
		return VersionJSON{}, err
	}
	defer l.Close()

	v, err := latestVersion(l, thing)
	if errors.Is(err, ledger.ErrThingNotFound) {
		return VersionJSON{}, fmt.Errorf("thing %q not found in %s", thing, *t.dataDir)
	}
	if err != nil {
		return VersionJSON{}, fmt.Errorf("read thing %q: %w", thing, err)
	}
	return versionJSON(v), nil
}

func (c *CLI) runHistory(ctx context.Context, args []string) error {
	cmd := newCommand("history", "THING", "Show every version of THING, oldest first, with origin, sequence, time, actor and signature check.", c.Stderr)
	t := targetFlags(cmd, true)
	format := outputFlag(cmd)
	positional, err := c.parse(cmd, args, 1, 1)
	if err != nil {
		return err
	}
	thing := positional[0]
	var out HistoryResponse
	if t.remote() {
		client, err := t.client()
		if err != nil {
			return err
		}
		if out, err = client.History(ctx, thing); err != nil {
			return err
		}
	} else {
		versions, err := t.localHistory(thing)
		if err != nil {
			return err
		}
		out = HistoryResponse{Thing: thing, Versions: versions}
	}
	return c.emit(*format, out, func(w io.Writer) { printHistory(w, out) })
}

func (t target) localHistory(thing string) ([]VersionJSON, error) {
	l, err := t.open(false)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	history, err := l.History(thing)
	if err == nil && len(history) == 0 {
		err = ledger.ErrThingNotFound
	}
	if errors.Is(err, ledger.ErrThingNotFound) {
		return nil, fmt.Errorf("thing %q not found in %s", thing, *t.dataDir)
	}
	if err != nil {
		return nil, fmt.Errorf("read history of %q: %w", thing, err)
	}
	out := make([]VersionJSON, len(history))
	for i, v := range history {
		out[i] = versionJSON(v)
	}
	return out, nil
}

func printVersion(w io.Writer, v VersionJSON) {
	fmt.Fprintf(w, "thing\t%s\n", v.Thing)
	fmt.Fprintf(w, "origin\t%s\n", v.Origin)
	fmt.Fprintf(w, "sequence\t%d\n", v.Sequence)
	fmt.Fprintf(w, "time\t%s\n", v.Time.Format("2006-01-02 15:04:05.000 MST"))
	fmt.Fprintf(w, "actor\t%s (key %s)\n", v.Actor, v.KeyID)
	fmt.Fprintf(w, "signature\t%s\n", validity(v.SignatureValid))
	fmt.Fprintf(w, "data\t%s\n", dataText(v))
}

func printHistory(w io.Writer, h HistoryResponse) {
	fmt.Fprintln(w, "ORIGIN\tSEQ\tTIME\tACTOR\tSIGNATURE\tDATA")
	for _, v := range h.Versions {
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\t%s\n", v.Origin, v.Sequence, v.Time.Format("2006-01-02 15:04:05.000"), v.Actor, validity(v.SignatureValid), dataText(v))
	}
}

func validity(ok bool) string {
	if ok {
		return "valid"
	}
	return "INVALID"
}

func dataText(v VersionJSON) string {
	if !v.Readable {
		return "(not readable by this node)"
	}
	return string(v.Data)
}

// VerifyOutput is the result of `thingdb verify -o json`.
type VerifyOutput struct {
	OK      bool       `json:"ok"`
	Entries int        `json:"entries"`
	Heads   []HeadJSON `json:"heads,omitempty"`
	Line    int        `json:"line,omitempty"`
	Origin  string     `json:"origin,omitempty"`
	Seq     uint64     `json:"sequence,omitempty"`
	Reason  string     `json:"reason,omitempty"`
}

func (c *CLI) runVerify(ctx context.Context, args []string) error {
	cmd := newCommand("verify", "", "Check every entry of a local ledger: format, signature, chain and heads. Exits 1 naming the first bad line.", c.Stderr)
	t := targetFlags(cmd, false)
	format := outputFlag(cmd)
	if _, err := c.parse(cmd, args, 0, 0); err != nil {
		return err
	}
	l, err := t.open(false)
	if err != nil {
		return err
	}
	defer l.Close()
	out, verr := verifyLedger(ctx, l)
	if err := c.emit(*format, out, func(w io.Writer) { printVerify(w, out) }); err != nil {
		return err
	}
	return verr
}

func verifyLedger(ctx context.Context, l *ledger.Ledger) (VerifyOutput, error) {
	report, err := l.Verify(ctx)
	var verr *ledger.VerifyError
	if errors.As(err, &verr) {
		return VerifyOutput{Line: verr.Line, Origin: verr.Origin, Seq: verr.Sequence, Reason: verr.Reason}, fmt.Errorf("verify failed at line %d: %s", verr.Line, verr.Reason)
	}
	if err != nil {
		return VerifyOutput{Reason: err.Error()}, fmt.Errorf("verify: %w", err)
	}
	out := VerifyOutput{OK: true, Entries: report.Entries}
	for _, h := range report.Heads {
		out.Heads = append(out.Heads, HeadJSON{Origin: h.Origin, Sequence: h.Sequence, Hash: h.Hash})
	}
	return out, nil
}

func printVerify(w io.Writer, out VerifyOutput) {
	if !out.OK {
		fmt.Fprintf(w, "FAILED at line %d", out.Line)
		if out.Origin != "" {
			fmt.Fprintf(w, " (origin %s sequence %d)", out.Origin, out.Seq)
		}
		fmt.Fprintf(w, ": %s\n", out.Reason)
		return
	}
	fmt.Fprintf(w, "ok: %d entries, every signature and chain link checked\n", out.Entries)
	for _, h := range out.Heads {
		fmt.Fprintf(w, "  origin %s\thead %d\t%s\n", h.Origin, h.Sequence, h.Hash)
	}
}

func (c *CLI) runExport(ctx context.Context, args []string) error {
	cmd := newCommand("export", "", "Write a batch of entries signed by the ledger's node key as JSON, the body POST /v1/import takes.", c.Stderr)
	t := targetFlags(cmd, true)
	after := cmd.flags.String("after", "", "cursor: comma-separated origin:sequence pairs the reader already has")
	recipient := cmd.flags.String("recipient", "", "only entries addressed to this node id")
	limit := cmd.flags.Int("limit", 0, "maximum entries in the batch (0: every entry locally, the node's maximum remotely)")
	outFile := cmd.flags.String("out", "", "file to write the batch to (default standard output)")
	if _, err := c.parse(cmd, args, 0, 0); err != nil {
		return err
	}
	cursor, err := ParseCursor([]string{*after})
	if err != nil {
		return err
	}

	var batch any
	if t.remote() {
		client, err := t.client()
		if err != nil {
			return err
		}
		resp, err := client.Export(ctx, ExportQuery{After: cursor, Recipient: *recipient, Limit: *limit})
		if err != nil {
			return err
		}
		batch = resp
	} else {
		l, err := t.open(false)
		if err != nil {
			return err
		}
		defer l.Close()
		var lines [][]byte
		err = l.Export(ctx, ledger.ExportOptions{After: cursor, Recipient: *recipient, Limit: *limit}, func(line []byte) error {
			lines = append(lines, append([]byte(nil), line...))
			return nil
		})
		if err != nil {
			return fmt.Errorf("export entries: %w", err)
		}
		batch = SignBatch(l, l.Identity().NodeID, lines)
	}

	data, err := json.Marshal(batch)
	if err != nil {
		return fmt.Errorf("encode batch: %w", err)
	}
	data = append(data, '\n')
	if *outFile == "" {
		_, err = c.Stdout.Write(data)
		return err
	}
	return atomicfile.Write(*outFile, data, 0o600)
}

func (c *CLI) runImport(ctx context.Context, args []string) error {
	cmd := newCommand("import", "FILE", "Import a signed batch from FILE (- for standard input). Locally, the sender's key comes from --peers-file or --peer-key.", c.Stderr)
	t := targetFlags(cmd, true)
	peersFile := cmd.flags.String("peers-file", "", "peer file that pins the sender's signing key, for a local import")
	peerKey := cmd.flags.String("peer-key", "", "base64 Ed25519 key of the sender, for a local import without a peer file")
	format := outputFlag(cmd)
	positional, err := c.parse(cmd, args, 1, 1)
	if err != nil {
		return err
	}
	var body io.Reader = c.Stdin
	if positional[0] != "-" {
		f, err := os.Open(positional[0])
		if err != nil {
			return fmt.Errorf("open batch: %w", err)
		}
		defer f.Close()
		body = f
	}
	batch, err := DecodeBatch(body, BatchLimits{MaxLineBytes: ledger.MaxLineSize})
	if err != nil {
		return fmt.Errorf("read batch %s: %w", positional[0], err)
	}

	var resp ImportResponse
	if t.remote() {
		client, err := t.client()
		if err != nil {
			return err
		}
		resp, err = client.Import(ctx, batch)
		if err != nil {
			// The rejected entries and any fork evidence go with the error.
			if resp.Rejected > 0 || resp.Fork != nil {
				printImport(c.Stderr, resp)
			}
			return err
		}
	} else {
		l, err := t.open(false)
		if err != nil {
			return err
		}
		defer l.Close()
		key, err := senderKey(l, batch.Node, *peersFile, *peerKey)
		if err != nil {
			return err
		}
		if !batch.Verify(key) {
			return fmt.Errorf("batch signature of sender %s does not verify with its pinned key: the batch was changed or signed by another node", batch.Node)
		}
		result, err := l.Import(ctx, batch.LineBytes())
		if err != nil {
			return fmt.Errorf("import batch: %w", err)
		}
		resp = ImportResponse{Accepted: result.Accepted, Duplicates: result.Duplicates}
	}
	return c.emit(*format, resp, func(w io.Writer) { printImport(w, resp) })
}

// senderKey finds the signing key a local import checks the batch against.
func senderKey(l *ledger.Ledger, sender, peersFile, peerKey string) (ed25519.PublicKey, error) {
	if id := l.Identity(); id.NodeID == sender {
		return id.SigningKey, nil
	}
	if peerKey != "" {
		key, err := base64.StdEncoding.DecodeString(peerKey)
		if err != nil || len(key) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("invalid --peer-key %q: use the base64 Ed25519 key from the sender's thingdb identity", peerKey)
		}
		if ledger.NodeID(key) != sender {
			return nil, fmt.Errorf("--peer-key belongs to node %s, but the batch is from %s", ledger.NodeID(key), sender)
		}
		return key, nil
	}
	if peersFile == "" {
		return nil, fmt.Errorf("batch sender %s is not this node: pass --peers-file or --peer-key with its signing key", sender)
	}
	pins, err := NewPinStore(peersFile)
	if err != nil {
		return nil, err
	}
	peer, ok := pins.Lookup(sender)
	if !ok {
		return nil, fmt.Errorf("batch sender %s is not a peer in %s: pin it with thingdb peers add", sender, peersFile)
	}
	return peer.SigningKey, nil
}

func printImport(w io.Writer, resp ImportResponse) {
	fmt.Fprintf(w, "accepted %d, duplicates %d, rejected %d\n", resp.Accepted, resp.Duplicates, resp.Rejected)
	for _, r := range resp.Rejections {
		fmt.Fprintf(w, "  entry %d (origin %s sequence %d): %s\n", r.Index, r.Origin, r.Sequence, r.Reason)
	}
	if resp.Fork != nil {
		fmt.Fprintf(w, "  fork at origin %s sequence %d\n  existing: %s\n  incoming: %s\n", resp.Fork.Origin, resp.Fork.Sequence, resp.Fork.Existing, resp.Fork.Incoming)
	}
}

func (c *CLI) runPassphraseChange(ctx context.Context, args []string) error {
	cmd := newCommand("passphrase change", "", "Wrap the ledger key under a new passphrase. Only header.json is rewritten; entries stay byte-identical.", c.Stderr)
	dataDir := cmd.flags.String("data-dir", "", "ledger directory")
	oldFile := cmd.flags.String("passphrase-file", "", "file with the current passphrase")
	newFile := cmd.flags.String("new-passphrase-file", "", "file with the new passphrase")
	if _, err := c.parse(cmd, args, 0, 0); err != nil {
		return err
	}
	if *dataDir == "" {
		return fmt.Errorf("missing ledger: pass --data-dir or set %s", EnvName("data-dir"))
	}
	oldPassphrase, err := readSecretFile("passphrase", *oldFile)
	if err != nil {
		return err
	}
	defer clear(oldPassphrase)
	newPassphrase, err := readSecretFile("new-passphrase", *newFile)
	if err != nil {
		return err
	}
	defer clear(newPassphrase)
	if err := ledger.ChangePassphrase(*dataDir, oldPassphrase, newPassphrase, ledger.KDFParams{}); err != nil {
		if errors.Is(err, ledger.ErrWrongPassphrase) {
			return fmt.Errorf("change passphrase of %s: %w; check --passphrase-file", *dataDir, err)
		}
		return fmt.Errorf("change passphrase of %s: %w", *dataDir, err)
	}
	fmt.Fprintf(c.Stdout, "changed the passphrase of %s\n", *dataDir)
	return nil
}
