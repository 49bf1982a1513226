package packaging

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// repoRoot is the repository root, relative to this package's directory.
const repoRoot = "../.."

// requireDocker skips the test when -short is set or no Docker engine responds.
func requireDocker(t *testing.T) {
	t.Helper()

	if testing.Short() {
		t.Skip("skipped in -short mode: builds and runs containers")
	}
	if _, err := exec.LookPath("docker"); err != nil {
		t.Skip("docker not found in PATH: install Docker to test the image")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "docker", "info").CombinedOutput(); err != nil {
		t.Skipf("no Docker engine reachable (docker info: %v): start Docker or set DOCKER_HOST to test the image\n%s", err, lastLines(out, 5))
	}
}

// run runs a command in the repository root and returns its combined output.
func run(t *testing.T, timeout time.Duration, env []string, name string, args ...string) (string, error) {
	t.Helper()

	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s timed out after %s: %w", name, timeout, ctx.Err())
	}
	return string(out), err
}

// buildImage runs `make docker-build` with the default (local) mode and
// removes the image when the test ends.
func buildImage(t *testing.T, image string) {
	t.Helper()

	out, err := run(t, 15*time.Minute, nil, "make", "--no-print-directory", "docker-build", "IMG="+image)
	if err != nil {
		t.Fatalf("make docker-build IMG=%s: %v\n%s", image, err, lastLines([]byte(out), 40))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("docker", "rmi", "--force", image).CombinedOutput(); err != nil {
			t.Logf("remove image %s: %v\n%s", image, err, out)
		}
	})
}

func TestImage_BinariesRunAsNonRoot(t *testing.T) {
	requireDocker(t)
	image := "thingdb:packaging-test"
	buildImage(t, image)

	user, err := run(t, time.Minute, nil, "docker", "image", "inspect", "--format", "{{.Config.User}}", image)
	if err != nil {
		t.Fatalf("inspect image %s: %v\n%s", image, err, user)
	}
	if got := strings.TrimSpace(user); got != "65532:65532" {
		t.Errorf("image user = %q, expected 65532:65532", got)
	}

	for _, binary := range []string{"/thingdb", "/manager"} {
		out, err := run(t, time.Minute, nil, "docker", "run", "--rm", image, binary, "--help")
		if err != nil {
			t.Errorf("docker run %s %s --help: %v\n%s", image, binary, err, lastLines([]byte(out), 20))
			continue
		}
		if !strings.Contains(strings.ToLower(out), "usage") {
			t.Errorf("%s --help printed no usage:\n%s", binary, lastLines([]byte(out), 20))
		}
	}

	// The user is checked at run time too: a directory that only root may
	// write to must reject the write, and the same write must succeed in a
	// directory that everyone may write to.
	tests := map[string]struct {
		// mode is the mode of the tmpfs mounted at /probe, owned by root.
		mode        string
		wantSuccess bool
	}{
		"root-only directory":      {mode: "0755", wantSuccess: false},
		"world-writable directory": {mode: "1777", wantSuccess: true},
	}
	for name, test := range tests {
		t.Run(name, func(t *testing.T) {
			out, err := run(t, time.Minute, nil, "docker", "run", "--rm", "--tmpfs", "/probe:mode="+test.mode,
				image, "/thingdb", "tls", "ca", "--out", "/probe/ca")
			if test.wantSuccess && err != nil {
				t.Errorf("thingdb tls ca in a mode %s tmpfs failed: %v\n%s", test.mode, err, out)
			}
			if !test.wantSuccess && err == nil {
				t.Errorf("thingdb tls ca wrote to a root-owned mode %s tmpfs, so the image runs as root:\n%s", test.mode, out)
			}
			if !test.wantSuccess && err != nil && !strings.Contains(out, "permission denied") {
				t.Errorf("thingdb tls ca failed for another reason than permissions: %v\n%s", err, out)
			}
		})
	}
}

func TestComposeDemo(t *testing.T) {
	requireDocker(t)
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl not found in PATH: the compose demo needs it")
	}
	compose := exec.Command("docker", "compose", "version")
	if compose.Run() != nil {
		if _, err := exec.LookPath("docker-compose"); err != nil {
			t.Skip("neither docker compose nor docker-compose found: install Docker Compose to run the demo")
		}
	}
	image := "thingdb:compose-test"
	t.Cleanup(func() { _ = exec.Command("docker", "rmi", "--force", image).Run() })

	out, err := run(t, 15*time.Minute, []string{"IMG=" + image}, "bash", filepath.Join("hack", "compose-demo.sh"))

	if err != nil {
		t.Fatalf("hack/compose-demo.sh: %v\n%s", err, lastLines([]byte(out), 60))
	}
	if !strings.Contains(out, "compose demo passed") {
		t.Fatalf("hack/compose-demo.sh exited 0 without reporting success:\n%s", lastLines([]byte(out), 60))
	}
}

// lastLines returns the last n lines of out, enough to show why a command
// failed without flooding the test log.
func lastLines(out []byte, n int) string {
	lines := bytes.Split(bytes.TrimRight(out, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}
