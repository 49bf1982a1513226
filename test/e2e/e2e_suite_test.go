// Package e2e_test runs the operator's scenario on a real cluster: the
// chart installed, two ThingNodes and a Mesh ThingSync applied, and
// writes, pod loss, operator loss, a topology change and a ThingNode
// deletion checked through the nodes' own API.
//
// It runs only with THINGDB_E2E=1 (make test-e2e sets it). By default it
// starts a single-node cluster of real binaries on this host (package
// localcluster; needs root and the assets of hack/e2e-assets.sh in
// E2E_BIN_DIR). With E2E_KUBECONFIG it uses that cluster instead, which
// must run the image E2E_IMAGE already and whose pod addresses this host
// must reach.
package e2e_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	thingdbv1 "github.com/thingdb/thingdb/api/v1alpha1"
	"github.com/thingdb/thingdb/test/e2e/localcluster"
)

// Settings of the suite, from the environment.
const (
	enableEnv     = "THINGDB_E2E"
	kubeconfigEnv = "E2E_KUBECONFIG"
	binDirEnv     = "E2E_BIN_DIR"
	imageEnv      = "E2E_IMAGE"
	workDirEnv    = "E2E_WORK_DIR"
)

const (
	operatorNamespace = "thingdb-system"
	operatorRelease   = "thingdb-operator"
	testNamespace     = "thingdb-e2e"
)

var (
	k8sClient  client.Client
	clientset  kubernetes.Interface
	kubeconfig string
	image      string
	cluster    *localcluster.Cluster
	// localHost is true when the cluster runs on this host, so the test can
	// look at the pods' processes.
	localHost bool
	// tempWorkDir is the cluster's work directory when the suite created
	// it. It is removed after a run that passed and kept after a failure.
	tempWorkDir string
)

// ReportAfterSuite runs after every cleanup, so the cluster has stopped.
var _ = ReportAfterSuite("remove the work directory of a passed run", func(report Report) {
	if tempWorkDir != "" && report.SuiteSucceeded {
		Expect(os.RemoveAll(tempWorkDir)).To(Succeed())
	}
})

func TestE2E(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "End-to-end")
}

var _ = BeforeSuite(func(ctx SpecContext) {
	if os.Getenv(enableEnv) != "1" {
		Skip("end-to-end tests run with " + enableEnv + "=1: use make test-e2e")
	}
	image = os.Getenv(imageEnv)
	if image == "" {
		image = "thingdb:dev"
	}

	var restConfig *rest.Config
	if kubeconfig = os.Getenv(kubeconfigEnv); kubeconfig == "" {
		Expect(os.Geteuid()).To(Equal(0), "the local cluster needs root: run make test-e2e as root, or set %s to an existing cluster", kubeconfigEnv)
		binDir := os.Getenv(binDirEnv)
		Expect(binDir).NotTo(BeEmpty(), "set %s to the directory hack/e2e-assets.sh prints", binDirEnv)
		workDir := os.Getenv(workDirEnv)
		if workDir == "" {
			var err error
			workDir, err = os.MkdirTemp("", "thingdb-e2e-")
			Expect(err).NotTo(HaveOccurred())
			tempWorkDir = workDir
		}
		GinkgoWriter.Printf("cluster files and logs: %s\n", workDir)
		start := time.Now()
		var err error
		cluster, err = localcluster.Start(ctx, localcluster.Config{BinDir: binDir, WorkDir: workDir, Log: GinkgoWriter})
		if cluster != nil {
			DeferCleanup(func(ctx SpecContext) {
				Expect(cluster.Stop(ctx)).To(Succeed())
			}, NodeTimeout(5*time.Minute))
		}
		Expect(err).NotTo(HaveOccurred())
		GinkgoWriter.Printf("cluster ready in %s\n", time.Since(start).Round(time.Second))
		Expect(cluster.ImportImages(ctx, image)).To(Succeed())
		kubeconfig = cluster.Kubeconfig()
		restConfig = cluster.RESTConfig()
		localHost = true
	} else {
		var err error
		restConfig, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
		Expect(err).NotTo(HaveOccurred(), "read %s=%s", kubeconfigEnv, kubeconfig)
	}

	scheme := runtime.NewScheme()
	Expect(clientgoscheme.AddToScheme(scheme)).To(Succeed())
	Expect(thingdbv1.AddToScheme(scheme)).To(Succeed())
	var err error
	k8sClient, err = client.New(restConfig, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())
	clientset, err = kubernetes.NewForConfig(restConfig)
	Expect(err).NotTo(HaveOccurred())

	installChart(ctx)
}, NodeTimeout(30*time.Minute))

// installChart installs the operator's Helm chart with the test image and
// waits until the manager is available.
func installChart(ctx context.Context) {
	repository, tag := splitImage(image)
	chart, err := filepath.Abs("../../charts/thingdb-operator")
	Expect(err).NotTo(HaveOccurred())
	cmd := exec.CommandContext(ctx, "go", "tool", "helm", "upgrade", "--install", operatorRelease, chart,
		"--kubeconfig", kubeconfig,
		"--namespace", operatorNamespace, "--create-namespace",
		"--set", "image.repository="+repository,
		"--set", "image.tag="+tag,
		"--set", "image.pullPolicy=IfNotPresent",
		"--wait", "--timeout", "5m")
	cmd.Stdout = GinkgoWriter
	cmd.Stderr = GinkgoWriter
	Expect(cmd.Run()).To(Succeed(), "helm install of %s", chart)
	if localHost {
		return
	}
	// A cluster that outlives the suite gets the release removed again.
	DeferCleanup(func(ctx SpecContext) {
		cmd := exec.CommandContext(ctx, "go", "tool", "helm", "uninstall", operatorRelease,
			"--kubeconfig", kubeconfig, "--namespace", operatorNamespace, "--wait")
		cmd.Stdout = GinkgoWriter
		cmd.Stderr = GinkgoWriter
		Expect(cmd.Run()).To(Succeed(), "helm uninstall %s", operatorRelease)
	})
}

func splitImage(ref string) (repository, tag string) {
	for i := len(ref) - 1; i >= 0 && ref[i] != '/'; i-- {
		if ref[i] == ':' {
			return ref[:i], ref[i+1:]
		}
	}
	Fail(fmt.Sprintf("invalid %s=%q: give a repository and a tag, such as thingdb:dev", imageEnv, ref))
	return "", ""
}
