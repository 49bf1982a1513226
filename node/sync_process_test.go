package node

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/thingdb/thingdb/internal/peerfile"
	"github.com/thingdb/thingdb/internal/syncstatus"
	"github.com/thingdb/thingdb/ledger"
)

// startCluster starts one process per ThingNode name, each resolving the
// others' pod DNS names to their loopback ports: the first through
// THINGDB_RESOLVE, the others through --resolve flags.
func startCluster(t *testing.T, thingNodes ...string) []*procNode {
	t.Helper()
	if testing.Short() {
		t.Skip("process tests skipped in -short mode")
	}
	nodes := make([]*procNode, len(thingNodes))
	for i, name := range thingNodes {
		nodes[i] = newProcNode(t, name)
	}
	for i, n := range nodes {
		var entries []string
		for _, other := range nodes {
			if other != n {
				entries = append(entries, other.resolveEntry())
			}
		}
		if i == 0 {
			n.env = append(n.env, "THINGDB_RESOLVE="+strings.Join(entries, ","))
			continue
		}
		for _, e := range entries {
			n.args = append(n.args, "--resolve", e)
		}
	}
	for _, n := range nodes {
		n.start(t)
	}
	return nodes
}

// writeMesh gives every node a peer file listing all the others.
func writeMesh(t *testing.T, nodes []*procNode) {
	t.Helper()
	for _, n := range nodes {
		var peers []peerfile.Peer
		for _, other := range nodes {
			if other != n {
				peers = append(peers, other.peerEntry(t, n))
			}
		}
		n.writePeers(t, peers...)
	}
}

// waitConverged waits until every node holds want entries and then checks
// that they hold the same lines, byte for byte.
func waitConverged(t *testing.T, nodes []*procNode, want int) map[string]string {
	t.Helper()
	for _, n := range nodes {
		waitFor(t, 60*time.Second, fmt.Sprintf("%s to hold %d entries", n.name, want), func() (bool, string) {
			got := len(n.entries(t))
			return got == want, fmt.Sprintf("it holds %d\n%s", got, n.logTail())
		})
	}
	reference := nodes[0].entries(t)
	for _, n := range nodes[1:] {
		lines := n.entries(t)
		for key, line := range reference {
			if lines[key] != line {
				t.Fatalf("%s holds %s as %.120q, %s as %.120q", n.name, key, lines[key], nodes[0].name, line)
			}
		}
	}
	return reference
}

// checkOrigins checks that every entry a node wrote is held by the others
// with its origin, sequence and signature: the line is the writer's own.
// The offline verify at the end of a test checks each signature.
func checkOrigins(t *testing.T, nodes []*procNode, lines map[string]string) {
	t.Helper()
	for _, n := range nodes {
		own := 0
		for key, line := range n.entries(t) {
			if !strings.HasPrefix(key, n.id.NodeID+":") {
				continue
			}
			own++
			if lines[key] != line {
				t.Fatalf("entry %s of %s differs from its writer's line", key, n.name)
			}
			entry, err := ledger.DecodeEntry([]byte(line))
			if err != nil {
				t.Fatalf("decode entry %s: %v", key, err)
			}
			if entry.Origin != n.id.NodeID || key != entry.Origin+":"+strconv.FormatUint(entry.Sequence, 10) {
				t.Fatalf("entry %s decodes as origin %s sequence %d", key, entry.Origin, entry.Sequence)
			}
			if len(entry.Signature) != ed25519.SignatureSize {
				t.Fatalf("entry %s has a signature of %d bytes", key, len(entry.Signature))
			}
		}
		if own == 0 {
			t.Fatalf("no entry of %s's origin is held anywhere", n.name)
		}
	}
}

func readable(t *testing.T, n *procNode, thing string) (bool, string) {
	t.Helper()
	v, err := n.client(t).Get(context.Background(), thing)
	if err != nil {
		t.Fatalf("get %s on %s: %v", thing, n.name, err)
	}
	return v.Readable, string(v.Data)
}

func pids(nodes []*procNode) []int {
	list := make([]int, len(nodes))
	for i, n := range nodes {
		list[i] = n.cmd.Process.Pid
	}
	return list
}

// TestSyncProcesses_MeshRestartAndStar runs three nodes in a mesh, stops
// and restarts one, then turns the mesh into a star without restarting any
// process.
func TestSyncProcesses_MeshRestartAndStar(t *testing.T) {
	nodes := startCluster(t, "thingnode-a", "thingnode-b", "thingnode-c")
	a, b, c := nodes[0], nodes[1], nodes[2]
	// Node c seals every put without recipients to all its peers.
	c.args = append(c.args, "--seal-to-peers")
	c.stop(t)
	c.start(t)
	writeMesh(t, nodes)

	// Every node writes; each entry reaches every node with its bytes.
	written := 0
	for i := range 8 {
		for _, n := range nodes {
			n.put(t, fmt.Sprintf("lamp-%d", i%3), fmt.Sprintf(`{"writer":%q,"i":%d}`, n.name, i))
			written++
		}
	}
	a.put(t, "for-b", `{"secret":"only b reads this"}`, b.id.NodeID)
	c.put(t, "from-c", `{"sealed":"to every peer"}`)
	written += 2
	lines := waitConverged(t, nodes, written)
	checkOrigins(t, nodes, lines)

	// Envelope mode: each node has its own passphrase, so only recipients read.
	if ok, data := readable(t, b, "for-b"); !ok || !strings.Contains(data, "only b reads this") {
		t.Fatalf("b cannot read the entry a addressed to it: readable=%v data=%s", ok, data)
	}
	if ok, _ := readable(t, c, "for-b"); ok {
		t.Fatal("c reads the entry that a addressed only to b")
	}
	for _, n := range []*procNode{a, b} {
		if ok, _ := readable(t, n, "from-c"); !ok {
			t.Fatalf("%s cannot read c's put, which --seal-to-peers sealed to every peer", n.name)
		}
	}
	status, body := rawPut(t, c, "not-sealed", `{"data":{"x":1},"recipients":[]}`)
	if status != http.StatusOK {
		t.Fatalf("put with empty recipients on c: %d %s", status, body)
	}
	written++
	waitConverged(t, nodes, written)
	if ok, _ := readable(t, a, "not-sealed"); ok {
		t.Fatal("a reads c's put with an empty recipients list")
	}

	for _, n := range nodes {
		st := n.syncStatus(t)
		if len(st.Peers) != 2 {
			t.Fatalf("%s reports %d peers, want 2", n.name, len(st.Peers))
		}
		for _, p := range st.Peers {
			waitFor(t, 10*time.Second, n.name+" to report "+p.Name+" in sync", func() (bool, string) {
				p, _ := n.syncStatus(t).PeerNamed(p.Name)
				return p.LastSuccess != nil && p.LastError == "" && p.LagEntries == 0, fmt.Sprintf("%+v", p)
			})
		}

		// In a mesh an origin's entries may all arrive through one peer, so
		// only the node's total is sure to be above zero.
		var transferred uint64
		for _, p := range n.syncStatus(t).Peers {
			transferred += p.EntriesTransferred
		}
		if transferred == 0 {
			t.Fatalf("%s reports no entries transferred from any peer", n.name)
		}
	}

	// Stop c, write on the others, restart c: it catches up, nothing twice.
	c.stop(t)
	for i := range 5 {
		a.put(t, "while-c-down", fmt.Sprintf(`{"a":%d}`, i))
		b.put(t, "while-c-down", fmt.Sprintf(`{"b":%d}`, i))
		written += 2
	}
	waitFor(t, 30*time.Second, "a to report c unreachable", func() (bool, string) {
		p, _ := a.syncStatus(t).PeerNamed(c.name)
		return p.LastErrorReason == syncstatus.ReasonUnreachable, fmt.Sprintf("%+v", p)
	})
	c.start(t)
	waitConverged(t, nodes, written)

	// Mesh to star around a: peer files change, processes stay.
	before := pids(nodes)
	a.writePeers(t, b.peerEntry(t, a), c.peerEntry(t, a))
	b.writePeers(t, a.peerEntry(t, b))
	c.writePeers(t, a.peerEntry(t, c))
	for _, spoke := range []*procNode{b, c} {
		waitFor(t, 30*time.Second, spoke.name+" to sync only with the hub", func() (bool, string) {
			st := spoke.syncStatus(t)
			return len(st.Peers) == 1 && st.Peers[0].Name == a.name, fmt.Sprintf("%+v", st.Peers)
		})
	}
	b.put(t, "via-hub", `{"from":"b"}`)
	written++
	waitConverged(t, nodes, written)
	for i, n := range nodes {
		if !n.running() || n.cmd.Process.Pid != before[i] {
			t.Fatalf("%s was restarted by the topology change: pid %d, was %d", n.name, n.cmd.Process.Pid, before[i])
		}
	}

	// Stop everything and verify each ledger offline: every signature and
	// chain, and the count, so nothing was imported twice.
	for _, n := range nodes {
		n.stop(t)
		if got := n.verifyDataDir(t); got != written {
			t.Fatalf("thingdb verify of %s counts %d entries, want %d", n.name, got, written)
		}
	}
}

// rawPut sends a put body as given, for fields the client leaves out.
func rawPut(t *testing.T, n *procNode, thing, body string) (int, string) {
	t.Helper()
	c := n.client(t)
	req, err := http.NewRequest(http.MethodPut, c.baseURL+"/v1/things/"+thing, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+n.adminToken)
	resp, err := c.http.Do(req)
	if err != nil {
		t.Fatalf("put %s on %s: %v", thing, n.name, err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	return resp.StatusCode, buf.String()
}

// TestSyncProcesses_KeyMismatchAndFork pins a wrong key for a peer, then
// rolls a node's ledger back and lets it write a different entry at a
// sequence its peer already holds.
func TestSyncProcesses_KeyMismatchAndFork(t *testing.T) {
	nodes := startCluster(t, "thingnode-a", "thingnode-b")
	a, b := nodes[0], nodes[1]
	for i := range 3 {
		a.put(t, "sensor", fmt.Sprintf(`{"i":%d}`, i))
	}

	// b pins a key that is not a's: a's entries stay out of b.
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	impostor := a.peerEntry(t, b)
	impostor.SigningKey = base64.StdEncoding.EncodeToString(pub)
	impostor.NodeID = ledger.NodeID(pub)
	b.writePeers(t, impostor)
	a.writePeers(t, b.peerEntry(t, a))
	waitFor(t, 30*time.Second, "b to reject a's key", func() (bool, string) {
		p, _ := b.syncStatus(t).PeerNamed(a.name)
		return p.LastErrorReason == syncstatus.ReasonKeyMismatch, fmt.Sprintf("%+v", p)
	})
	p, _ := b.syncStatus(t).PeerNamed(a.name)
	if p.EntriesTransferred != 0 || p.LastSuccess != nil || !strings.Contains(p.LastError, impostor.NodeID) {
		t.Fatalf("status of the mismatched peer: %+v", p)
	}
	if got := len(b.entries(t)); got != 0 {
		t.Fatalf("b imported %d entries from a peer whose key does not match", got)
	}

	// A bad peer file keeps the last good one and is reported.
	if err := os.WriteFile(b.peersFile(), []byte(`{"peers":[{"name":"broken"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "b to report its bad peer file", func() (bool, string) {
		st := b.syncStatus(t)
		_, kept := st.PeerNamed(a.name)
		return st.PeerFile.Error != "" && kept, fmt.Sprintf("%+v", st.PeerFile)
	})

	// With the right key, b catches up.
	b.writePeers(t, a.peerEntry(t, b))
	waitConverged(t, nodes, 3)

	// Keep a copy of a's ledger at sequence 3, write sequence 4, let b
	// pull it, then put the copy back and write another sequence 4.
	a.stop(t)
	backup := filepath.Join(t.TempDir(), "data")
	copyTree(t, filepath.Join(a.dir, "data"), backup)
	a.start(t)
	first := a.put(t, "sensor", `{"i":"first 4"}`)
	waitConverged(t, nodes, 4)
	firstLine := b.entries(t)[a.id.NodeID+":4"]
	a.stop(t)
	if err := os.RemoveAll(filepath.Join(a.dir, "data")); err != nil {
		t.Fatal(err)
	}
	copyTree(t, backup, filepath.Join(a.dir, "data"))
	a.start(t)
	second := a.put(t, "sensor", `{"i":"second 4"}`)
	if second.Sequence != first.Sequence || second.Hash == first.Hash {
		t.Fatalf("rolled-back a wrote sequence %d (%s), want a different entry at %d", second.Sequence, second.Hash, first.Sequence)
	}
	secondLine := a.entries(t)[a.id.NodeID+":4"]

	waitFor(t, 30*time.Second, "b to report the fork", func() (bool, string) {
		p, _ := b.syncStatus(t).PeerNamed(a.name)
		return p.ForkDetected && p.Fork != nil && p.Fork.Incoming != "", fmt.Sprintf("%+v", p)
	})
	p, _ = b.syncStatus(t).PeerNamed(a.name)
	if p.LastErrorReason != syncstatus.ReasonFork || p.Fork.Origin != a.id.NodeID || p.Fork.Sequence != 4 {
		t.Fatalf("fork status on b: %+v", p)
	}
	if p.Fork.Existing != firstLine || p.Fork.Incoming != secondLine {
		t.Fatalf("fork evidence on b:\nexisting %.100s\nincoming %.100s\nwant the first and the second sequence 4", p.Fork.Existing, p.Fork.Incoming)
	}
	waitFor(t, 30*time.Second, "a to report the fork of its own origin", func() (bool, string) {
		p, _ := a.syncStatus(t).PeerNamed(b.name)
		return p.ForkDetected && p.Fork != nil && p.Fork.Existing == secondLine && p.Fork.Incoming == firstLine, fmt.Sprintf("%+v", p)
	})
	if got := b.entries(t)[a.id.NodeID+":4"]; got != firstLine {
		t.Fatal("b replaced its entry at the forked sequence")
	}
}

// copyTree copies the regular files of a directory tree.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o700)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, data, 0o600)
	})
	if err != nil {
		t.Fatalf("copy %s to %s: %v", src, dst, err)
	}
}
