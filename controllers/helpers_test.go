package controllers_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	thingdbv1 "github.com/thingdb/thingdb/api/v1alpha1"
)

// loadSample reads a ThingNode from config/samples into namespace.
func loadSample(file, namespace string) *thingdbv1.ThingNode {
	data, err := os.ReadFile("../config/samples/" + file)
	Expect(err).NotTo(HaveOccurred())
	tn := &thingdbv1.ThingNode{}
	Expect(yaml.UnmarshalStrict(data, tn)).To(Succeed())
	tn.Namespace = namespace
	return tn
}

// updateThingNode applies mutate to the stored ThingNode and writes it,
// again on a conflict with a status write of the controller.
func updateThingNode(ctx context.Context, tn *thingdbv1.ThingNode, mutate func(*thingdbv1.ThingNode)) {
	Expect(retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(tn), tn); err != nil {
			return err
		}
		mutate(tn)
		return k8sClient.Update(ctx, tn)
	})).To(Succeed())
}

// key returns the key of the object name in namespace.
func key(namespace, name string) client.ObjectKey {
	return client.ObjectKey{Namespace: namespace, Name: name}
}

// startPods plays the StatefulSet controller and the kubelet, which envtest
// does not run: it creates the StatefulSet's pods, marks them ready and
// writes the StatefulSet's status as the StatefulSet controller would.
func startPods(ctx context.Context, tn *thingdbv1.ThingNode) {
	sts := &appsv1.StatefulSet{}
	Expect(k8sClient.Get(ctx, key(tn.Namespace, tn.Name), sts)).To(Succeed())
	replicas := *sts.Spec.Replicas

	for ordinal := range replicas {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{
				Name:      fmt.Sprintf("%s-%d", sts.Name, ordinal),
				Namespace: sts.Namespace,
				Labels:    sts.Spec.Template.Labels,
			},
			Spec: *sts.Spec.Template.Spec.DeepCopy(),
		}
		// The StatefulSet controller adds a volume per claim template.
		for _, claim := range sts.Spec.VolumeClaimTemplates {
			pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{
				Name: claim.Name,
				VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{
					ClaimName: claim.Name + "-" + pod.Name,
				}},
			})
		}
		err := k8sClient.Create(ctx, pod)
		if err != nil {
			Expect(client.IgnoreAlreadyExists(err)).To(Succeed())
			Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(pod), pod)).To(Succeed())
		}
		pod.Status.Phase = corev1.PodRunning
		pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()}}
		Expect(k8sClient.Status().Update(ctx, pod)).To(Succeed())
	}

	Expect(k8sClient.Get(ctx, key(tn.Namespace, tn.Name), sts)).To(Succeed())
	sts.Status.ObservedGeneration = sts.Generation
	sts.Status.Replicas = replicas
	sts.Status.ReadyReplicas = replicas
	sts.Status.AvailableReplicas = replicas
	sts.Status.CurrentReplicas = replicas
	sts.Status.UpdatedReplicas = replicas
	Expect(k8sClient.Status().Update(ctx, sts)).To(Succeed())
}

// nodeRouter sends the operator's requests for pod URLs to `thingdb serve`
// processes on loopback, so pod URLs and TLS name checks stay as in a
// cluster.
type nodeRouter struct {
	mu    sync.Mutex
	hosts map[string]string // pod DNS name and port to loopback address
}

func newNodeRouter() *nodeRouter {
	return &nodeRouter{hosts: map[string]string{}}
}

func (r *nodeRouter) route(host, addr string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.hosts[host] = addr
}

func (r *nodeRouter) lookup(host string) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	addr, ok := r.hosts[host]
	return addr, ok
}

// Client returns an HTTP client that trusts roots and dials the process
// registered for the host and port of each request.
func (r *nodeRouter) Client(roots *x509.CertPool) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		DialContext: func(ctx context.Context, network, target string) (net.Conn, error) {
			addr, ok := r.lookup(target)
			if !ok {
				return nil, fmt.Errorf("no node process registered for %s", target)
			}
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
		DisableKeepAlives: true,
	}}
}

var (
	buildNodeOnce sync.Once
	nodeBinary    string
	nodeBuildErr  error
)

// buildNode builds cmd/thingdb once per suite run and returns its path.
func buildNode(ctx context.Context) string {
	buildNodeOnce.Do(func() {
		dir, err := os.MkdirTemp("", "thingdb-node-")
		if err != nil {
			nodeBuildErr = err
			return
		}
		// Removed after the suite, not after the first spec that builds it,
		// because every later spec reuses the binary.
		nodeBinary = filepath.Join(dir, "thingdb")
		build := exec.CommandContext(ctx, "go", "build", "-o", nodeBinary, "../cmd/thingdb")
		build.Stdout, build.Stderr = GinkgoWriter, GinkgoWriter
		nodeBuildErr = build.Run()
	})
	Expect(nodeBuildErr).NotTo(HaveOccurred(), "build cmd/thingdb")
	return nodeBinary
}

var _ = AfterSuite(func() {
	if nodeBinary != "" {
		_ = os.RemoveAll(filepath.Dir(nodeBinary))
	}
})

// startNodes runs one `thingdb serve` per pod of tn on loopback, configured
// with the environment of the StatefulSet's container and the content of
// the Secrets it mounts, copied into files under a temporary directory. It
// routes each pod's DNS name to its process.
func startNodes(ctx context.Context, tn *thingdbv1.ThingNode) {
	binary := buildNode(ctx)
	sts := &appsv1.StatefulSet{}
	Expect(k8sClient.Get(ctx, key(tn.Namespace, tn.Name), sts)).To(Succeed())
	container := sts.Spec.Template.Spec.Containers[0]

	for ordinal := range *sts.Spec.Replicas {
		pod := fmt.Sprintf("%s-%d", sts.Name, ordinal)
		dir := GinkgoT().TempDir()

		By("writing the mounted Secrets of pod " + pod + " into " + dir)
		mounts := map[string]string{}
		for _, volume := range sts.Spec.Template.Spec.Volumes {
			for _, mount := range container.VolumeMounts {
				if mount.Name != volume.Name {
					continue
				}
				local := filepath.Join(dir, volume.Name)
				mounts[mount.MountPath] = local
				Expect(os.MkdirAll(local, 0o700)).To(Succeed())
				if volume.Secret == nil {
					continue
				}
				secret := &corev1.Secret{}
				Expect(k8sClient.Get(ctx, key(tn.Namespace, volume.Secret.SecretName), secret)).To(Succeed())
				for name, value := range secret.Data {
					file := name
					for _, item := range volume.Secret.Items {
						if item.Key == name {
							file = item.Path
						}
					}
					Expect(os.WriteFile(filepath.Join(local, file), value, 0o600)).To(Succeed())
				}
			}
		}
		mounts["/var/lib/thingdb"] = filepath.Join(dir, "data")
		Expect(os.MkdirAll(mounts["/var/lib/thingdb"], 0o700)).To(Succeed())

		env := os.Environ()
		for _, variable := range container.Env {
			// Map the longest mount path that contains the value, once.
			value, longest := variable.Value, ""
			for mountPath := range mounts {
				if (value == mountPath || strings.HasPrefix(value, mountPath+"/")) && len(mountPath) > len(longest) {
					longest = mountPath
				}
			}
			if longest != "" {
				value = mounts[longest] + strings.TrimPrefix(value, longest)
			}
			if variable.Name == "THINGDB_LISTEN" {
				value = "127.0.0.1:0"
			}
			env = append(env, variable.Name+"="+value)
		}
		addressFile := filepath.Join(dir, "address")
		env = append(env, "THINGDB_ADDRESS_FILE="+addressFile)

		By("starting thingdb serve for pod " + pod)
		serve := exec.Command(binary, container.Command[1:]...)
		serve.Env = env
		serve.Stdout, serve.Stderr = GinkgoWriter, GinkgoWriter
		Expect(serve.Start()).To(Succeed())
		DeferCleanup(func() {
			_ = serve.Process.Signal(syscall.SIGTERM)
			_ = serve.Wait()
		})
		var addr []byte
		Eventually(ctx, func() error {
			var err error
			addr, err = os.ReadFile(addressFile)
			return err
		}).WithTimeout(time.Minute).WithPolling(100 * time.Millisecond).Should(Succeed())

		host := fmt.Sprintf("%s.%s-headless.%s.svc:8443", pod, tn.Name, tn.Namespace)
		nodes.route(host, strings.TrimSpace(string(addr)))
	}
}

// readIdentity returns what GET /v1/identity of a pod's node returns, read
// through the router with the CA of tn's TLS Secret.
func readIdentity(ctx context.Context, tn *thingdbv1.ThingNode, pod string) thingdbv1.NodeIdentity {
	secret := &corev1.Secret{}
	Expect(k8sClient.Get(ctx, key(tn.Namespace, tn.Name+"-tls"), secret)).To(Succeed())
	roots := x509.NewCertPool()
	Expect(roots.AppendCertsFromPEM(secret.Data["ca.crt"])).To(BeTrue())

	url := fmt.Sprintf("https://%s.%s-headless.%s.svc:8443/v1/identity", pod, tn.Name, tn.Namespace)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	Expect(err).NotTo(HaveOccurred())
	resp, err := nodes.Client(roots).Do(req)
	Expect(err).NotTo(HaveOccurred())
	defer func() { _ = resp.Body.Close() }()
	Expect(resp.StatusCode).To(Equal(http.StatusOK))

	var body map[string]any
	Expect(json.NewDecoder(resp.Body).Decode(&body)).To(Succeed())
	text := func(name string) string {
		value, _ := body[name].(string)
		return value
	}
	return thingdbv1.NodeIdentity{
		Pod: pod, NodeID: text("nodeID"), KeyID: text("keyID"),
		SigningKey: text("signingKey"), RecipientKey: text("recipientKey"),
	}
}
