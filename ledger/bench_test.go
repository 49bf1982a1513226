package ledger

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Environment of the benchmarks. hack/bench.sh sets them; each has a default
// so that `go test -bench .` works on its own.
const (
	// benchDirEnv names the directory the benchmark ledgers and the fsync
	// probe are written in, which decides the disk they measure.
	benchDirEnv = "THINGDB_BENCH_DIR"
	// benchBuildDirEnv makes TestBenchBuildLedger create a large ledger there.
	benchBuildDirEnv = "THINGDB_BENCH_BUILD_DIR"
	// benchOpenDirEnv makes TestBenchOpenLedger open the ledger there and
	// print the time and peak memory Open took.
	benchOpenDirEnv = "THINGDB_BENCH_OPEN_DIR"
	// benchEntriesEnv and benchThingsEnv size the large ledger.
	benchEntriesEnv = "THINGDB_BENCH_ENTRIES"
	benchThingsEnv  = "THINGDB_BENCH_THINGS"
)

var benchPassphrase = []byte("benchmark passphrase")

// benchValue is the 256-byte JSON value of every benchmark append.
var benchValue = json.RawMessage(`{"state":"on","note":"` + strings.Repeat("x", 256-len(`{"state":"on","note":""}`)) + `"}`)

// Size of the ledger that the verify, get and export benchmarks read.
const (
	readBenchEntries = 20_000
	readBenchThings  = 2_000
)

func benchDir(b testing.TB) string {
	parent := os.Getenv(benchDirEnv)
	if parent == "" {
		return b.TempDir()
	}
	dir, err := os.MkdirTemp(parent, "bench-")
	if err != nil {
		b.Fatalf("create a directory in %s=%s: %v", benchDirEnv, parent, err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// BenchmarkFloor measures the primitives an append or a verify is built
// from, so the ledger figures can be read as ratios of them.
func BenchmarkFloor(b *testing.B) {
	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		b.Fatal(err)
	}
	pub := key.Public().(ed25519.PublicKey)
	// A real entry: its signed bytes and its line.
	e := &Entry{Version: FormatVersion, Origin: NodeID(pub), Sequence: 1, Thing: "lamp", Time: time.Now().UTC(),
		Actor: "bench", KeyID: KeyID(pub), ActorKey: pub, Nonce: randomBytes(nonceSize)}
	cek := randomBytes(keySize)
	e.Ciphertext = newGCM(cek).Seal(nil, e.Nonce, benchValue, e.additionalData())
	e.DataHash = dataHash(cek, benchValue)
	e.Wrap = wrapContentKey(randomBytes(keySize), infoLedgerWrap, e.Origin, e.Nonce, cek)
	signed := e.signedBytes()
	e.Signature = ed25519.Sign(key, signed)
	line := e.appendLine(nil)

	b.Run("ed25519-sign", func(b *testing.B) {
		for range b.N {
			ed25519.Sign(key, signed)
		}
	})
	b.Run("ed25519-verify", func(b *testing.B) {
		for range b.N {
			if !ed25519.Verify(pub, signed, e.Signature) {
				b.Fatal("signature does not verify")
			}
		}
	})
	b.Run("aes256gcm-seal-256B", func(b *testing.B) {
		aead := newGCM(cek)
		out := make([]byte, 0, len(benchValue)+aead.Overhead())
		b.SetBytes(int64(len(benchValue)))
		for range b.N {
			out = aead.Seal(out[:0], e.Nonce, benchValue, nil)
		}
	})
	b.Run("sha256-entry-line", func(b *testing.B) {
		b.SetBytes(int64(len(line)))
		for range b.N {
			sha256.Sum256(line)
		}
		b.ReportMetric(float64(len(line)), "line-bytes")
	})
	b.Run("fsync", func(b *testing.B) {
		f, err := os.Create(filepath.Join(benchDir(b), "fsync-probe"))
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		block := make([]byte, 512)
		b.ResetTimer()
		for range b.N {
			if _, err := f.Write(block); err != nil {
				b.Fatal(err)
			}
			if err := f.Sync(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkAppend measures appends of a 256-byte value; one op is one entry.
func BenchmarkAppend(b *testing.B) {
	tests := []struct {
		name       string
		durability Durability
		writers    int
		recipients int
	}{
		{"none", DurabilityNone, 1, 0},
		{"none-3-recipients", DurabilityNone, 1, 3},
		{"batch-1-writer", DurabilityBatch, 1, 0},
		{"batch-64-writers", DurabilityBatch, 64, 0},
	}
	for _, tc := range tests {
		b.Run(tc.name, func(b *testing.B) {
			l, err := Create(filepath.Join(benchDir(b), "ledger"), benchPassphrase, Options{KDF: testKDF, Durability: tc.durability})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			var recipients []Recipient
			for range tc.recipients {
				peer, err := Create(filepath.Join(benchDir(b), "peer"), benchPassphrase, Options{KDF: testKDF})
				if err != nil {
					b.Fatal(err)
				}
				recipients = append(recipients, recipientOf(peer))
				peer.Close()
			}

			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			for w := range tc.writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
						req := AppendRequest{Thing: "thing-" + strconv.Itoa(w), Actor: "bench", Data: benchValue, Recipients: recipients}
						if _, err := l.Append(context.Background(), req); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "entries/s")
		})
	}
}

var (
	readBenchOnce   sync.Once
	readBenchLedger *Ledger
	readBenchErr    error
)

// readLedger returns a ledger of readBenchEntries entries of readBenchThings
// things, shared by the read benchmarks of one process.
func readLedger(b *testing.B) *Ledger {
	readBenchOnce.Do(func() {
		dir, err := os.MkdirTemp(os.Getenv(benchDirEnv), "bench-read-")
		if err != nil {
			readBenchErr = err
			return
		}
		// NOTE: nothing removes this directory, because no read benchmark
		// can tell it is the last. hack/bench.sh removes its whole work directory.
		readBenchLedger, readBenchErr = buildLedger(filepath.Join(dir, "ledger"), readBenchEntries, readBenchThings, testKDF)
	})
	if readBenchErr != nil {
		b.Fatalf("build the read benchmark ledger: %v", readBenchErr)
	}
	return readBenchLedger
}

// buildLedger creates a ledger under durability none and appends entries
// spread over things, from a few goroutines so that sealing overlaps signing.
func buildLedger(dir string, entries, things int, kdf KDFParams) (*Ledger, error) {
	l, err := Create(dir, benchPassphrase, Options{KDF: kdf, Durability: DurabilityNone})
	if err != nil {
		return nil, err
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1) - 1; i < int64(entries); i = next.Add(1) - 1 {
				thing := fmt.Sprintf("thing-%06d", i%int64(things))
				if _, err := l.Append(context.Background(), AppendRequest{Thing: thing, Actor: "bench", Data: benchValue}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// BenchmarkVerify verifies the whole read ledger per op, on all cores.
func BenchmarkVerify(b *testing.B) {
	l := readLedger(b)
	b.ResetTimer()
	for range b.N {
		report, err := l.Verify(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		if report.Entries != readBenchEntries {
			b.Fatalf("verified %d entries, want %d", report.Entries, readBenchEntries)
		}
	}
	b.ReportMetric(float64(b.N*readBenchEntries)/b.Elapsed().Seconds(), "entries/s")
}

// BenchmarkGet reads and decrypts the latest version of a thing per op.
func BenchmarkGet(b *testing.B) {
	l := readLedger(b)
	b.ResetTimer()
	for i := range b.N {
		if _, err := l.Get(fmt.Sprintf("thing-%06d", (i*7919)%readBenchThings)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkExport streams every line of the read ledger per op.
func BenchmarkExport(b *testing.B) {
	l := readLedger(b)
	b.ResetTimer()
	for range b.N {
		n := 0
		err := l.Export(context.Background(), ExportOptions{}, func([]byte) error { n++; return nil })
		if err != nil {
			b.Fatal(err)
		}
		if n != readBenchEntries {
			b.Fatalf("exported %d entries, want %d", n, readBenchEntries)
		}
	}
	b.ReportMetric(float64(b.N*readBenchEntries)/b.Elapsed().Seconds(), "entries/s")
}

// TestBenchBuildLedger creates the large ledger that TestBenchOpenLedger
// opens. It runs only when hack/bench.sh sets THINGDB_BENCH_BUILD_DIR. The
// ledger uses DefaultKDF, so Open pays the Argon2id cost and memory of a
// production ledger.
func TestBenchBuildLedger(t *testing.T) {
	dir := os.Getenv(benchBuildDirEnv)
	if dir == "" {
		t.Skipf("runs only from hack/bench.sh, with %s set", benchBuildDirEnv)
	}
	entries, things := benchSize(t)
	start := time.Now()
	l, err := buildLedger(dir, entries, things, DefaultKDF)
	if err != nil {
		t.Fatalf("build ledger of %d entries in %s: %v", entries, dir, err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	fmt.Printf("bench-build entries=%d things=%d seconds=%.3f\n", entries, things, elapsed.Seconds())
}

// TestBenchOpenLedger opens the ledger that TestBenchBuildLedger built and
// prints how long Open took, the peak resident set of this process (VmHWM)
// and the peak Go heap, sampled every millisecond during Open. Run it in a
// process of its own, so the peak belongs to Open alone.
func TestBenchOpenLedger(t *testing.T) {
	dir := os.Getenv(benchOpenDirEnv)
	if dir == "" {
		t.Skipf("runs only from hack/bench.sh, with %s set", benchOpenDirEnv)
	}
	var peakHeap atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			metrics.Read(sample)
			if v := sample[0].Value.Uint64(); v > peakHeap.Load() {
				peakHeap.Store(v)
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()

	start := time.Now()
	l, err := Open(dir, benchPassphrase, Options{})
	elapsed := time.Since(start)
	close(stop)
	<-sampled
	if err != nil {
		t.Fatalf("Open(%s) = %v", dir, err)
	}
	defer l.Close()
	peakRSS, err := peakResidentBytes()
	if err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	var mem runtime.MemStats
	runtime.ReadMemStats(&mem)
	fmt.Printf("bench-open entries=%d things=%d seconds=%.3f peak_rss_bytes=%d peak_heap_bytes=%d heap_after_gc_bytes=%d\n",
		l.lines, len(l.things), elapsed.Seconds(), peakRSS, peakHeap.Load(), mem.HeapAlloc)
}

// peakResidentBytes returns VmHWM, the peak resident set size of this
// process, from /proc/self/status (Linux).
func peakResidentBytes() (uint64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, fmt.Errorf("read peak resident set: %w", err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) == 3 && fields[0] == "VmHWM:" && fields[2] == "kB" {
			kib, err := strconv.ParseUint(fields[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parse VmHWM %q: %w", fields[1], err)
			}
			return kib * 1024, nil
		}
	}
	return 0, fmt.Errorf("no VmHWM line in /proc/self/status: %w", s.Err())
}

func benchSize(t *testing.T) (entries, things int) {
	t.Helper()
	entries, things = 1_000_000, 10_000
	for _, v := range []struct {
		env string
		out *int
	}{{benchEntriesEnv, &entries}, {benchThingsEnv, &things}} {
		s := os.Getenv(v.env)
		if s == "" {
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("invalid %s %q: use a positive count", v.env, s)
		}
		*v.out = n
	}
	return entries, things
}
