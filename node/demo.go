package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/thingdb/thingdb/internal/atomicfile"
	"github.com/thingdb/thingdb/ledger"
)

func (c *CLI) runDemo(ctx context.Context, args []string) error {
	cmd := newCommand("demo", "DIR", "Run the single-node demo in DIR, which must be new or empty: create a ledger, write and update things, show history and verify, then flip one byte in a copy and show verify catching it.", c.Stderr)
	positional, err := c.parse(cmd, args, 1, 1)
	if err != nil {
		return err
	}
	return RunDemo(ctx, positional[0], c.Stdout)
}

// demoWrites are the writes of the demo, in order: two lamps and a sensor,
// with updates so that history has something to show.
var demoWrites = []struct {
	thing, actor, data string
}{
	{"lamp-1", "alice", `{"room":"hall","on":false}`},
	{"sensor-7", "alice", `{"room":"hall","celsius":19.5}`},
	{"lamp-1", "bob", `{"room":"hall","on":true}`},
	{"sensor-7", "sensor-gateway", `{"room":"hall","celsius":21.0}`},
	{"lamp-1", "alice", `{"room":"hall","on":true,"brightness":40}`},
}

// RunDemo runs the single-node demo in dir and writes its story to out. It
// returns an error when any step fails, including when verify does not
// catch the flipped byte.
func RunDemo(ctx context.Context, dir string, out io.Writer) error {
	if err := checkEmptyDir(dir); err != nil {
		return err
	}
	step := func(format string, args ...any) { fmt.Fprintf(out, "\n== "+format+"\n", args...) }

	// A random passphrase in a file, as a node reads it from a Secret.
	dataDir := filepath.Join(dir, "ledger")
	passphraseFile := filepath.Join(dir, "passphrase")
	secret := make([]byte, 24)
	_, _ = rand.Read(secret) // crypto/rand.Read never returns an error since Go 1.24
	passphrase := []byte(base64.RawURLEncoding.EncodeToString(secret))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create demo directory %s: %w", dir, err)
	}
	if err := atomicfile.Write(passphraseFile, append(passphrase, '\n'), 0o600); err != nil {
		return err
	}

	step("create a ledger in %s (passphrase in %s)", dataDir, passphraseFile)
	l, err := ledger.Create(dataDir, passphrase, ledger.Options{})
	if err != nil {
		return fmt.Errorf("create demo ledger: %w", err)
	}
	defer l.Close()
	printIdentity(out, identityResponse(l.Identity()))

	step("write and update things")
	for _, w := range demoWrites {
		info, err := l.Append(ctx, ledger.AppendRequest{Thing: w.thing, Actor: w.actor, Data: json.RawMessage(w.data)})
		if err != nil {
			return fmt.Errorf("append %s: %w", w.thing, err)
		}
		fmt.Fprintf(out, "put %-9s by %-15s -> sequence %d  %s\n", w.thing, w.actor, info.Sequence, w.data)
	}

	step("latest state of lamp-1")
	latest, err := l.Get("lamp-1")
	if err != nil {
		return fmt.Errorf("get lamp-1: %w", err)
	}
	fmt.Fprintf(out, "%s\n", latest.Data)

	step("history of lamp-1 with provenance")
	history, err := l.History("lamp-1")
	if err != nil {
		return fmt.Errorf("read history of lamp-1: %w", err)
	}
	versions := HistoryResponse{Thing: "lamp-1"}
	for _, v := range history {
		versions.Versions = append(versions.Versions, versionJSON(v))
	}
	printTable(out, func(w io.Writer) { printHistory(w, versions) })

	step("verify the ledger")
	report, err := verifyLedger(ctx, l)
	if err != nil {
		return fmt.Errorf("verify demo ledger: %w", err)
	}
	printTable(out, func(w io.Writer) { printVerify(w, report) })
	if err := l.Close(); err != nil {
		return fmt.Errorf("close demo ledger: %w", err)
	}

	// Tamper with a copy, so the demo ledger itself stays intact.
	tamperedDir := filepath.Join(dir, "tampered")
	offset, err := copyAndFlip(dataDir, tamperedDir)
	if err != nil {
		return err
	}
	step("change one byte of a ciphertext, at offset %d of %s", offset, filepath.Join(tamperedDir, "ledger.ndjson"))
	caught, err := verifyCopy(ctx, tamperedDir, passphrase)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "caught: %s\n", caught)
	fmt.Fprintf(out, "\ndemo finished: %s holds the intact ledger, %s the tampered copy\n", dataDir, tamperedDir)
	return nil
}

func printTable(out io.Writer, fn func(io.Writer)) {
	c := &CLI{Stdout: out}
	_ = c.emit("text", nil, fn)
}

func checkEmptyDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read demo directory: %w", err)
	}
	if len(entries) > 0 {
		return fmt.Errorf("demo directory %s is not empty: pass a new directory", dir)
	}
	return nil
}

// copyAndFlip copies the ledger directory src to dst and changes the case
// of one letter in the ciphertext of the first entry line, which keeps the
// line well-formed so that the signature check is what catches it. It
// tampers with the first line and not the last, because Open cuts a
// damaged last line as a torn write. It returns the offset of the byte.
func copyAndFlip(src, dst string) (int64, error) {
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return 0, fmt.Errorf("create directory %s: %w", dst, err)
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		return 0, fmt.Errorf("read ledger directory %s: %w", src, err)
	}
	for _, entry := range entries {
		if entry.IsDir() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(src, entry.Name()))
		if err != nil {
			return 0, fmt.Errorf("copy ledger file: %w", err)
		}
		if err := os.WriteFile(filepath.Join(dst, entry.Name()), data, 0o600); err != nil {
			return 0, fmt.Errorf("copy ledger file: %w", err)
		}
	}

	path := filepath.Join(dst, "ledger.ndjson")
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read copied ledger: %w", err)
	}
	offset, err := ciphertextLetter(data)
	if err != nil {
		return 0, fmt.Errorf("tamper with %s: %w", path, err)
	}
	data[offset] ^= 0x20 // upper case to lower case or back
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return 0, fmt.Errorf("write tampered ledger: %w", err)
	}
	return int64(offset), nil
}

// ciphertextLetter returns the offset of the first ASCII letter inside the
// "ct" field of the first line.
func ciphertextLetter(data []byte) (int, error) {
	end := bytes.IndexByte(data, '\n')
	if end < 0 {
		return 0, errors.New("no complete first line")
	}
	field := []byte(`"ct":"`)
	start := bytes.Index(data[:end], field)
	if start < 0 {
		return 0, errors.New("first line has no ct field")
	}
	for i := start + len(field); i < end && data[i] != '"'; i++ {
		if (data[i] >= 'a' && data[i] <= 'z') || (data[i] >= 'A' && data[i] <= 'Z') {
			return i, nil
		}
	}
	return 0, errors.New("ciphertext of the first line has no letter")
}

// verifyCopy opens and verifies the tampered copy and returns how the
// damage was caught; it is an error when nothing catches it.
func verifyCopy(ctx context.Context, dir string, passphrase []byte) (string, error) {
	l, err := ledger.Open(dir, passphrase, ledger.Options{})
	if err != nil {
		return "open rejected the ledger: " + err.Error(), nil
	}
	defer l.Close()
	report, err := verifyLedger(ctx, l)
	if err == nil {
		return "", fmt.Errorf("verify passed %d entries of the tampered copy %s: the flipped byte was not detected", report.Entries, dir)
	}
	if report.Origin != "" {
		return fmt.Sprintf("verify failed at line %d (origin %s sequence %d): %s", report.Line, report.Origin, report.Seq, report.Reason), nil
	}
	return fmt.Sprintf("verify failed at line %d: %s", report.Line, report.Reason), nil
}
