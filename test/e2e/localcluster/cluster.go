package localcluster

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Config describes the cluster. Start fills every zero field with its
// default.
type Config struct {
	// BinDir contains etcd, kube-apiserver, kube-controller-manager,
	// kube-scheduler, kubelet and kube-proxy.
	BinDir string
	// WorkDir receives the certificates, configuration, state and logs.
	WorkDir string
	// NodeIP is the host address the API server advertises and the pods
	// reach it on. Default: the address of the interface that holds the
	// default route.
	NodeIP string
	// NodeName is the name of the one Node. Default: thingdb-e2e.
	NodeName string
	// PodCIDR is the pods' address range. Default: 10.244.0.0/24.
	PodCIDR string
	// ServiceCIDR is the Services' address range. Default: 10.96.0.0/16.
	ServiceCIDR string
	// ClusterDomain is the DNS domain of Services. Default: cluster.local.
	ClusterDomain string
	// PauseImage is the image of pod sandboxes. It must be in containerd
	// already (see ImportImages). Default: docker.io/thingdb-e2e/pause:local.
	PauseImage string
	// CoreDNSImage runs the cluster DNS. Default: docker.io/thingdb-e2e/coredns:local.
	CoreDNSImage string
	// Snapshotter is containerd's snapshotter. Default: overlayfs.
	Snapshotter string
	// CNIBinDir contains the CNI plugins. Default: /usr/lib/cni (Debian's
	// containernetworking-plugins).
	CNIBinDir string
	// Volumes is the number of local PersistentVolumes to create. Default: 12.
	Volumes int
	// Ports of the components. Zero picks a free port.
	APIServerPort, EtcdPort, EtcdPeerPort, KubeletPort, KubeletHealthzPort,
	ControllerManagerPort, SchedulerPort, KubeProxyHealthzPort, KubeProxyMetricsPort int
	// Log receives progress lines. Default: io.Discard.
	Log io.Writer
}

func (c *Config) setDefaults() error {
	if c.BinDir == "" {
		return errors.New("localcluster: BinDir is missing: build the binaries with hack/e2e-assets.sh and pass its directory")
	}
	if c.WorkDir == "" {
		return errors.New("localcluster: WorkDir is missing: pass a directory for the cluster's files")
	}
	defaults := []struct {
		field *string
		value string
	}{
		{&c.NodeName, "thingdb-e2e"},
		{&c.PodCIDR, "10.244.0.0/24"},
		{&c.ServiceCIDR, "10.96.0.0/16"},
		{&c.ClusterDomain, "cluster.local"},
		{&c.PauseImage, "docker.io/thingdb-e2e/pause:local"},
		{&c.CoreDNSImage, "docker.io/thingdb-e2e/coredns:local"},
		{&c.Snapshotter, "overlayfs"},
		{&c.CNIBinDir, "/usr/lib/cni"},
	}
	for _, d := range defaults {
		if *d.field == "" {
			*d.field = d.value
		}
	}
	if c.Volumes == 0 {
		c.Volumes = 12
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
	if c.NodeIP == "" {
		ip, err := defaultRouteIP()
		if err != nil {
			return err
		}
		c.NodeIP = ip
	}
	for _, port := range []*int{
		&c.APIServerPort, &c.EtcdPort, &c.EtcdPeerPort, &c.KubeletPort, &c.KubeletHealthzPort,
		&c.ControllerManagerPort, &c.SchedulerPort, &c.KubeProxyHealthzPort, &c.KubeProxyMetricsPort,
	} {
		if *port == 0 {
			free, err := freePort()
			if err != nil {
				return err
			}
			*port = free
		}
	}
	return nil
}

// Cluster is a running cluster. Stop it when done, even after a failed Start.
type Cluster struct {
	cfg        Config
	pkiDir     string
	lock       *os.File
	procs      []*process
	sysctls    map[string]string
	socket     string
	kubeconfig string
	rest       *rest.Config
}

// Kubeconfig is the path of a cluster-admin kubeconfig.
func (c *Cluster) Kubeconfig() string { return c.kubeconfig }

// RESTConfig is a cluster-admin client configuration.
func (c *Cluster) RESTConfig() *rest.Config { return rest.CopyConfig(c.rest) }

// ContainerdSocket is the socket of the cluster's containerd.
func (c *Cluster) ContainerdSocket() string { return c.socket }

// NodeName is the name of the cluster's one Node.
func (c *Cluster) NodeName() string { return c.cfg.NodeName }

// lockPath is the lock that keeps a second cluster off the host: two would
// share the bridge, the pod and Service ranges and the iptables chains.
const lockPath = "/run/thingdb-e2e.lock"

// lockHost takes the host's cluster lock, which the kernel releases when
// the process ends.
func lockHost() (*os.File, error) {
	f, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("localcluster: open lock %s: %w", lockPath, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("localcluster: another end-to-end cluster runs on this host (lock %s is held): wait until it stops", lockPath)
	}
	return f, nil
}

// sysctlsPath keeps the kernel settings from before the first cluster
// until a Stop has written them back, so that a run that was killed does
// not make the kubelet's values look like the host's own to the next run.
const sysctlsPath = "/run/thingdb-e2e.sysctls.json"

// recordKernelSettings reads the settings that Stop writes back: those a
// killed run left in sysctlsPath, or else the current ones, which it saves
// there.
func (c *Cluster) recordKernelSettings() error {
	if data, err := os.ReadFile(sysctlsPath); err == nil {
		if err := json.Unmarshal(data, &c.sysctls); err != nil {
			return fmt.Errorf("localcluster: invalid %s (%v): delete it, then check the kernel settings it lists by hand", sysctlsPath, err)
		}
		return nil
	}
	for _, name := range kernelSettings {
		if value, err := os.ReadFile(filepath.Join("/proc/sys", name)); err == nil {
			c.sysctls[name] = strings.TrimSpace(string(value))
		}
	}
	data, err := json.Marshal(c.sysctls)
	if err != nil {
		return err
	}
	return os.WriteFile(sysctlsPath, data, 0o600)
}

// kernelSettings are the sysctls the kubelet and kube-proxy may change.
// Start records them and Stop writes them back.
var kernelSettings = []string{
	"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes", "net/ipv4/conf/all/route_localnet",
}

// Start creates the cluster and returns once its Node is Ready, CoreDNS
// answers and the default StorageClass exists. On error the returned
// Cluster, when not nil, contains what was started: call Stop on it.
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	for _, bin := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy"} {
		if _, err := os.Stat(filepath.Join(cfg.BinDir, bin)); err != nil {
			return nil, fmt.Errorf("localcluster: %s not found in %s: build it with hack/e2e-assets.sh", bin, cfg.BinDir)
		}
	}
	for _, plugin := range []string{"bridge", "host-local", "firewall", "portmap", "loopback"} {
		if _, err := os.Stat(filepath.Join(cfg.CNIBinDir, plugin)); err != nil {
			return nil, fmt.Errorf("localcluster: CNI plugin %s not found in %s: install Debian's containernetworking-plugins", plugin, cfg.CNIBinDir)
		}
	}
	lock, err := lockHost()
	if err != nil {
		return nil, err
	}
	c := &Cluster{cfg: cfg, pkiDir: filepath.Join(cfg.WorkDir, "pki"), sysctls: map[string]string{}, lock: lock}
	if err := c.recordKernelSettings(); err != nil {
		_ = lock.Close()
		return nil, err
	}
	if err := c.start(ctx); err != nil {
		return c, err
	}
	return c, nil
}

func (c *Cluster) logf(format string, args ...any) {
	fmt.Fprintf(c.cfg.Log, "localcluster: "+format+"\n", args...)
}

func (c *Cluster) dir(parts ...string) (string, error) {
	dir := filepath.Join(append([]string{c.cfg.WorkDir}, parts...)...)
	return dir, os.MkdirAll(dir, 0o755)
}

func (c *Cluster) run(name string, args ...string) (*process, error) {
	logDir, err := c.dir("logs")
	if err != nil {
		return nil, err
	}
	p, err := startProcess(logDir, name, filepath.Join(c.cfg.BinDir, name), args...)
	if err != nil {
		return nil, err
	}
	c.procs = append(c.procs, p)
	return p, nil
}

func (c *Cluster) start(ctx context.Context) error {
	cfg := &c.cfg
	if err := writePKI(c.pkiDir, cfg); err != nil {
		return fmt.Errorf("write certificates: %w", err)
	}
	pkiFile := func(name string) string { return filepath.Join(c.pkiDir, name) }
	c.kubeconfig = pkiFile("admin.kubeconfig")

	c.logf("starting etcd on 127.0.0.1:%d", cfg.EtcdPort)
	etcdDir, err := c.dir("etcd")
	if err != nil {
		return err
	}
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", cfg.EtcdPort)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", cfg.EtcdPeerPort)
	etcd, err := c.run("etcd",
		"--name=thingdb-e2e", "--data-dir="+etcdDir,
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=thingdb-e2e="+peerURL, "--unsafe-no-fsync")
	if err != nil {
		return err
	}
	if err := waitFor(ctx, "etcd", []*process{etcd}, func(ctx context.Context) error {
		return httpOK(ctx, http.DefaultClient, etcdURL+"/health")
	}); err != nil {
		return err
	}

	c.logf("starting kube-apiserver on %s:%d", cfg.NodeIP, cfg.APIServerPort)
	apiserver, err := c.run("kube-apiserver",
		"--etcd-servers="+etcdURL,
		"--bind-address=0.0.0.0",
		"--advertise-address="+cfg.NodeIP,
		"--secure-port="+strconv.Itoa(cfg.APIServerPort),
		"--tls-cert-file="+pkiFile("apiserver.crt"),
		"--tls-private-key-file="+pkiFile("apiserver.key"),
		"--client-ca-file="+pkiFile("ca.crt"),
		"--kubelet-client-certificate="+pkiFile("apiserver-kubelet-client.crt"),
		"--kubelet-client-key="+pkiFile("apiserver-kubelet-client.key"),
		"--service-account-key-file="+pkiFile("service-account.key"),
		"--service-account-signing-key-file="+pkiFile("service-account.key"),
		"--service-account-issuer=https://kubernetes.default.svc."+cfg.ClusterDomain,
		"--service-cluster-ip-range="+cfg.ServiceCIDR,
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--allow-privileged=true",
		"--profiling=false",
	)
	if err != nil {
		return err
	}
	restConfig, err := clientcmd.BuildConfigFromFlags("", c.kubeconfig)
	if err != nil {
		return err
	}
	c.rest = restConfig
	clientset, err := kubernetes.NewForConfig(restConfig)
	if err != nil {
		return err
	}
	if err := waitFor(ctx, "kube-apiserver", []*process{apiserver}, func(ctx context.Context) error {
		_, err := clientset.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err
	}); err != nil {
		return err
	}

	c.logf("starting kube-controller-manager and kube-scheduler")
	kcm, err := c.run("kube-controller-manager",
		"--kubeconfig="+pkiFile("controller-manager.kubeconfig"),
		"--authentication-kubeconfig="+pkiFile("controller-manager.kubeconfig"),
		"--authorization-kubeconfig="+pkiFile("controller-manager.kubeconfig"),
		"--bind-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(cfg.ControllerManagerPort),
		"--service-account-private-key-file="+pkiFile("service-account.key"),
		"--root-ca-file="+pkiFile("ca.crt"),
		"--use-service-account-credentials=true",
		"--service-cluster-ip-range="+cfg.ServiceCIDR,
		"--leader-elect=false",
		"--controllers=*,-nodeipam",
	)
	if err != nil {
		return err
	}
	scheduler, err := c.run("kube-scheduler",
		"--kubeconfig="+pkiFile("scheduler.kubeconfig"),
		"--authentication-kubeconfig="+pkiFile("scheduler.kubeconfig"),
		"--authorization-kubeconfig="+pkiFile("scheduler.kubeconfig"),
		"--bind-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(cfg.SchedulerPort),
		"--leader-elect=false",
	)
	if err != nil {
		return err
	}

	c.logf("starting containerd")
	containerdDir, err := c.dir("containerd")
	if err != nil {
		return err
	}
	cniConfDir := filepath.Join(cfg.WorkDir, "cni", "net.d")
	if err := writeCNIConfig(cniConfDir, filepath.Join(cfg.WorkDir, "cni", "ipam"), cfg); err != nil {
		return err
	}
	containerdConfig, err := writeContainerdConfig(containerdDir, cniConfDir, cfg)
	if err != nil {
		return err
	}
	c.socket = filepath.Join(containerdDir, "containerd.sock")
	logDir, _ := c.dir("logs")
	containerd, err := startProcess(logDir, "containerd", "containerd", "--config", containerdConfig)
	if err != nil {
		return err
	}
	c.procs = append(c.procs, containerd)
	if err := waitFor(ctx, "containerd", []*process{containerd}, func(ctx context.Context) error {
		return exec.CommandContext(ctx, "ctr", "--address", c.socket, "version").Run()
	}); err != nil {
		return err
	}
	return c.startNode(ctx, clientset, []*process{apiserver, kcm, scheduler, containerd})
}

// startNode imports the cluster's own images, starts the kubelet and
// kube-proxy, and installs the DNS and storage add-ons.
func (c *Cluster) startNode(ctx context.Context, clientset kubernetes.Interface, control []*process) error {
	cfg := &c.cfg
	if err := c.ImportImages(ctx, cfg.PauseImage, cfg.CoreDNSImage); err != nil {
		return err
	}

	c.logf("starting the kubelet")
	kubeletDir, err := c.dir("kubelet")
	if err != nil {
		return err
	}
	kubeletConfig, err := writeKubeletConfig(kubeletDir, c.pkiDir, c.socket, cfg)
	if err != nil {
		return err
	}
	kubelet, err := c.run("kubelet",
		"--config="+kubeletConfig,
		"--kubeconfig="+filepath.Join(c.pkiDir, "kubelet.kubeconfig"),
		"--hostname-override="+cfg.NodeName,
		"--node-ip="+cfg.NodeIP,
		"--root-dir="+filepath.Join(kubeletDir, "root"),
		"--cert-dir="+filepath.Join(kubeletDir, "pki"),
	)
	if err != nil {
		return err
	}

	c.logf("starting kube-proxy")
	proxyDir, err := c.dir("kube-proxy")
	if err != nil {
		return err
	}
	proxyConfig, err := writeKubeProxyConfig(proxyDir, filepath.Join(c.pkiDir, "kube-proxy.kubeconfig"), cfg)
	if err != nil {
		return err
	}
	proxy, err := c.run("kube-proxy", "--config="+proxyConfig)
	if err != nil {
		return err
	}
	running := append(slices.Clone(control), kubelet, proxy)

	if err := waitFor(ctx, "Node "+cfg.NodeName+" to be Ready", running, func(ctx context.Context) error {
		node, err := clientset.CoreV1().Nodes().Get(ctx, cfg.NodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, cond := range node.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("node %s is not Ready: %w", cfg.NodeName, errNotYet)
	}); err != nil {
		return err
	}
	if err := waitFor(ctx, "kube-proxy", running, func(ctx context.Context) error {
		return httpOK(ctx, http.DefaultClient, fmt.Sprintf("http://127.0.0.1:%d/healthz", cfg.KubeProxyHealthzPort))
	}); err != nil {
		return err
	}

	c.logf("installing CoreDNS and %d local volumes", cfg.Volumes)
	if err := c.installAddons(ctx, clientset, running); err != nil {
		return err
	}
	return nil
}

// ImportImages copies images from the Docker engine into the cluster's
// containerd, where the kubelet finds them without a pull.
func (c *Cluster) ImportImages(ctx context.Context, refs ...string) error {
	for _, ref := range refs {
		dockerRef := strings.TrimPrefix(ref, "docker.io/")
		dockerRef = strings.TrimPrefix(dockerRef, "library/")
		save := exec.CommandContext(ctx, "docker", "save", dockerRef)
		load := exec.CommandContext(ctx, "ctr", "--address", c.socket, "-n", "k8s.io", "images", "import", "-")
		pipe, err := save.StdoutPipe()
		if err != nil {
			return err
		}
		load.Stdin = pipe
		var saveErr, loadOut strings.Builder
		save.Stderr = &saveErr
		load.Stdout = &loadOut
		load.Stderr = &loadOut
		if err := save.Start(); err != nil {
			return fmt.Errorf("import image %s: %w", ref, err)
		}
		loadErr := load.Run()
		if err := save.Wait(); err != nil {
			return fmt.Errorf("import image %s: docker save: %w: %s (build it first; see hack/e2e-assets.sh)", ref, err, strings.TrimSpace(saveErr.String()))
		}
		if loadErr != nil {
			return fmt.Errorf("import image %s: ctr images import: %w: %s", ref, loadErr, strings.TrimSpace(loadOut.String()))
		}
	}
	return nil
}

// Stop deletes every pod, stops every process, removes the pod network and
// mounts, and writes back the kernel settings that Start recorded. The
// work directory is left for inspection.
func (c *Cluster) Stop(ctx context.Context) error {
	var errs []error
	// Without the controllers, deleted pods are not replaced, so the kubelet
	// can tear every sandbox down through the CNI plugins.
	for _, name := range []string{"kube-controller-manager", "kube-scheduler"} {
		if p := c.proc(name); p != nil {
			p.stop(10 * time.Second)
		}
	}

	if c.rest != nil && c.proc("kubelet") != nil && c.proc("kube-apiserver") != nil {
		if err := c.deleteAllPods(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	for _, name := range []string{"kubelet", "kube-proxy", "containerd", "kube-apiserver", "etcd"} {
		if p := c.proc(name); p != nil {
			p.stop(15 * time.Second)
		}
	}

	if _, err := os.Stat(filepath.Join(c.cfg.BinDir, "kube-proxy")); err == nil {
		out, err := exec.Command(filepath.Join(c.cfg.BinDir, "kube-proxy"), "--cleanup").CombinedOutput()
		if err != nil {
			errs = append(errs, fmt.Errorf("kube-proxy --cleanup: %w: %s", err, out))
		}
	}
	if c.socket != "" {
		killShims(c.socket)
	}
	errs = append(errs, unmountUnder(c.cfg.WorkDir))
	for _, tool := range []string{"iptables", "ip6tables"} {
		errs = append(errs, removeChains(tool, "KUBE-", "CNI-"))
	}
	if err := exec.Command("ip", "link", "delete", bridgeName).Run(); err != nil {
		if _, statErr := os.Stat("/sys/class/net/" + bridgeName); statErr == nil {
			errs = append(errs, fmt.Errorf("delete bridge %s: %w", bridgeName, err))
		}
	}

	restored := true
	for name, value := range c.sysctls {
		if err := os.WriteFile(filepath.Join("/proc/sys", name), []byte(value), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("restore %s=%s: %w", name, value, err))
			restored = false
		}
	}
	if restored {
		_ = os.Remove(sysctlsPath)
	}
	removeKubepodsCgroups()
	if c.lock != nil {
		_ = c.lock.Close()
	}
	return errors.Join(errs...)
}

func (c *Cluster) proc(name string) *process {
	for _, p := range c.procs {
		if p.name == name {
			return p
		}
	}
	return nil
}

// deleteAllPods deletes every pod with a short grace period and waits until
// the kubelet has confirmed each deletion.
func (c *Cluster) deleteAllPods(ctx context.Context) error {
	clientset, err := kubernetes.NewForConfig(c.rest)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	namespaces, err := clientset.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	grace := int64(1)
	for _, ns := range namespaces.Items {
		err := clientset.CoreV1().Pods(ns.Name).DeleteCollection(ctx,
			metav1.DeleteOptions{GracePeriodSeconds: &grace}, metav1.ListOptions{})
		if err != nil {
			return fmt.Errorf("delete the pods of namespace %s: %w", ns.Name, err)
		}
	}
	return waitFor(ctx, "every pod to be deleted", nil, func(ctx context.Context) error {
		pods, err := clientset.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		if n := len(pods.Items); n > 0 {
			return fmt.Errorf("%d pods left: %w", n, errNotYet)
		}
		return nil
	})
}

// killShims ends the containerd shims, and so the containers, that the
// cluster's containerd started: they outlive containerd by design.
func killShims(socket string) {
	entries, _ := os.ReadDir("/proc")
	for _, entry := range entries {
		pid, err := strconv.Atoi(entry.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", entry.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(cmdline), "\x00")
		if len(args) > 0 && strings.Contains(filepath.Base(args[0]), "containerd-shim") && slices.Contains(args, socket) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// removeChains deletes the rules of the built-in chains that jump to a
// chain named with one of prefixes, then those chains, in every table.
// The kubelet, kube-proxy and the CNI firewall plugin create such chains
// and leave some of them behind.
func removeChains(tool string, prefixes ...string) error {
	if _, err := exec.LookPath(tool + "-save"); err != nil {
		return nil
	}
	out, err := exec.Command(tool + "-save").Output()
	if err != nil {
		return fmt.Errorf("%s-save: %w", tool, err)
	}
	ours := func(chain string) bool {
		return slices.ContainsFunc(prefixes, func(p string) bool { return strings.HasPrefix(chain, p) })
	}
	var errs []error
	table := ""
	chains := map[string][]string{}
	for _, line := range strings.Split(string(out), "\n") {
		fields := strings.Fields(line)
		switch {
		case strings.HasPrefix(line, "*"):
			table = strings.TrimPrefix(line, "*")
		case strings.HasPrefix(line, ":") && len(fields) > 0 && ours(strings.TrimPrefix(fields[0], ":")):
			chains[table] = append(chains[table], strings.TrimPrefix(fields[0], ":"))
		case len(fields) > 3 && fields[0] == "-A" && !ours(fields[1]):
			if i := slices.Index(fields, "-j"); i > 0 && i+1 < len(fields) && ours(fields[i+1]) {
				// iptables-save quotes comments, but an argument list
				// without a shell needs them unquoted.
				args := append([]string{"-t", table, "-D"}, unquote(fields[1:])...)
				if out, err := exec.Command(tool, args...).CombinedOutput(); err != nil {
					errs = append(errs, fmt.Errorf("%s %s: %w: %s", tool, strings.Join(args, " "), err, out))
				}
			}
		}
	}
	for table, names := range chains {
		for _, verb := range []string{"-F", "-X"} {
			for _, chain := range names {
				if out, err := exec.Command(tool, "-t", table, verb, chain).CombinedOutput(); err != nil {
					errs = append(errs, fmt.Errorf("%s -t %s %s %s: %w: %s", tool, table, verb, chain, err, out))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// unquote joins the words of an iptables-save rule that a quoted comment
// split, and drops the quotes.
func unquote(fields []string) []string {
	var args []string
	for i := 0; i < len(fields); i++ {
		word := fields[i]
		if strings.HasPrefix(word, "\"") {
			for !strings.HasSuffix(word, "\"") || word == "\"" {
				if i+1 >= len(fields) {
					break
				}
				i++
				word += " " + fields[i]
			}
			word = strings.TrimSuffix(strings.TrimPrefix(word, "\""), "\"")
		}
		args = append(args, word)
	}
	return args
}

// unmountUnder detaches every mount below dir, deepest first.
func unmountUnder(dir string) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	var points []string
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		fields := strings.Fields(scanner.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], dir+"/") {
			points = append(points, fields[4])
		}
	}
	slices.SortFunc(points, func(a, b string) int { return len(b) - len(a) })
	var errs []error
	for _, point := range points {
		if err := syscall.Unmount(point, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", point, err))
		}
	}
	return errors.Join(errs...)
}

// removeKubepodsCgroups removes the kubelet's empty cgroups, deepest first.
func removeKubepodsCgroups() {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*/kubepods")
	for _, root := range roots {
		var dirs []string
		_ = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		slices.Reverse(dirs)
		for _, dir := range dirs {
			_ = syscall.Rmdir(dir)
		}
	}
}

func httpOK(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: status %d", url, resp.StatusCode)
	}
	return nil
}

// freePort returns a TCP port that is free on every address.
func freePort() (int, error) {
	l, err := net.Listen("tcp", ":0")
	if err != nil {
		return 0, err
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// defaultRouteIP is the first IPv4 address of the interface that holds the
// default route.
func defaultRouteIP() (string, error) {
	data, err := os.ReadFile("/proc/net/route")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(data), "\n")[1:] {
		fields := strings.Fields(line)
		if len(fields) < 2 || fields[1] != "00000000" {
			continue
		}
		iface, err := net.InterfaceByName(fields[0])
		if err != nil {
			return "", err
		}
		addrs, err := iface.Addrs()
		if err != nil {
			return "", err
		}
		for _, addr := range addrs {
			if ipnet, ok := addr.(*net.IPNet); ok && ipnet.IP.To4() != nil {
				return ipnet.IP.String(), nil
			}
		}
	}
	return "", errors.New("localcluster: no interface has a default route: set NodeIP to a host address that pods can reach")
}
