package controllers_test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gbytes"
	coordinationv1 "k8s.io/api/coordination/v1"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() int {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	defer func() { _ = listener.Close() }()
	return listener.Addr().(*net.TCPAddr).Port
}

// httpGet returns the status and body of a GET of url.
func httpGet(url string) (int, string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

var _ = Describe("manager binary", func() {
	Context("when started with a kubeconfig of the envtest API server", func() {
		It("should elect itself, serve probes and metrics, and reconcile", func(ctx SpecContext) {
			ns := newNamespace(ctx)
			dir := GinkgoT().TempDir()

			By("building cmd/manager")
			binary := filepath.Join(dir, "manager")
			build := exec.CommandContext(ctx, "go", "build", "-o", binary, "../cmd/manager")
			build.Stdout, build.Stderr = GinkgoWriter, GinkgoWriter
			Expect(build.Run()).To(Succeed())

			By("writing a kubeconfig for an admin user")
			user, err := testEnv.AddUser(envtest.User{Name: "manager-binary", Groups: []string{"system:masters"}}, nil)
			Expect(err).NotTo(HaveOccurred())
			kubeconfig, err := user.KubeConfig()
			Expect(err).NotTo(HaveOccurred())
			kubeconfigPath := filepath.Join(dir, "kubeconfig")
			Expect(os.WriteFile(kubeconfigPath, kubeconfig, 0o600)).To(Succeed())

			By("starting the manager on loopback ports, watching one namespace")
			metricsPort, probePort := freePort(), freePort()
			output := gbytes.NewBuffer()
			manager := exec.Command(binary,
				"--kubeconfig", kubeconfigPath,
				"--leader-elect",
				"--leader-election-namespace", ns,
				"--watch-namespaces", ns,
				"--metrics-bind-address", fmt.Sprintf("127.0.0.1:%d", metricsPort),
				"--health-probe-bind-address", fmt.Sprintf("127.0.0.1:%d", probePort),
			)
			manager.Stdout = output
			manager.Stderr = io.MultiWriter(output, GinkgoWriter)
			Expect(manager.Start()).To(Succeed())
			DeferCleanup(func() {
				_ = manager.Process.Signal(syscall.SIGTERM)
				_ = manager.Wait()
			})

			eventually(ctx, func(g Gomega) {
				status, body, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/readyz", probePort))
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(status).To(Equal(http.StatusOK), body)
			}).Should(Succeed())
			status, _, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/healthz", probePort))
			Expect(err).NotTo(HaveOccurred())
			Expect(status).To(Equal(http.StatusOK))

			By("holding the leader election Lease")
			lease := &coordinationv1.Lease{}
			eventually(ctx, func(g Gomega) {
				g.Expect(k8sClient.Get(ctx, key(ns, "thingdb-operator.thingdb.io"), lease)).To(Succeed())
				g.Expect(lease.Spec.HolderIdentity).NotTo(BeNil())
			}).Should(Succeed())

			By("reconciling a ThingNode in its namespace, as its own metrics count")
			tn := loadSample(operatorCASample, ns)
			Expect(k8sClient.Create(ctx, tn)).To(Succeed())
			// The suite's own manager reconciles the same ThingNode, so some
			// of these reconciles may end in a conflict; any count proves the
			// binary's controller runs.
			reconciles := regexp.MustCompile(`controller_runtime_reconcile_total\{controller="thingnode",result="[a-z_]+"\} (\d+)`)
			eventually(ctx, func(g Gomega) {
				status, body, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort))
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(status).To(Equal(http.StatusOK))
				total := 0
				for _, match := range reconciles.FindAllStringSubmatch(body, -1) {
					count, err := strconv.Atoi(match[1])
					g.Expect(err).NotTo(HaveOccurred())
					total += count
				}
				g.Expect(total).To(BeNumerically(">", 0), "no reconcile in the metrics")
			}).WithTimeout(time.Minute).Should(Succeed())

			By("stopping on SIGTERM")
			Expect(manager.Process.Signal(syscall.SIGTERM)).To(Succeed())
			Expect(manager.Wait()).To(Succeed())
			Expect(bytes.Contains(output.Contents(), []byte("Manager stopped"))).To(BeTrue())
		})
	})
})
