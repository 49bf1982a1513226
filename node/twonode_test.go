package node

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestTwoNodeDemoScript builds the thingdb binary and runs
// hack/two-node-demo.sh with it: two real processes serving TLS on
// loopback.
func TestTwoNodeDemoScript(t *testing.T) {
	if testing.Short() {
		t.Skip("two-node demo skipped in -short mode")
	}
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("bash not found; the demo script needs it")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	binary := thingdbBinary(t)

	work := t.TempDir()
	script := exec.CommandContext(ctx, bash, "../hack/two-node-demo.sh", work)
	script.Env = append(os.Environ(), "THINGDB="+binary, "KEEP=1")
	out, err := script.CombinedOutput()
	if err != nil {
		t.Fatalf("two-node demo failed: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "two-node demo passed") {
		t.Fatalf("two-node demo did not report success:\n%s", out)
	}
}
