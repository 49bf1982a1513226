package controllers_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/yaml"

	thingdbv1 "github.com/thingdb/thingdb/api/v1alpha1"
	"github.com/thingdb/thingdb/controllers"
)

// loadSampleObjects reads every object of a multi-document YAML file in
// config/samples into namespace, as unstructured objects, so that what the
// API server receives is the file's content and its defaults apply as with
// kubectl apply.
func loadSampleObjects(file, namespace string) []*unstructured.Unstructured {
	data, err := os.ReadFile("../config/samples/" + file)
	Expect(err).NotTo(HaveOccurred())
	var objects []*unstructured.Unstructured
	for _, doc := range strings.Split(string(data), "\n---\n") {
		obj := &unstructured.Unstructured{}
		Expect(yaml.Unmarshal([]byte(doc), &obj.Object)).To(Succeed())
		obj.SetNamespace(namespace)
		objects = append(objects, obj)
	}
	return objects
}

// startSyncManager runs a manager with only the ThingSync controller,
// watching namespace, until the returned function stops it; the caller
// stops it in cleanup. The suite's
// shared manager keeps running the ThingNode controller, so stopping this
// one stops everything that writes peer files and ThingSync status.
func startSyncManager(namespace string) (stop func()) {
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  controllers.CacheOptions([]string{namespace}),
		// Each start registers a controller named "thingsync" again.
		Controller: config.Controller{SkipNameValidation: new(true)},
	})
	Expect(err).NotTo(HaveOccurred())
	reconciler := &controllers.ThingSyncReconciler{
		Client:   mgr.GetClient(),
		Scheme:   mgr.GetScheme(),
		Recorder: mgr.GetEventRecorder("thingsync-controller"),
		Nodes:    &controllers.IdentityReader{HTTPClient: nodes.Client},
	}
	Expect(reconciler.SetupWithManager(mgr)).To(Succeed())

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		defer GinkgoRecover()
		Expect(mgr.Start(ctx)).To(Succeed())
	})
	var once sync.Once
	return func() {
		once.Do(func() {
			cancel()
			wg.Wait()
		})
	}
}

// secretMount is one Secret volume of a pod, as files under dir.
type secretMount struct {
	secret string
	items  []corev1.KeyToPath
	dir    string
}

// podProcess is one `thingdb serve` standing in for one pod, started with
// the environment and command of the StatefulSet's container and the files
// of the Secrets it mounts.
type podProcess struct {
	pod     string
	host    string // pod DNS name and port, as peer files name it
	addr    string // loopback address the process listens on
	command []string
	env     []string
	mounts  []secretMount

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// podCluster runs the pod processes of a spec and the kubelet stand-in that
// copies Secret changes into their files.
type podCluster struct {
	namespace string
	pods      []*podProcess
	stopSync  context.CancelFunc
	syncDone  chan struct{}
}

// reserveLoopbackAddress returns a free 127.0.0.1 port, so that a process
// keeps its address across a restart and the peers' --resolve stays valid.
func reserveLoopbackAddress() string {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	addr := listener.Addr().String()
	Expect(listener.Close()).To(Succeed())
	return addr
}

// preparePods reads the StatefulSet of each ThingNode and prepares one
// process per pod, with the container's command and environment, its
// mount paths mapped to temporary directories, and the pod's DNS name
// routed to its loopback address.
func preparePods(ctx context.Context, namespace string, thingNodes []*thingdbv1.ThingNode) *podCluster {
	cluster := &podCluster{namespace: namespace}
	for _, tn := range thingNodes {
		sts := &appsv1.StatefulSet{}
		Expect(k8sClient.Get(ctx, key(namespace, tn.Name), sts)).To(Succeed())
		container := sts.Spec.Template.Spec.Containers[0]

		for ordinal := range *sts.Spec.Replicas {
			pod := &podProcess{
				pod:     fmt.Sprintf("%s-%d", sts.Name, ordinal),
				addr:    reserveLoopbackAddress(),
				command: container.Command,
			}
			pod.host = fmt.Sprintf("%s.%s-headless.%s.svc:8443", pod.pod, tn.Name, namespace)
			dir := GinkgoT().TempDir()

			paths := map[string]string{}
			for _, volume := range sts.Spec.Template.Spec.Volumes {
				for _, mount := range container.VolumeMounts {
					if mount.Name != volume.Name {
						continue
					}
					local := filepath.Join(dir, volume.Name)
					paths[mount.MountPath] = local
					Expect(os.MkdirAll(local, 0o700)).To(Succeed())
					if volume.Secret != nil {
						pod.mounts = append(pod.mounts, secretMount{secret: volume.Secret.SecretName, items: volume.Secret.Items, dir: local})
					}
				}
			}
			// The claim template's volume, which the StatefulSet controller adds.
			paths["/var/lib/thingdb"] = filepath.Join(dir, "data")
			Expect(os.MkdirAll(paths["/var/lib/thingdb"], 0o700)).To(Succeed())

			for _, variable := range container.Env {
				value, longest := variable.Value, ""
				for mountPath := range paths {
					if (value == mountPath || strings.HasPrefix(value, mountPath+"/")) && len(mountPath) > len(longest) {
						longest = mountPath
					}
				}
				if longest != "" {
					value = paths[longest] + strings.TrimPrefix(value, longest)
				}
				if variable.Name == "THINGDB_LISTEN" {
					value = pod.addr
				}
				pod.env = append(pod.env, variable.Name+"="+value)
			}
			nodes.route(pod.host, pod.addr)
			cluster.pods = append(cluster.pods, pod)
		}
	}

	// Every process resolves every pod DNS name to its loopback address.
	var resolve []string
	for _, pod := range cluster.pods {
		resolve = append(resolve, pod.host+"="+pod.addr)
	}
	for _, pod := range cluster.pods {
		pod.env = append(pod.env, "THINGDB_RESOLVE="+strings.Join(resolve, ","))
	}
	return cluster
}

// startKubelet starts the stand-in for the kubelet: it copies the content
// of every mounted Secret into the pods' files now and whenever it changes,
// as the kubelet updates Secret volumes in place.
func (c *podCluster) startKubelet(ctx context.Context) {
	for _, pod := range c.pods {
		Expect(c.copySecrets(ctx, pod)).To(Succeed())
	}
	// Not ctx: the stand-in outlives the setup node that starts it.
	syncCtx, cancel := context.WithCancel(context.Background())
	c.stopSync, c.syncDone = cancel, make(chan struct{})
	go func() {
		defer close(c.syncDone)
		ticker := time.NewTicker(250 * time.Millisecond)
		defer ticker.Stop()
		for {
			select {
			case <-syncCtx.Done():
				return
			case <-ticker.C:
			}
			for _, pod := range c.pods {
				if err := c.copySecrets(syncCtx, pod); err != nil && syncCtx.Err() == nil {
					GinkgoWriter.Printf("kubelet stand-in: copy the Secrets of pod %s: %v\n", pod.pod, err)
				}
			}
		}
	}()
	DeferCleanup(func() {
		cancel()
		<-c.syncDone
	})
}

// copySecrets writes the Secrets pod mounts into its files. Each file is
// replaced by a rename, and peers.json last, so that a node never reads a
// peer file whose CA or token files are not written yet.
func (c *podCluster) copySecrets(ctx context.Context, pod *podProcess) error {
	for _, mount := range pod.mounts {
		secret := &corev1.Secret{}
		if err := k8sClient.Get(ctx, key(c.namespace, mount.secret), secret); err != nil {
			return err
		}
		files := map[string][]byte{}
		for name, value := range secret.Data {
			file := name
			if len(mount.items) > 0 {
				file = ""
				for _, item := range mount.items {
					if item.Key == name {
						file = item.Path
					}
				}
			}
			if file != "" {
				files[file] = value
			}
		}
		names := slices.Sorted(maps.Keys(files))
		slices.SortStableFunc(names, func(a, b string) int {
			return boolCompare(a == "peers.json", b == "peers.json")
		})
		for _, name := range names {
			if err := writeIfChanged(filepath.Join(mount.dir, name), files[name]); err != nil {
				return err
			}
		}
		// Keys removed from the Secret disappear from the volume.
		entries, err := os.ReadDir(mount.dir)
		if err != nil {
			return err
		}
		for _, entry := range entries {
			if _, ok := files[entry.Name()]; !ok && !strings.HasPrefix(entry.Name(), ".") {
				if err := os.Remove(filepath.Join(mount.dir, entry.Name())); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func boolCompare(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

// writeIfChanged replaces path with data through a temporary file and a
// rename, unless it already contains data.
func writeIfChanged(path string, data []byte) error {
	if current, err := os.ReadFile(path); err == nil && bytes.Equal(current, data) {
		return nil
	}
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// start runs the pod's process and waits until it accepts connections.
func (p *podProcess) start(ctx context.Context) {
	binary := buildNode(ctx)
	cmd := exec.Command(binary, p.command[1:]...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = GinkgoWriter, GinkgoWriter
	Expect(cmd.Start()).To(Succeed(), "start thingdb serve for pod %s", p.pod)
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()

	Eventually(ctx, func() error {
		select {
		case <-done:
			return StopTrying("thingdb serve for pod " + p.pod + " exited")
		default:
		}
		conn, err := net.DialTimeout("tcp", p.addr, time.Second)
		if err == nil {
			_ = conn.Close()
		}
		return err
	}).WithTimeout(time.Minute).WithPolling(100 * time.Millisecond).Should(Succeed())
}

// stop sends SIGTERM and waits for the process to exit.
func (p *podProcess) stop() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// mountedFile returns the path of file in the pod's volume of Secret secret.
func (p *podProcess) mountedFile(secret, file string) string {
	for _, mount := range p.mounts {
		if mount.secret == secret {
			return filepath.Join(mount.dir, file)
		}
	}
	Fail(fmt.Sprintf("pod %s mounts no Secret %s", p.pod, secret))
	return ""
}

// pid returns the process id and whether the process is still running.
func (p *podProcess) pid() (int, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.done:
		return p.cmd.Process.Pid, false
	default:
		return p.cmd.Process.Pid, true
	}
}

// nodeAPI calls the node API of a pod of tn through the router, trusting
// the CA of tn's TLS Secret and presenting token.
func nodeAPI(ctx context.Context, tn *thingdbv1.ThingNode, pod, method, path string, token []byte, body any) (int, []byte, error) {
	secret := &corev1.Secret{}
	if err := k8sClient.Get(ctx, key(tn.Namespace, tn.Name+"-tls"), secret); err != nil {
		return 0, nil, err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(secret.Data["ca.crt"])

	var reader io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		reader = bytes.NewReader(data)
	}
	url := fmt.Sprintf("https://%s.%s-headless.%s.svc:8443%s", pod, tn.Name, tn.Namespace, path)
	req, err := http.NewRequestWithContext(ctx, method, url, reader)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+string(token))
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := nodes.Client(roots).Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	data, err := io.ReadAll(resp.Body)
	return resp.StatusCode, data, err
}

// secretValue returns one key of a Secret.
func secretValue(ctx context.Context, namespace, name, field string) []byte {
	secret := &corev1.Secret{}
	Expect(k8sClient.Get(ctx, key(namespace, name), secret)).To(Succeed())
	Expect(secret.Data).To(HaveKey(field), "Secret %s", name)
	return secret.Data[field]
}

// ledgerLine is the part of an entry line the test compares.
type ledgerLine struct {
	Origin    string `json:"origin"`
	Sequence  uint64 `json:"seq"`
	Signature string `json:"sig"`
}

// exportedLines returns every line of a pod's ledger, read with the
// export token of its ThingNode, and fails when the export is cut short.
func exportedLines(ctx context.Context, tn *thingdbv1.ThingNode, pod string) ([]string, error) {
	token := secretValue(ctx, tn.Namespace, tn.Name+"-sync-token", "token")
	status, body, err := nodeAPI(ctx, tn, pod, http.MethodGet, "/v1/export?limit=10000", token, nil)
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("export of pod %s: status %d: %s", pod, status, body)
	}
	var batch struct {
		Lines []string `json:"lines"`
		More  bool     `json:"more"`
	}
	if err := json.Unmarshal(body, &batch); err != nil {
		return nil, err
	}
	if batch.More {
		return nil, fmt.Errorf("export of pod %s holds more than one batch", pod)
	}
	return batch.Lines, nil
}

// putThing writes one thing on a pod with the sample's app token.
func putThing(ctx context.Context, tn *thingdbv1.ThingNode, pod, id string) {
	token := secretValue(ctx, tn.Namespace, tn.Name+"-token-app", "token")
	status, body, err := nodeAPI(ctx, tn, pod, http.MethodPut, "/v1/things/"+id, token, map[string]any{"data": map[string]string{"written": pod}})
	Expect(err).NotTo(HaveOccurred())
	Expect(status).To(Equal(http.StatusOK), "put %s on %s: %s", id, pod, body)
}
