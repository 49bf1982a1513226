package controllers_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	thingdbv1 "github.com/thingdb/thingdb/api/v1alpha1"
	"github.com/thingdb/thingdb/controllers"
)

var (
	testEnv *envtest.Environment
	cfg     *rest.Config
	scheme  *runtime.Scheme
	// k8sClient talks to the API server directly, without the manager's
	// cache, so the specs see what is stored.
	k8sClient client.Client
	// reconciler is the manager's reconciler, for reconciles started by a spec.
	reconciler *controllers.ThingNodeReconciler
	// writes counts the manager's API writes by namespace.
	writes *writeCounter
	// nodes routes the operator's requests for pod URLs to `thingdb serve`
	// processes on loopback.
	nodes *nodeRouter
)

// TestControllers runs the envtest suite. The spec labelled "scale" runs only
// with THINGDB_BENCH_OPERATOR=1 (`make bench-operator`), and then alone.
func TestControllers(t *testing.T) {
	RegisterFailHandler(Fail)
	suiteConfig, reporterConfig := GinkgoConfiguration()
	if suiteConfig.LabelFilter == "" {
		suiteConfig.LabelFilter = "!scale"
		if os.Getenv("THINGDB_BENCH_OPERATOR") == "1" {
			suiteConfig.LabelFilter = "scale"
		}
	}
	RunSpecs(t, "Controllers Suite", suiteConfig, reporterConfig)
}

var _ = BeforeSuite(func() {
	logf.SetLogger(GinkgoLogr)
	Expect(os.Getenv("KUBEBUILDER_ASSETS")).NotTo(BeEmpty(),
		"KUBEBUILDER_ASSETS is not set; run the suite through `make test`, which builds the envtest control plane with hack/setup-envtest.sh")

	scheme = runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(thingdbv1.AddToScheme(scheme))

	testEnv = &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	var err error
	cfg, err = testEnv.Start()
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(testEnv.Stop)

	k8sClient, err = client.New(cfg, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())

	nodes = newNodeRouter()

	writes = &writeCounter{byNamespace: map[string]int{}}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  controllers.CacheOptions(nil),
		NewClient: func(config *rest.Config, options client.Options) (client.Client, error) {
			inner, err := client.NewWithWatch(config, options)
			if err != nil {
				return nil, err
			}
			return interceptor.NewClient(inner, writes.funcs()), nil
		},
	})
	Expect(err).NotTo(HaveOccurred())

	reconciler = &controllers.ThingNodeReconciler{
		Client:   mgr.GetClient(),
		Scheme:   mgr.GetScheme(),
		Recorder: mgr.GetEventRecorder("thingnode-controller"),
		Identity: &controllers.IdentityReader{HTTPClient: nodes.Client},
	}
	Expect(reconciler.SetupWithManager(mgr, 4)).To(Succeed())

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		defer GinkgoRecover()
		Expect(mgr.Start(ctx)).To(Succeed())
	})
	DeferCleanup(func() {
		cancel()
		wg.Wait()
	})
})

// writeCounter counts API writes by the namespace of the written object.
type writeCounter struct {
	mu          sync.Mutex
	byNamespace map[string]int
}

func (w *writeCounter) add(namespace string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.byNamespace[namespace]++
}

// Count returns the writes to objects in namespace so far.
func (w *writeCounter) Count(namespace string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.byNamespace[namespace]
}

// funcs returns interceptor functions that count every write and pass it on.
func (w *writeCounter) funcs() interceptor.Funcs {
	return interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			w.add(obj.GetNamespace())
			return c.Create(ctx, obj, opts...)
		},
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			w.add(obj.GetNamespace())
			return c.Update(ctx, obj, opts...)
		},
		Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
			w.add(obj.GetNamespace())
			return c.Patch(ctx, obj, patch, opts...)
		},
		Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
			w.add(obj.GetNamespace())
			return c.Delete(ctx, obj, opts...)
		},
		DeleteAllOf: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteAllOfOption) error {
			w.add(obj.GetNamespace())
			return c.DeleteAllOf(ctx, obj, opts...)
		},
		SubResourceCreate: func(ctx context.Context, c client.Client, sub string, obj client.Object, subObj client.Object, opts ...client.SubResourceCreateOption) error {
			w.add(obj.GetNamespace())
			return c.SubResource(sub).Create(ctx, obj, subObj, opts...)
		},
		SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
			w.add(obj.GetNamespace())
			return c.SubResource(sub).Update(ctx, obj, opts...)
		},
		SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
			w.add(obj.GetNamespace())
			return c.SubResource(sub).Patch(ctx, obj, patch, opts...)
		},
	}
}

// newNamespace creates a namespace with a random name for one spec and
// returns its name.
func newNamespace(ctx context.Context) string {
	suffix := make([]byte, 4)
	_, err := rand.Read(suffix)
	Expect(err).NotTo(HaveOccurred())
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "thingnode-" + hex.EncodeToString(suffix)}}
	Expect(k8sClient.Create(ctx, ns)).To(Succeed())
	// envtest runs no namespace controller, so a deleted namespace would stay
	// Terminating; the random name keeps specs apart instead.
	return ns.Name
}

// eventually polls with the suite's timeout and interval.
func eventually(ctx context.Context, f any) AsyncAssertion {
	return Eventually(ctx, f).WithTimeout(30 * time.Second).WithPolling(100 * time.Millisecond)
}
