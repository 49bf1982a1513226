package ledger

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// testKDF keeps Argon2id cheap in tests; production uses DefaultKDF.
var testKDF = KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}

var testPassphrase = []byte("correct horse battery staple")

// newTestLedger creates a ledger in a fresh t.TempDir() and, in t.Cleanup,
// verifies it and closes it unless the test closed it already.
func newTestLedger(t *testing.T, passphrase []byte, opts Options) (*Ledger, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ledger")
	if opts.KDF == (KDFParams{}) {
		opts.KDF = testKDF
	}
	l, err := Create(dir, passphrase, opts)
	if err != nil {
		t.Fatalf("Create(%s) = %v", dir, err)
	}
	cleanupLedger(t, l)
	return l, dir
}

// openTestLedger opens dir and registers the same verify-and-close cleanup.
func openTestLedger(t *testing.T, dir string, passphrase []byte, opts Options) *Ledger {
	t.Helper()
	l, err := Open(dir, passphrase, opts)
	if err != nil {
		t.Fatalf("Open(%s) = %v", dir, err)
	}
	cleanupLedger(t, l)
	return l
}

func cleanupLedger(t *testing.T, l *Ledger) {
	t.Cleanup(func() {
		l.closeMu.RLock()
		closed := l.closed
		l.closeMu.RUnlock()
		if closed {
			return
		}
		if _, err := l.Verify(context.Background()); err != nil {
			t.Errorf("cleanup: Verify = %v", err)
		}
		if err := l.Close(); err != nil {
			t.Errorf("cleanup: Close = %v", err)
		}
	})
}

func appendThing(t *testing.T, l *Ledger, thing string, value any, recipients ...Recipient) EntryInfo {
	t.Helper()
	data, err := json.Marshal(value)
	if err != nil {
		t.Fatal(err)
	}
	info, err := l.Append(context.Background(), AppendRequest{Thing: thing, Actor: "tester", Data: data, Recipients: recipients})
	if err != nil {
		t.Fatalf("Append(%s) = %v", thing, err)
	}
	return info
}

// exportAll returns copies of the lines Export streams.
func exportAll(t *testing.T, l *Ledger, opts ExportOptions) [][]byte {
	t.Helper()
	var lines [][]byte
	err := l.Export(context.Background(), opts, func(line []byte) error {
		lines = append(lines, append([]byte{}, line...))
		return nil
	})
	if err != nil {
		t.Fatalf("Export = %v", err)
	}
	return lines
}

func readLedgerFile(t *testing.T, dir string) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, ledgerFile))
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func recipientOf(l *Ledger) Recipient {
	id := l.Identity()
	return Recipient{NodeID: id.NodeID, PublicKey: id.RecipientKey}
}

func mustJSON(v any) json.RawMessage {
	raw, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("marshal test value: %v", err))
	}
	return raw
}

func hexString(b []byte) string { return fmt.Sprintf("%x", b) }
