package node

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/thingdb/thingdb/internal/atomicfile"
	"github.com/thingdb/thingdb/internal/pki"
	"github.com/thingdb/thingdb/ledger"
)

// Environment of TestBenchNode; hack/bench-node.sh sets them.
const (
	// benchNodeEnv turns TestBenchNode on.
	benchNodeEnv = "THINGDB_BENCH_NODE"
	// benchNodeEntriesEnv sizes the import and sync runs (default 100000).
	benchNodeEntriesEnv = "THINGDB_BENCH_NODE_ENTRIES"
	// benchNodeMeshWritesEnv sizes the 5-node mesh run (default 10000).
	benchNodeMeshWritesEnv = "THINGDB_BENCH_NODE_MESH_WRITES"
	// benchNodePutSecondsEnv is the length of each put run (default 5).
	benchNodePutSecondsEnv = "THINGDB_BENCH_NODE_PUT_SECONDS"
)

// benchNodeValue is the 256-byte JSON value of every benchmark write, the
// size the ledger benchmarks use.
var benchNodeValue = json.RawMessage(`{"state":"on","note":"` + strings.Repeat("x", 256-len(`{"state":"on","note":""}`)) + `"}`)

func benchEnvInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("invalid %s=%q: use a positive integer", name, v)
	}
	return n
}

// benchPrint writes one result line that hack/bench-node.sh parses.
func benchPrint(kv ...any) {
	var b strings.Builder
	b.WriteString("bench-node")
	for i := 0; i+1 < len(kv); i += 2 {
		fmt.Fprintf(&b, " %v=%v", kv[i], kv[i+1])
	}
	fmt.Println(b.String())
}

// benchServer is a node served over TLS on loopback, without test logging.
type benchServer struct {
	ledger *ledger.Ledger
	url    string
	caFile string
	token  string // admin
	export string // export scope, for peers
	pins   *PinStore
	client *http.Client
	dir    string
}

// benchLedger creates a ledger in a temporary directory. Unlike
// newTestLedger it does not verify at cleanup, which would take longer than
// the benchmark.
func benchLedger(t *testing.T, durability ledger.Durability) (*ledger.Ledger, string) {
	t.Helper()
	dir := t.TempDir()
	l, err := ledger.Create(dir, []byte("bench passphrase"), ledger.Options{KDF: testKDF, Durability: durability})
	if err != nil {
		t.Fatalf("create ledger: %v", err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l, dir
}

func startBenchServer(t *testing.T, dir string, durability ledger.Durability, create bool) *benchServer {
	t.Helper()
	opts := ledger.Options{KDF: testKDF, Durability: durability}
	var l *ledger.Ledger
	var err error
	if create {
		l, err = ledger.Create(filepath.Join(dir, "data"), []byte("bench passphrase"), opts)
	} else {
		l, err = ledger.Open(filepath.Join(dir, "data"), []byte("bench passphrase"), opts)
	}
	if err != nil {
		t.Fatalf("open bench ledger: %v", err)
	}
	t.Cleanup(func() { _ = l.Close() })

	ca := testCA(t)
	tlsDir := filepath.Join(dir, "tls")
	if err := os.MkdirAll(tlsDir, 0o700); err != nil {
		t.Fatal(err)
	}
	writeServerCert(t, ca, tlsDir)
	tokenDir := filepath.Join(dir, "tokens")
	s := &benchServer{ledger: l, caFile: filepath.Join(tlsDir, tlsCAFile), dir: dir}
	if s.token, err = AddToken(tokenDir, "bench", []Scope{ScopeAdmin}); err != nil {
		t.Fatal(err)
	}
	if s.export, err = AddToken(tokenDir, "peer", []Scope{ScopeExport}); err != nil {
		t.Fatal(err)
	}
	tokens, err := NewTokenStore(tokenDir)
	if err != nil {
		t.Fatal(err)
	}
	if s.pins, err = NewPinStore(filepath.Join(dir, "peers.json")); err != nil {
		t.Fatal(err)
	}
	certs, err := NewCertReloader(tlsDir, ClientAuthNone)
	if err != nil {
		t.Fatal(err)
	}
	server := NewServer(ServerOptions{Ledger: l, Tokens: tokens, Pins: s.pins})
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpServer := &http.Server{Handler: server.Handler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(slog.DiscardHandler, slog.LevelError)}
	go func() { _ = httpServer.Serve(tls.NewListener(listener, certs.TLSConfig())) }()
	t.Cleanup(func() { _ = httpServer.Close() })
	s.url = "https://" + listener.Addr().String()

	pool, err := pki.CertPool(ca.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	transport := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, MaxIdleConnsPerHost: 64}
	t.Cleanup(transport.CloseIdleConnections)
	s.client = &http.Client{Transport: transport, Timeout: 5 * time.Minute}
	return s
}

// peer returns the peer file entry that pins s.
func (s *benchServer) peer(t *testing.T, name string) Peer {
	t.Helper()
	id := s.ledger.Identity()
	tokenFile := filepath.Join(s.dir, "peer.token")
	if err := os.WriteFile(tokenFile, []byte(s.export), 0o600); err != nil {
		t.Fatal(err)
	}
	return Peer{Name: name, URL: s.url, NodeID: id.NodeID, SigningKey: id.SigningKey, RecipientKey: id.RecipientKey, CAFile: s.caFile, TokenFile: tokenFile}
}

func writeBenchPeers(t *testing.T, s *benchServer, interval time.Duration, batchSize int, peers ...Peer) {
	t.Helper()
	data, err := MarshalPeerFile(&PeerFile{Interval: interval, BatchSize: batchSize, Peers: peers})
	if err != nil {
		t.Fatal(err)
	}
	if err := atomicfile.Write(filepath.Join(s.dir, "peers.json"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.pins.Reload(); err != nil {
		t.Fatal(err)
	}
}

// TestBenchNode measures the node's put, import and sync rates and prints
// them for hack/bench-node.sh. It runs only with THINGDB_BENCH_NODE=1.
func TestBenchNode(t *testing.T) {
	if os.Getenv(benchNodeEnv) == "" {
		t.Skip("set " + benchNodeEnv + "=1 to run the node benchmarks (hack/bench-node.sh does)")
	}
	entries := benchEnvInt(t, benchNodeEntriesEnv, 100_000)
	meshWrites := benchEnvInt(t, benchNodeMeshWritesEnv, 10_000)
	putSeconds := benchEnvInt(t, benchNodePutSecondsEnv, 5)

	benchPuts(t, time.Duration(putSeconds)*time.Second)
	lines := benchSourceLines(t, entries)
	importRate := benchImport(t, lines)
	benchSync(t, lines, importRate)
	benchMesh(t, meshWrites)
}

// benchPutSlices is the number of alternating slices in which benchPuts
// runs each side of a comparison.
const benchPutSlices = 5

// benchPuts compares HTTPS puts with direct appends under durability batch,
// with 1 and 32 writers, each for d. The two sides take turns in slices of
// d/benchPutSlices, the first side alternating, so that a change in the
// load of the shared machine during the run reaches both sides alike.
func benchPuts(t *testing.T, d time.Duration) {
	slice := d / benchPutSlices
	for _, writers := range []int{1, 32} {
		l, _ := benchLedger(t, ledger.DurabilityBatch)
		appendOp := func(ctx context.Context, w, i int) error {
			_, err := l.Append(ctx, ledger.AppendRequest{Thing: fmt.Sprintf("t-%d-%d", w, i%100), Actor: "bench", Data: benchNodeValue})
			return err
		}

		s := startBenchServer(t, t.TempDir(), ledger.DurabilityBatch, true)
		clients := make([]*benchPutClient, writers)
		for w := range clients {
			clients[w] = dialBenchPutClient(t, s)
		}
		body := []byte(`{"data":` + string(benchNodeValue) + `}`)
		putOp := func(_ context.Context, w, i int) error {
			return clients[w].put(fmt.Sprintf("/v1/things/t-%d-%d", w, i%100), body)
		}

		var appended, puts int
		var latencies []time.Duration
		runAppends := func() {
			n, _ := runWriters(writers, slice, appendOp)
			appended += n
		}
		runPuts := func() {
			// A node that stops responding fails the run instead of hanging it.
			for _, c := range clients {
				if err := c.conn.SetDeadline(time.Now().Add(slice + time.Minute)); err != nil {
					t.Fatal(err)
				}
			}
			n, sliceLatencies := runWriters(writers, slice, putOp)
			puts += n
			latencies = append(latencies, sliceLatencies...)
		}
		for k := range benchPutSlices {
			if k%2 == 0 {
				runAppends()
				runPuts()
			} else {
				runPuts()
				runAppends()
			}
		}

		appendRate := float64(appended) / d.Seconds()
		putRate := float64(puts) / d.Seconds()
		slices.Sort(latencies)
		benchPrint("part", "put", "writers", writers, "seconds", d.Seconds(), "slices", benchPutSlices,
			"append_per_s", fmt.Sprintf("%.0f", appendRate), "put_per_s", fmt.Sprintf("%.0f", putRate),
			"ratio", fmt.Sprintf("%.2f", putRate/appendRate),
			"p50_ms", ms(percentile(latencies, 0.50)), "p95_ms", ms(percentile(latencies, 0.95)), "p99_ms", ms(percentile(latencies, 0.99)))
	}
}

// benchPutClient is one load client of benchPuts: a keep-alive TLS
// connection that writes each request itself and reads the response with
// net/http's parser. The node receives the bytes that http.Client sends, in
// one write, but the client skips the Transport's pool and its two
// goroutines per connection. The client shares this process's cores with
// the node, while the appends it is compared with have no client at all.
// So the less CPU and the fewer goroutine switches the load takes, the
// closer the figure comes to what the node serves. The connection is
// dialled before the clock starts, as the ledger is created before its
// appends are timed.
type benchPutClient struct {
	conn   *tls.Conn
	reader *bufio.Reader
	host   string
	auth   string
	buf    []byte
}

func dialBenchPutClient(t *testing.T, s *benchServer) *benchPutClient {
	t.Helper()
	caPEM, err := os.ReadFile(s.caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pki.CertPool(caPEM)
	if err != nil {
		t.Fatal(err)
	}
	host := strings.TrimPrefix(s.url, "https://")
	conn, err := tls.Dial("tcp", host, &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatalf("dial the bench server: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &benchPutClient{conn: conn, reader: bufio.NewReader(conn), host: host, auth: "Bearer " + s.token}
}

// put sends PUT path with body and reads the whole response. A put that
// started before the end of its slice runs to the end and counts, as a
// queued append does, and the connection stays usable for the next slice.
func (c *benchPutClient) put(path string, body []byte) error {
	c.buf = fmt.Appendf(c.buf[:0], "PUT %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: Go-http-client/1.1\r\nContent-Length: %d\r\nAuthorization: %s\r\nAccept-Encoding: gzip\r\n\r\n", path, c.host, len(body), c.auth)
	c.buf = append(c.buf, body...)
	if _, err := c.conn.Write(c.buf); err != nil {
		return err
	}
	resp, err := http.ReadResponse(c.reader, nil)
	if err != nil {
		return err
	}
	// Read the body to the end so that the connection stays usable.
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("put: status %d", resp.StatusCode)
	}
	if resp.Close {
		return fmt.Errorf("put: the node closes the connection after status %d", resp.StatusCode)
	}
	return nil
}

// runWriters calls op from writers goroutines until d passes and returns
// the number of successful calls and their latencies.
func runWriters(writers int, d time.Duration, op func(ctx context.Context, w, i int) error) (int, []time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var mu sync.Mutex
	var latencies []time.Duration
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for i := 0; ctx.Err() == nil; i++ {
				start := time.Now()
				if err := op(ctx, w, i); err != nil {
					break
				}
				mine = append(mine, time.Since(start))
			}
			mu.Lock()
			latencies = append(latencies, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return len(latencies), latencies
}

func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(q*float64(len(sorted))))]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d)/float64(time.Millisecond)) }

// benchSourceLines writes n entries into a ledger with 4 writers and
// returns its lines.
func benchSourceLines(t *testing.T, n int) [][]byte {
	l, _ := benchLedger(t, ledger.DurabilityNone)
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 4 {
				if _, err := l.Append(context.Background(), ledger.AppendRequest{Thing: "t-" + strconv.Itoa(i%1000), Actor: "bench", Data: benchNodeValue}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("append source entries: %v", err)
	}
	lines := exportLines(t, l, nil)
	benchPrint("part", "source", "entries", len(lines), "seconds", fmt.Sprintf("%.1f", time.Since(start).Seconds()))
	return lines
}

// benchImport imports lines into a fresh ledger directly and into a fresh
// node over HTTPS, both in pages of the default batch limit, and returns
// the direct rate.
func benchImport(t *testing.T, lines [][]byte) float64 {
	page := DefaultLimits.MaxBatchEntries
	l, _ := benchLedger(t, ledger.DurabilityBatch)
	start := time.Now()
	for i := 0; i < len(lines); i += page {
		if _, err := l.Import(context.Background(), lines[i:min(i+page, len(lines))]); err != nil {
			t.Fatalf("import into the ledger: %v", err)
		}
	}
	direct := float64(len(lines)) / time.Since(start).Seconds()

	// The batches are signed before the clock starts: the sender pays for
	// that, not the receiving node.
	source, _ := benchLedger(t, ledger.DurabilityNone)
	var bodies [][]byte
	for i := 0; i < len(lines); i += page {
		bodies = append(bodies, mustJSON(t, SignBatch(source, source.Identity().NodeID, lines[i:min(i+page, len(lines))])))
	}
	s := startBenchServer(t, t.TempDir(), ledger.DurabilityBatch, true)
	writeBenchPeers(t, s, time.Hour, 0, Peer{Name: "source", URL: "https://source.invalid:8443", NodeID: source.Identity().NodeID, SigningKey: source.Identity().SigningKey})
	start = time.Now()
	for _, body := range bodies {
		req, err := http.NewRequest(http.MethodPost, s.url+"/v1/import", strings.NewReader(string(body)))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+s.token)
		resp, err := s.client.Do(req)
		if err != nil {
			t.Fatalf("import over HTTPS: %v", err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("import over HTTPS: status %d", resp.StatusCode)
		}
	}
	https := float64(len(lines)) / time.Since(start).Seconds()
	benchPrint("part", "import", "entries", len(lines), "page", page, "pages", len(bodies),
		"ledger_per_s", fmt.Sprintf("%.0f", direct), "https_per_s", fmt.Sprintf("%.0f", https), "ratio", fmt.Sprintf("%.2f", https/direct))
	return direct
}

// benchSync pulls lines from one node into another with one sync attempt
// and compares the rate with the direct import rate.
func benchSync(t *testing.T, lines [][]byte, importRate float64) {
	const batchSize = 10_000
	sender := startBenchServer(t, t.TempDir(), ledger.DurabilityNone, true)
	// The sender's ledger gets the lines by import, like a node that holds
	// another origin's entries.
	for i := 0; i < len(lines); i += batchSize {
		if _, err := sender.ledger.Import(context.Background(), lines[i:min(i+batchSize, len(lines))]); err != nil {
			t.Fatalf("fill the sender: %v", err)
		}
	}
	receiver := startBenchServer(t, t.TempDir(), ledger.DurabilityBatch, true)
	writeBenchPeers(t, receiver, time.Hour, batchSize, sender.peer(t, "sender"))
	syncer := NewSyncer(SyncOptions{Ledger: receiver.ledger, Pins: receiver.pins})

	start := time.Now()
	result := syncer.syncPeer(context.Background(), receiver.pins.File().Peers[0], batchSize)
	elapsed := time.Since(start)
	if result.err != nil {
		t.Fatalf("sync: %v", result.err)
	}
	if int(result.accepted) != len(lines) || result.lag != 0 {
		t.Fatalf("sync accepted %d of %d entries, lag %d", result.accepted, len(lines), result.lag)
	}
	rate := float64(len(lines)) / elapsed.Seconds()
	benchPrint("part", "sync", "entries", len(lines), "batch", batchSize, "seconds", fmt.Sprintf("%.1f", elapsed.Seconds()),
		"sync_per_s", fmt.Sprintf("%.0f", rate), "import_per_s", fmt.Sprintf("%.0f", importRate), "ratio", fmt.Sprintf("%.2f", rate/importRate))
}

// benchMesh writes writes entries spread over five nodes, then starts
// their sync loops in a mesh and times until every node holds all of them.
func benchMesh(t *testing.T, writes int) {
	const nodes = 5
	const interval = time.Second
	servers := make([]*benchServer, nodes)
	for i := range servers {
		servers[i] = startBenchServer(t, t.TempDir(), ledger.DurabilityBatch, true)
	}
	// Sixteen writers per node share the fsyncs of durability batch.
	var writers sync.WaitGroup
	failed := make(chan error, nodes*16)
	for w := range nodes * 16 {
		writers.Add(1)
		go func() {
			defer writers.Done()
			s := servers[w%nodes]
			for i := w; i < writes; i += nodes * 16 {
				if _, err := s.ledger.Append(context.Background(), ledger.AppendRequest{Thing: "t-" + strconv.Itoa(i%500), Actor: "bench", Data: benchNodeValue}); err != nil {
					failed <- err
					return
				}
			}
		}()
	}
	writers.Wait()
	close(failed)
	for err := range failed {
		t.Fatalf("append: %v", err)
	}
	for i, s := range servers {
		var peers []Peer
		for j, other := range servers {
			if j != i {
				peers = append(peers, other.peer(t, "node-"+strconv.Itoa(j)))
			}
		}
		writeBenchPeers(t, s, interval, DefaultSyncBatchSize, peers...)
	}

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	start := time.Now()
	for _, s := range servers {
		syncer := NewSyncer(SyncOptions{Ledger: s.ledger, Pins: s.pins})
		wg.Add(1)
		go func() {
			defer wg.Done()
			syncer.Run(ctx)
		}()
	}
	deadline := start.Add(10 * time.Minute)
	for {
		done := true
		for _, s := range servers {
			total := uint64(0)
			for _, h := range s.ledger.Heads() {
				total += h.Sequence
			}
			done = done && total == uint64(writes)
		}
		if done {
			break
		}
		if time.Now().After(deadline) {
			cancel()
			wg.Wait()
			t.Fatalf("the mesh did not converge within 10 minutes")
		}
		time.Sleep(20 * time.Millisecond)
	}
	elapsed := time.Since(start)
	cancel()
	wg.Wait()
	benchPrint("part", "mesh", "nodes", nodes, "writes", writes, "interval_s", interval.Seconds(), "batch", DefaultSyncBatchSize,
		"seconds", fmt.Sprintf("%.1f", elapsed.Seconds()), "imports_per_s", fmt.Sprintf("%.0f", float64(writes*(nodes-1))/elapsed.Seconds()))
}
