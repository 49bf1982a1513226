package ledger

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestLedger_CreateOpen(t *testing.T) {
	l, dir := newTestLedger(t, testPassphrase, Options{})
	id := l.Identity()
	if id.NodeID != NodeID(id.SigningKey) || id.KeyID != KeyID(id.SigningKey) {
		t.Fatalf("identity %+v is not derived from its signing key", id)
	}
	info := appendThing(t, l, "lamp", map[string]string{"state": "on"})
	if info.Origin != id.NodeID || info.Sequence != 1 {
		t.Fatalf("first entry = %+v, want origin %s sequence 1", info, id.NodeID)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	if err := l.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Close = %v, want ErrClosed", err)
	}
	if _, err := l.Get("lamp"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Get after Close = %v, want ErrClosed", err)
	}

	if _, err := Create(dir, testPassphrase, Options{KDF: testKDF}); !errors.Is(err, ErrExists) {
		t.Fatalf("Create over a ledger = %v, want ErrExists", err)
	}
	exists, err := Exists(dir)
	if err != nil || !exists {
		t.Fatalf("Exists(%s) = %v, %v; want true", dir, exists, err)
	}
	empty := t.TempDir()
	if _, err := Open(empty, testPassphrase, Options{}); !errors.Is(err, ErrNoLedger) {
		t.Fatalf("Open of an empty directory = %v, want ErrNoLedger", err)
	}

	l2 := openTestLedger(t, dir, testPassphrase, Options{})
	if l2.Identity().NodeID != id.NodeID {
		t.Fatalf("node id changed across Open: %s, want %s", l2.Identity().NodeID, id.NodeID)
	}
	v, err := l2.Get("lamp")
	if err != nil {
		t.Fatalf("Get = %v", err)
	}
	if string(v.Data) != `{"state":"on"}` || !v.SignatureValid || v.Actor != "tester" || v.Hash != info.Hash {
		t.Fatalf("Get = %+v, data %s", v, v.Data)
	}
	if _, err := Open(dir, testPassphrase, Options{}); err == nil || !strings.Contains(err.Error(), "another process") {
		t.Fatalf("second Open of an open ledger = %v, want a lock error", err)
	}
	if _, err := l2.Get("missing"); !errors.Is(err, ErrThingNotFound) {
		t.Fatalf("Get(missing) = %v, want ErrThingNotFound", err)
	}
}

func TestOpen_WrongPassphrase(t *testing.T) {
	l, dir := newTestLedger(t, testPassphrase, Options{})
	appendThing(t, l, "lamp", 1)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	// A torn tail must stay untouched when the passphrase is wrong.
	path := filepath.Join(dir, ledgerFile)
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"v":1,"orig`)
	f.Close()
	before := snapshotDir(t, dir)

	wrong := []byte("not the passphrase")
	_, err = Open(dir, wrong, Options{})
	if !errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("Open with a wrong passphrase = %v, want ErrWrongPassphrase", err)
	}
	if strings.Contains(err.Error(), string(wrong)) || strings.Contains(err.Error(), string(testPassphrase)) {
		t.Fatalf("error %q contains a passphrase", err)
	}
	if after := snapshotDir(t, dir); !equalSnapshots(before, after) {
		t.Fatalf("Open with a wrong passphrase changed the directory")
	}
	l = openTestLedger(t, dir, testPassphrase, Options{})
	if l.TailRepair() == nil {
		t.Fatalf("Open with the right passphrase did not repair the torn tail")
	}
}

func snapshotDir(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	names, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, n := range names {
		raw, err := os.ReadFile(filepath.Join(dir, n.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[n.Name()] = raw
	}
	return out
}

func equalSnapshots(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !bytes.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

func TestChangePassphrase(t *testing.T) {
	l, dir := newTestLedger(t, testPassphrase, Options{})
	for i := range 5 {
		appendThing(t, l, "lamp", i)
	}
	id := l.Identity()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	before := snapshotDir(t, dir)
	newPass := []byte("a new passphrase")

	err := ChangePassphrase(dir, []byte("wrong"), newPass, testKDF)
	if !errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("ChangePassphrase with a wrong old passphrase = %v, want ErrWrongPassphrase", err)
	}
	if !equalSnapshots(before, snapshotDir(t, dir)) {
		t.Fatalf("a rejected passphrase change modified the directory")
	}

	if err := ChangePassphrase(dir, testPassphrase, newPass, testKDF); err != nil {
		t.Fatalf("ChangePassphrase = %v", err)
	}
	after := snapshotDir(t, dir)
	if len(after) != len(before) {
		t.Fatalf("files after change = %d, want %d (no temporary files left)", len(after), len(before))
	}
	for name, content := range before {
		changed := !bytes.Equal(content, after[name])
		if changed != (name == headerFile) {
			t.Errorf("%s changed = %v, want only %s to change", name, changed, headerFile)
		}
	}
	if _, err := Open(dir, testPassphrase, Options{}); !errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("Open with the old passphrase = %v, want ErrWrongPassphrase", err)
	}
	l = openTestLedger(t, dir, newPass, Options{})
	if l.Identity().NodeID != id.NodeID {
		t.Fatalf("node id changed with the passphrase")
	}
	v, err := l.Get("lamp")
	if err != nil || string(v.Data) != "4" {
		t.Fatalf("Get after passphrase change = %s, %v; want 4", v.Data, err)
	}
}

func TestAppend_Durability(t *testing.T) {
	tests := map[string]struct {
		durability Durability
		// wantShared requires concurrent appends to share fsyncs.
		wantShared bool
		// wantSyncs is whether Append waits for any fsync at all.
		wantSyncs bool
	}{
		// Under "always" a group write of queued appends gets one fsync.
		"always": {durability: DurabilityAlways, wantShared: true, wantSyncs: true},
		"batch":  {durability: DurabilityBatch, wantShared: true, wantSyncs: true},
		"none":   {durability: DurabilityNone},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			l, dir := newTestLedger(t, testPassphrase, Options{Durability: tc.durability})
			var syncs atomic.Int64
			var syncedTo atomic.Int64
			l.testSync = func() error {
				target := l.size.Load()
				time.Sleep(5 * time.Millisecond)
				if err := l.file.Sync(); err != nil {
					return err
				}
				syncs.Add(1)
				syncedTo.Store(target)
				return nil
			}

			const writers = 16
			hashes := make([]string, writers)
			durableAt := make([]int64, writers)
			var wg sync.WaitGroup
			for i := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					info, err := l.Append(context.Background(), AppendRequest{Thing: "t", Actor: "a", Data: mustJSON(i)})
					if err != nil {
						t.Errorf("Append = %v", err)
						return
					}
					hashes[i], durableAt[i] = info.Hash, syncedTo.Load()
				}()
			}
			wg.Wait()

			n := syncs.Load()
			switch {
			case !tc.wantSyncs && n != 0:
				t.Errorf("fsyncs = %d, want 0", n)
			case tc.wantShared && (n < 1 || n >= writers):
				t.Errorf("fsyncs = %d for %d concurrent appends, want between 1 and %d", n, writers, writers-1)
			}
			if tc.wantSyncs {
				ends := lineEnds(t, readLedgerFile(t, dir))
				for i, h := range hashes {
					if durableAt[i] < ends[h] {
						t.Errorf("append %d returned with fsync covering %d bytes, but its line ends at %d", i, durableAt[i], ends[h])
					}
				}
			}
			heads := l.Heads()
			if len(heads) != 1 || heads[0].Sequence != writers {
				t.Fatalf("heads = %+v, want one origin at sequence %d", heads, writers)
			}
		})
	}
}

// lineEnds maps each line's hash to the file offset just past its newline.
func lineEnds(t *testing.T, raw []byte) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	var offset int64
	for _, line := range bytes.SplitAfter(raw, []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		offset += int64(len(line))
		h := lineHash(bytes.TrimSuffix(line, []byte("\n")))
		out[hexString(h[:])] = offset
	}
	return out
}

func TestAppend_FsyncErrorIsFatal(t *testing.T) {
	for _, d := range []Durability{DurabilityAlways, DurabilityBatch} {
		t.Run(string(d), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "ledger")
			l, err := Create(dir, testPassphrase, Options{KDF: testKDF, Durability: d})
			if err != nil {
				t.Fatal(err)
			}
			var calls atomic.Int64
			l.testSync = func() error { calls.Add(1); return errors.New("injected EIO") }
			if _, err := l.Append(context.Background(), AppendRequest{Thing: "t", Actor: "a", Data: mustJSON(1)}); !errors.Is(err, ErrFailed) {
				t.Fatalf("Append with failing fsync = %v, want ErrFailed", err)
			}
			before := calls.Load()
			if _, err := l.Append(context.Background(), AppendRequest{Thing: "t", Actor: "a", Data: mustJSON(2)}); !errors.Is(err, ErrFailed) {
				t.Fatalf("Append after failed fsync = %v, want ErrFailed", err)
			}
			if calls.Load() != before {
				t.Fatalf("fsync was retried after a failure")
			}
			if err := l.Close(); !errors.Is(err, ErrFailed) {
				t.Fatalf("Close after failed fsync = %v, want ErrFailed", err)
			}
			// Reopening checks the file; the unsynced entry may or may not be there.
			l2 := openTestLedger(t, dir, testPassphrase, Options{})
			appendThing(t, l2, "t", 3)
		})
	}
}

func TestAppend_InvalidRequest(t *testing.T) {
	l, _ := newTestLedger(t, testPassphrase, Options{})
	_, badSigner, _ := ed25519.GenerateKey(nil)
	badSigner = append(ed25519.PrivateKey{}, badSigner...)
	badSigner[40] ^= 1
	tests := map[string]struct {
		req  AppendRequest
		want string
	}{
		"missing thing":     {AppendRequest{Actor: "a", Data: mustJSON(1)}, "missing thing id"},
		"control in thing":  {AppendRequest{Thing: "a\nb", Actor: "a", Data: mustJSON(1)}, "control character"},
		"long actor":        {AppendRequest{Thing: "t", Actor: strings.Repeat("x", MaxIDLen+1), Data: mustJSON(1)}, "maximum is 256"},
		"missing data":      {AppendRequest{Thing: "t", Actor: "a"}, "missing data"},
		"invalid JSON":      {AppendRequest{Thing: "t", Actor: "a", Data: json.RawMessage(`{"a":`)}, "invalid JSON"},
		"bad recipient id":  {AppendRequest{Thing: "t", Actor: "a", Data: mustJSON(1), Recipients: []Recipient{{NodeID: "peer", PublicKey: make([]byte, 32)}}}, "invalid recipient node id"},
		"bad recipient key": {AppendRequest{Thing: "t", Actor: "a", Data: mustJSON(1), Recipients: []Recipient{{NodeID: strings.Repeat("a", 32), PublicKey: []byte{1}}}}, "invalid X25519"},
		"mismatched signer": {AppendRequest{Thing: "t", Actor: "a", Data: mustJSON(1), Signer: badSigner}, "does not match the seed"},
		"short signer":      {AppendRequest{Thing: "t", Actor: "a", Data: mustJSON(1), Signer: ed25519.PrivateKey{1, 2}}, "invalid signer key"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			size := l.Size()
			_, err := l.Append(context.Background(), tc.req)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Append = %v, want an error containing %q", err, tc.want)
			}
			if l.Size() != size {
				t.Fatalf("rejected append changed the file size from %d to %d", size, l.Size())
			}
		})
	}
}

func TestAppend_ClientSigner(t *testing.T) {
	l, _ := newTestLedger(t, testPassphrase, Options{})
	pub, priv, _ := ed25519.GenerateKey(nil)
	info, err := l.Append(context.Background(), AppendRequest{Thing: "door", Actor: "alice", Data: mustJSON("open"), Signer: priv})
	if err != nil {
		t.Fatal(err)
	}
	if info.KeyID != KeyID(pub) {
		t.Fatalf("key id = %s, want the client key's %s", info.KeyID, KeyID(pub))
	}
	v, err := l.Get("door")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(v.ActorKey, pub) || !v.SignatureValid || v.Origin != l.Identity().NodeID {
		t.Fatalf("version = %+v, want the client key, a valid signature and this node's origin", v)
	}
}

func TestSign_DomainSeparated(t *testing.T) {
	l, _ := newTestLedger(t, testPassphrase, Options{})
	pub := l.Identity().SigningKey
	sig := l.Sign("heads", []byte("message"))
	tests := map[string]struct {
		domain string
		msg    string
		want   bool
	}{
		"same domain and message": {"heads", "message", true},
		"other domain":            {"export", "message", false},
		"other message":           {"heads", "massage", false},
		"domain shifted into msg": {"head", "smessage", false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := VerifySigned(pub, tc.domain, []byte(tc.msg), sig); got != tc.want {
				t.Fatalf("VerifySigned = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestParseDurability(t *testing.T) {
	tests := map[string]struct {
		in      string
		want    Durability
		wantErr bool
	}{
		"empty":   {"", DurabilityBatch, false},
		"always":  {"always", DurabilityAlways, false},
		"batch":   {"batch", DurabilityBatch, false},
		"none":    {"none", DurabilityNone, false},
		"unknown": {"sometimes", "", true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := ParseDurability(tc.in)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("ParseDurability(%q) = %q, %v", tc.in, got, err)
			}
		})
	}
}
