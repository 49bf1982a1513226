package node

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/thingdb/thingdb/internal/atomicfile"
	"github.com/thingdb/thingdb/internal/peerfile"
	"github.com/thingdb/thingdb/internal/pki"
	"github.com/thingdb/thingdb/ledger"
)

// processTestDir holds what the process tests share for one package run:
// the thingdb binary. TestMain creates and removes it.
var processTestDir string

var thingdbBuild struct {
	once sync.Once
	path string
	err  error
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "thingdb-node-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "create the test directory:", err)
		os.Exit(1)
	}
	processTestDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// thingdbBinary builds cmd/thingdb once per package run and returns its
// path.
func thingdbBinary(t testing.TB) string {
	t.Helper()
	thingdbBuild.once.Do(func() {
		path := filepath.Join(processTestDir, "thingdb")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, "go", "build", "-o", path, "../cmd/thingdb").CombinedOutput()
		if err != nil {
			thingdbBuild.err = fmt.Errorf("build thingdb: %w\n%s", err, out)
			return
		}
		thingdbBuild.path = path
	})
	if thingdbBuild.err != nil {
		t.Fatal(thingdbBuild.err)
	}
	return thingdbBuild.path
}

// procNode is one `thingdb serve` process on a loopback port, laid out like
// a pod of a single-replica ThingNode: its own CA, a certificate for its pod
// DNS name, a token directory and a peer file directory.
type procNode struct {
	name    string // pod name, such as thingnode-a-0
	host    string // pod DNS name that peer files use
	dir     string
	port    int
	ca      *pki.KeyPair
	env     []string // extra environment of the process
	args    []string // extra flags
	cmd     *exec.Cmd
	exited  chan struct{}
	logPath string

	id         IdentityResponse
	syncToken  string // export scope, for peers
	adminToken string // for the test
}

// podPort is the port of every pod's API in the peer files.
const podPort = 8443

func newProcNode(t *testing.T, thingNode string) *procNode {
	t.Helper()
	n := &procNode{
		name: thingNode + "-0",
		host: thingNode + "-0." + thingNode + "-headless.default.svc",
		dir:  t.TempDir(),
		port: freePort(t),
	}
	n.logPath = filepath.Join(n.dir, "node.log")
	var err error
	if n.ca, err = pki.NewCA(pki.CARequest{CommonName: thingNode + "-ca", Validity: time.Hour}); err != nil {
		t.Fatalf("create CA of %s: %v", thingNode, err)
	}
	leaf, err := pki.Issue(n.ca, pki.IssueRequest{CommonName: n.host, DNSNames: []string{n.host}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		Server: true, Client: true, Validity: time.Hour})
	if err != nil {
		t.Fatalf("issue certificate of %s: %v", n.name, err)
	}
	files := map[string][]byte{
		"tls/" + tlsCertFile: leaf.CertPEM,
		"tls/" + tlsKeyFile:  leaf.KeyPEM,
		"tls/" + tlsCAFile:   n.ca.CertPEM,
		"passphrase":         []byte("passphrase of " + thingNode + "\n"),
	}
	for name, data := range files {
		path := filepath.Join(n.dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := atomicfile.Write(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(n.dir, "peers"), 0o700); err != nil {
		t.Fatal(err)
	}
	if n.syncToken, err = AddToken(filepath.Join(n.dir, "tokens"), "sync", []Scope{ScopeExport}); err != nil {
		t.Fatal(err)
	}
	if n.adminToken, err = AddToken(filepath.Join(n.dir, "tokens"), "test", []Scope{ScopeAdmin}); err != nil {
		t.Fatal(err)
	}
	return n
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (n *procNode) peersFile() string { return filepath.Join(n.dir, "peers", "peers.json") }

// resolveEntry maps the node's pod DNS name to its loopback port.
func (n *procNode) resolveEntry() string {
	return fmt.Sprintf("%s:%d=127.0.0.1:%d", n.host, podPort, n.port)
}

// start runs `thingdb serve` and waits until it responds to GET /v1/identity.
func (n *procNode) start(t *testing.T) {
	t.Helper()
	addressFile := filepath.Join(n.dir, "address")
	_ = os.Remove(addressFile)
	logFile, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"serve",
		"--listen", "127.0.0.1:" + strconv.Itoa(n.port), "--address-file", addressFile,
		"--data-dir", filepath.Join(n.dir, "data"), "--passphrase-file", filepath.Join(n.dir, "passphrase"),
		"--token-dir", filepath.Join(n.dir, "tokens"), "--tls-dir", filepath.Join(n.dir, "tls"),
		"--peers-file", n.peersFile(), "--reload-interval", "100ms", "--log-level", "debug",
		"--shutdown-timeout", "5s",
	}, n.args...)
	cmd := exec.Command(thingdbBinary(t), args...)
	cmd.Env = append(os.Environ(), n.env...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", n.name, err)
	}
	n.cmd = cmd
	exited := make(chan struct{})
	n.exited = exited
	go func() {
		_ = cmd.Wait()
		logFile.Close()
		close(exited)
	}()
	t.Cleanup(func() { n.kill() })

	waitFor(t, 60*time.Second, n.name+" to serve", func() (bool, string) {
		select {
		case <-exited:
			t.Fatalf("%s exited at start:\n%s", n.name, n.logTail())
		default:
		}
		id, err := n.client(t).Identity(context.Background())
		if err != nil {
			return false, err.Error()
		}
		n.id = id
		return true, ""
	})
}

// stop sends SIGTERM and waits for a clean exit.
func (n *procNode) stop(t *testing.T) {
	t.Helper()
	if err := n.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("signal %s: %v", n.name, err)
	}
	select {
	case <-n.exited:
	case <-time.After(30 * time.Second):
		n.kill()
		t.Fatalf("%s did not stop within 30s of SIGTERM:\n%s", n.name, n.logTail())
	}
	if code := n.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("%s exited with code %d after SIGTERM:\n%s", n.name, code, n.logTail())
	}
}

func (n *procNode) kill() {
	if n.cmd == nil || n.cmd.Process == nil {
		return
	}
	select {
	case <-n.exited:
		return
	default:
	}
	_ = n.cmd.Process.Kill()
	<-n.exited
}

func (n *procNode) running() bool {
	select {
	case <-n.exited:
		return false
	default:
		return true
	}
}

func (n *procNode) logTail() string {
	data, _ := os.ReadFile(n.logPath)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-40):], "\n")
}

// client calls the node on its loopback address with the admin token.
func (n *procNode) client(t testing.TB) *Client {
	t.Helper()
	pool, err := pki.CertPool(n.ca.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewClient("https://127.0.0.1:"+strconv.Itoa(n.port), n.adminToken, &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	c.http.Timeout = 20 * time.Second
	return c
}

// peerEntry is how the operator renders a peer into a member's peer file:
// the pod DNS URL, the keys the peer reported, and the peer's CA and an
// export token as files beside peers.json.
func (n *procNode) peerEntry(t *testing.T, owner *procNode) peerfile.Peer {
	t.Helper()
	caFile, tokenFile := n.name+".ca.crt", n.name+".token"
	if err := atomicfile.Write(filepath.Join(owner.dir, "peers", caFile), n.ca.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := atomicfile.Write(filepath.Join(owner.dir, "peers", tokenFile), []byte(n.syncToken), 0o600); err != nil {
		t.Fatal(err)
	}
	return peerfile.Peer{
		Name: n.name, URL: fmt.Sprintf("https://%s:%d", n.host, podPort), NodeID: n.id.NodeID,
		SigningKey: n.id.SigningKey, RecipientKey: n.id.RecipientKey, CAFile: caFile, TokenFile: tokenFile,
	}
}

// writePeers replaces the node's peer file, as a Secret update does.
func (n *procNode) writePeers(t *testing.T, peers ...peerfile.Peer) {
	t.Helper()
	data, err := json.MarshalIndent(peerfile.File{Interval: "200ms", BatchSize: 50, Peers: append([]peerfile.Peer{}, peers...)}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := atomicfile.Write(n.peersFile(), data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// put writes thing with data and returns where the entry landed.
func (n *procNode) put(t *testing.T, thing, data string, recipients ...string) EntryInfoJSON {
	t.Helper()
	info, err := n.client(t).Put(context.Background(), thing, PutRequest{Data: json.RawMessage(data), Recipients: recipients})
	if err != nil {
		t.Fatalf("put %s on %s: %v", thing, n.name, err)
	}
	return info
}

// entries returns every ledger line of the node by origin and sequence,
// read through GET /v1/export, and fails on a repeated origin and sequence.
func (n *procNode) entries(t *testing.T) map[string]string {
	t.Helper()
	lines := map[string]string{}
	cursor := ledger.Cursor{}
	for {
		resp, err := n.client(t).Export(context.Background(), ExportQuery{After: cursor})
		if err != nil {
			t.Fatalf("export from %s: %v", n.name, err)
		}
		for _, line := range resp.Lines {
			origin, seq, ok := lineOriginSequence([]byte(line))
			if !ok {
				t.Fatalf("%s exported a line without origin and sequence: %.80s", n.name, line)
			}
			key := origin + ":" + strconv.FormatUint(seq, 10)
			if _, dup := lines[key]; dup {
				t.Fatalf("%s holds %s twice", n.name, key)
			}
			lines[key] = line
			cursor[origin] = max(cursor[origin], seq)
		}
		if !resp.More {
			return lines
		}
	}
}

func (n *procNode) syncStatus(t *testing.T) SyncStatusResponse {
	t.Helper()
	st, err := n.client(t).SyncStatus(context.Background())
	if err != nil {
		t.Fatalf("sync status of %s: %v", n.name, err)
	}
	return st
}

// waitFor polls check every 100 ms until it returns true, and fails the
// test with the last detail after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, check func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	detail := ""
	for {
		ok, d := check()
		if ok {
			return
		}
		detail = d
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s: %s", timeout, what, detail)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// verifyDataDir runs `thingdb verify` on a stopped node's ledger and
// returns the entry count it reports.
func (n *procNode) verifyDataDir(t *testing.T) int {
	t.Helper()
	out, err := exec.Command(thingdbBinary(t), "verify", "--data-dir", filepath.Join(n.dir, "data"),
		"--passphrase-file", filepath.Join(n.dir, "passphrase"), "-o", "json").CombinedOutput()
	if err != nil {
		t.Fatalf("verify %s: %v\n%s", n.name, err, out)
	}
	var report struct {
		Entries int `json:"entries"`
	}
	if err := json.Unmarshal(out, &report); err != nil {
		t.Fatalf("decode verify output of %s: %v\n%s", n.name, err, out)
	}
	return report.Entries
}
