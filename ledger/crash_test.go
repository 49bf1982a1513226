package ledger

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Environment of the child process that TestCrash_KillDuringAppend starts:
// the test binary itself, running only TestCrashHelperProcess.
const (
	crashDirEnv        = "THINGDB_CRASH_CHILD_DIR"
	crashDurabilityEnv = "THINGDB_CRASH_CHILD_DURABILITY"
	// crashSeedEnv replays the kill schedule of an earlier run; the test logs its seed.
	crashSeedEnv = "THINGDB_CRASH_SEED"
)

const (
	crashRoundsPerPolicy = 26 // two policies, so 52 kills in all
	crashWriters         = 6
	// crashChildLifetime ends a child that its parent failed to kill.
	crashChildLifetime = 60 * time.Second
)

// crashAck is one append that Append acknowledged: its origin, sequence and line hash.
type crashAck struct {
	origin string
	seq    uint64
	hash   string
}

// TestCrash_KillDuringAppend kills a child process with SIGKILL at a random
// moment while its goroutines append, then reopens the ledger. The child
// prints each entry as soon as Append returns. After the kill, every entry
// it printed must be stored with the same hash and the file must verify.
// Open must cut a torn last line and report exactly what it cut, and an
// append after the repair must continue the chain.
//
// SIGKILL ends the process, not the machine, so written bytes stay in the
// page cache even without fsync. To cover a tear that only a power loss
// leaves, the parent also cuts a last line that was never acknowledged at a
// random byte in about half of the rounds where one is present.
func TestCrash_KillDuringAppend(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv(crashSeedEnv); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("invalid %s %q: use the decimal seed a failed run logged", crashSeedEnv, s)
		}
	}
	t.Logf("kill schedule seed %d (rerun with %s=%d)", seed, crashSeedEnv, seed)
	// Each round verifies the whole file again; check each line's signature
	// once, as the tamper test does. A changed line misses the cache.
	testSignatureCache = &sync.Map{}
	t.Cleanup(func() { testSignatureCache = nil })
	rng := rand.New(rand.NewPCG(seed, seed>>1))

	for _, durability := range []Durability{DurabilityBatch, DurabilityAlways} {
		t.Run(string(durability), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "ledger")
			l, err := Create(dir, testPassphrase, Options{KDF: testKDF, Durability: durability})
			if err != nil {
				t.Fatalf("Create(%s) = %v", dir, err)
			}
			if err := l.Close(); err != nil {
				t.Fatalf("Close = %v", err)
			}

			acked := map[originSeq]string{}
			var childAcks, torn, cut int
			for round := range crashRoundsPerPolicy {
				acks := runCrashChild(t, dir, durability, rng)
				childAcks += len(acks)
				for _, a := range acks {
					key := originSeq{a.origin, a.seq}
					if old, ok := acked[key]; ok && old != a.hash {
						t.Fatalf("round %d: origin %s sequence %d acknowledged twice with hashes %s and %s", round, a.origin, a.seq, old, a.hash)
					}
					acked[key] = a.hash
				}

				want, simulated := crashTail(t, dir, acked, rng)
				if simulated {
					cut++
				} else if want != nil {
					torn++
				}
				checkAfterCrash(t, round, dir, durability, want, acked)
			}
			if childAcks == 0 {
				t.Fatalf("no child acknowledged an append in %d rounds; the kills came too early to test anything", crashRoundsPerPolicy)
			}
			t.Logf("%d kills, %d acknowledged appends, %d torn lines left by a kill, %d unacknowledged last lines cut by the test",
				crashRoundsPerPolicy, childAcks, torn, cut)
		})
	}
}

// runCrashChild starts the child on dir, kills it at a random moment and
// returns the appends it acknowledged before it died.
func runCrashChild(t *testing.T, dir string, durability Durability, rng *rand.Rand) []crashAck {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelperProcess$", "-test.timeout=2m")
	cmd.Env = append(os.Environ(), crashDirEnv+"="+dir, crashDurabilityEnv+"="+string(durability))
	// The child dies with the test, whatever happens to the parent.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("child stdout: %v", err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start child: %v", err)
	}

	// Pick the moment of the kill. In about one round in five it comes
	// before the first append, during start-up or Open. Otherwise it comes
	// a random delay after a random number of acknowledged appends, so it
	// lands while appends are in flight however slow the machine is.
	beforeAppends := rng.IntN(5) == 0
	waitAcks := 1 + rng.IntN(30)
	delay := time.Duration(rng.IntN(5_000)) * time.Microsecond
	if beforeAppends {
		delay = time.Duration(rng.IntN(15_000)) * time.Microsecond
	}

	// Read every line the child printed, up to its death: the pipe keeps
	// what it wrote before SIGKILL.
	ready := make(chan struct{}) // closed at the waitAcks-th acknowledgement
	done := make(chan struct{})
	var acks []crashAck
	var readErr error
	go func() {
		defer close(done)
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			fields := strings.Fields(s.Text())
			if len(fields) != 4 || fields[0] != "crash-ack" {
				continue
			}
			seq, err := strconv.ParseUint(fields[2], 10, 64)
			if err != nil {
				readErr = fmt.Errorf("invalid ack line %q: %w", s.Text(), err)
				continue
			}
			acks = append(acks, crashAck{origin: fields[1], seq: seq, hash: fields[3]})
			if len(acks) == waitAcks {
				close(ready)
			}
		}
		readErr = errors.Join(readErr, s.Err())
	}()

	if !beforeAppends {
		select {
		case <-ready:
		case <-done:
		case <-time.After(20 * time.Second):
			t.Errorf("child acknowledged fewer than %d appends within 20s", waitAcks)
		}
	}
	time.Sleep(delay)
	// A child that already exited is reported with its stderr below.
	if err := cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Fatalf("kill child: %v", err)
	}
	<-done
	err = cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || !exit.Sys().(syscall.WaitStatus).Signaled() || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child ended with %v before the kill, want death by SIGKILL; stderr:\n%s", err, stderr.String())
	}
	if readErr != nil {
		t.Fatalf("read child output: %v", readErr)
	}
	return acks
}

// crashTail looks at the end of the file the child left. When the last
// line is complete but was never acknowledged, it cuts it at a random byte
// in half of the cases, as a power loss may. It returns the repair Open
// must report, or nil, and whether the test made the cut.
func crashTail(t *testing.T, dir string, acked map[originSeq]string, rng *rand.Rand) (*TailRepair, bool) {
	t.Helper()
	path := filepath.Join(dir, ledgerFile)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	complete := int64(bytes.LastIndexByte(raw, '\n') + 1)
	if complete < int64(len(raw)) {
		return &TailRepair{Offset: complete, Bytes: int64(len(raw)) - complete}, false
	}
	if len(raw) == 0 || rng.IntN(2) == 0 {
		return nil, false
	}

	start := int64(bytes.LastIndexByte(raw[:len(raw)-1], '\n') + 1)
	last := raw[start : len(raw)-1]
	origin, seq, err := originSequence(last)
	if err != nil {
		t.Fatalf("last line of %s: %v", path, err)
	}
	hash := lineHash(last)
	if acked[originSeq{origin, seq}] == hex.EncodeToString(hash[:]) {
		return nil, false
	}
	keep := 1 + rng.Int64N(int64(len(last))) // at least one byte, at most the line without its newline
	if err := os.Truncate(path, start+keep); err != nil {
		t.Fatal(err)
	}
	return &TailRepair{Offset: start, Bytes: keep}, true
}

// checkAfterCrash reopens the ledger and checks the repair, the chain and
// every acknowledged entry, then appends once and records that append.
func checkAfterCrash(t *testing.T, round int, dir string, durability Durability, want *TailRepair, acked map[originSeq]string) {
	t.Helper()
	l, err := Open(dir, testPassphrase, Options{Durability: durability})
	if err != nil {
		t.Fatalf("round %d: Open after kill = %v", round, err)
	}
	defer func() {
		if err := l.Close(); err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("round %d: Close = %v", round, err)
		}
	}()

	got := l.TailRepair()
	switch {
	case want == nil && got != nil:
		t.Fatalf("round %d: TailRepair = %+v for a file that ends with a complete line", round, *got)
	case want != nil && (got == nil || *got != *want):
		t.Fatalf("round %d: TailRepair = %+v, want %+v", round, got, *want)
	}
	if want != nil {
		info, err := os.Stat(filepath.Join(dir, ledgerFile))
		if err != nil {
			t.Fatal(err)
		}
		if info.Size() != want.Offset {
			t.Fatalf("round %d: file has %d bytes after the repair, want %d", round, info.Size(), want.Offset)
		}
	}

	report, err := l.Verify(context.Background())
	if err != nil {
		t.Fatalf("round %d: Verify after kill = %v", round, err)
	}
	stored := map[originSeq]string{}
	err = l.Export(context.Background(), ExportOptions{}, func(line []byte) error {
		origin, seq, err := originSequence(line)
		if err != nil {
			return err
		}
		hash := lineHash(line)
		stored[originSeq{origin, seq}] = hex.EncodeToString(hash[:])
		return nil
	})
	if err != nil {
		t.Fatalf("round %d: Export = %v", round, err)
	}
	if len(stored) != report.Entries {
		t.Fatalf("round %d: Export streamed %d entries, Verify counted %d", round, len(stored), report.Entries)
	}
	for key, hash := range acked {
		if stored[key] != hash {
			t.Fatalf("round %d: acknowledged entry origin %s sequence %d (hash %s) is missing or changed: stored hash %q",
				round, key.origin, key.seq, hash, stored[key])
		}
	}

	// Appending after the repair continues the chain from the last complete line.
	head := l.Heads()
	var headSeq uint64
	if len(head) == 1 {
		headSeq = head[0].Sequence
	}
	info, err := l.Append(context.Background(), AppendRequest{Thing: "after-crash", Actor: "parent", Data: mustJSON(round)})
	if err != nil {
		t.Fatalf("round %d: Append after reopen = %v", round, err)
	}
	if info.Sequence != headSeq+1 {
		t.Fatalf("round %d: Append after reopen got sequence %d, want %d", round, info.Sequence, headSeq+1)
	}
	acked[originSeq{info.Origin, info.Sequence}] = info.Hash
	v, err := l.Get("after-crash")
	if err != nil || string(v.Data) != strconv.Itoa(round) {
		t.Fatalf("round %d: Get after append = %s, %v; want %d", round, v.Data, err, round)
	}
}

// TestCrashHelperProcess is the child of TestCrash_KillDuringAppend. It opens
// the ledger and appends from crashWriters goroutines
// until it is killed, printing "crash-ack <origin> <sequence> <hash>" as soon
// as each Append returns.
func TestCrashHelperProcess(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("runs only as the child process of TestCrash_KillDuringAppend")
	}
	os.Exit(crashChild(dir, Durability(os.Getenv(crashDurabilityEnv))))
}

func crashChild(dir string, durability Durability) int {
	time.AfterFunc(crashChildLifetime, func() {
		fmt.Fprintf(os.Stderr, "crash child: not killed within %s\n", crashChildLifetime)
		os.Exit(4)
	})
	l, err := Open(dir, testPassphrase, Options{Durability: durability})
	if err != nil {
		fmt.Fprintf(os.Stderr, "crash child: %v\n", err)
		return 2
	}

	// Client-side signing and envelope mode take other paths through Append.
	_, actorKey, err := ed25519.GenerateKey(nil)
	if err != nil {
		fmt.Fprintf(os.Stderr, "crash child: %v\n", err)
		return 2
	}
	peer, err := ecdh.X25519().GenerateKey(nil)
	if err != nil {
		fmt.Fprintf(os.Stderr, "crash child: %v\n", err)
		return 2
	}
	recipient := Recipient{NodeID: hex.EncodeToString(randomBytes(16)), PublicKey: peer.PublicKey().Bytes()}
	// A large value spans many pages, so a kill can land inside its write.
	large := mustJSON(strings.Repeat("x", 24<<10))

	var out sync.Mutex
	report := func(line string) {
		out.Lock()
		defer out.Unlock()
		// One write per line, so the parent never reads half an ack.
		if _, err := io.WriteString(os.Stdout, line); err != nil {
			os.Exit(5)
		}
	}
	for w := range crashWriters {
		go func() {
			for i := 0; ; i++ {
				req := AppendRequest{Thing: fmt.Sprintf("thing-%d", (w*7+i)%11), Actor: fmt.Sprintf("writer-%d", w), Data: mustJSON(map[string]int{"writer": w, "i": i})}
				switch i % 16 {
				case 3, 11:
					req.Signer = actorKey
				case 5, 13:
					req.Recipients = []Recipient{recipient}
				case 15:
					req.Data = large
				}
				info, err := l.Append(context.Background(), req)
				if err != nil {
					fmt.Fprintf(os.Stderr, "crash child: append failed: %v\n", err)
					os.Exit(3)
				}
				report(fmt.Sprintf("crash-ack %s %d %s\n", info.Origin, info.Sequence, info.Hash))
			}
		}()
	}
	select {}
}
