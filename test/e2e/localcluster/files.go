package localcluster

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// writeContainerdConfig writes the configuration of the cluster's own
// containerd: every path under dir, the CRI plugin on the local pause
// image, and the two settings a host without CAP_SYS_RESOURCE needs.
func writeContainerdConfig(dir, cniConfDir string, cfg *Config) (string, error) {
	config := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q

[grpc]
  address = %[3]q

[ttrpc]
  address = %[4]q

[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[6]q
  # Lowering a sandbox's oom_score_adj below the caller's own needs
  # CAP_SYS_RESOURCE, which a container host may not grant.
  restrict_oom_score_adj = true
  enable_selinux = false

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = %[7]q
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %[8]q
    conf_dir = %[9]q
`,
		filepath.Join(dir, "root"),
		filepath.Join(dir, "state"),
		filepath.Join(dir, "containerd.sock"),
		filepath.Join(dir, "containerd.sock.ttrpc"),
		filepath.Join(dir, "opt"),
		cfg.PauseImage,
		cfg.Snapshotter,
		cfg.CNIBinDir,
		cniConfDir,
	)
	path := filepath.Join(dir, "config.toml")
	return path, os.WriteFile(path, []byte(config), 0o644)
}

// bridgeName is the Linux bridge the pods attach to.
const bridgeName = "thingdb-e2e0"

// writeCNIConfig writes the pod network: a bridge with the node as
// gateway, host-local addresses from the pod range, accept rules in the
// host's FORWARD chain (Docker sets its policy to DROP), and host ports.
func writeCNIConfig(confDir, ipamDir string, cfg *Config) error {
	conflist := map[string]any{
		"cniVersion": "1.0.0",
		"name":       "thingdb-e2e",
		"plugins": []any{
			map[string]any{
				"type":        "bridge",
				"bridge":      bridgeName,
				"isGateway":   true,
				"ipMasq":      true,
				"hairpinMode": true,
				"ipam": map[string]any{
					"type":    "host-local",
					"ranges":  []any{[]any{map[string]any{"subnet": cfg.PodCIDR}}},
					"routes":  []any{map[string]any{"dst": "0.0.0.0/0"}},
					"dataDir": ipamDir,
				},
			},
			map[string]any{"type": "firewall"},
			map[string]any{"type": "portmap", "capabilities": map[string]any{"portMappings": true}},
		},
	}
	data, err := json.MarshalIndent(conflist, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(confDir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(confDir, "10-thingdb-e2e.conflist"), data, 0o644)
}

// writeKubeletConfig writes the kubelet's configuration file. The settings
// that differ from the defaults are the ones a container host needs: cgroup
// v1 allowed, cgroupfs as the driver, swap allowed, and the kubelet's own
// oom_score_adj left alone.
func writeKubeletConfig(dir, pkiDir, containerdSocket string, cfg *Config) (string, error) {
	dnsIP, err := nthIP(cfg.ServiceCIDR, 10)
	if err != nil {
		return "", err
	}
	resolvConf := filepath.Join(dir, "resolv.conf")
	// Pods resolve only cluster names; the cluster reaches no outside host.
	if err := os.WriteFile(resolvConf, []byte("nameserver "+dnsIP.String()+"\n"), 0o644); err != nil {
		return "", err
	}
	config := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: %[1]s
authorization:
  mode: Webhook
tlsCertFile: %[2]s
tlsPrivateKeyFile: %[3]s
containerRuntimeEndpoint: unix://%[4]s
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
oomScoreAdj: 0
clusterDNS:
- %[5]s
clusterDomain: %[6]s
resolvConf: %[7]s
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %[8]d
port: %[9]d
serializeImagePulls: false
podLogsDir: %[10]s
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%%
  nodefs.inodesFree: 1%%
  imagefs.available: 1%%
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
`,
		filepath.Join(pkiDir, "ca.crt"),
		filepath.Join(pkiDir, "kubelet-serving.crt"),
		filepath.Join(pkiDir, "kubelet-serving.key"),
		containerdSocket,
		dnsIP,
		cfg.ClusterDomain,
		resolvConf,
		cfg.KubeletHealthzPort,
		cfg.KubeletPort,
		filepath.Join(dir, "pod-logs"),
	)
	path := filepath.Join(dir, "config.yaml")
	return path, os.WriteFile(path, []byte(config), 0o644)
}

// writeKubeProxyConfig writes kube-proxy's configuration: iptables mode,
// every Service connection masqueraded (so replies between pods on one
// bridge come back through the host), and conntrack limits left alone.
func writeKubeProxyConfig(dir, kubeconfig string, cfg *Config) (string, error) {
	config := fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: %s
mode: iptables
clusterCIDR: %s
hostnameOverride: %s
healthzBindAddress: 127.0.0.1:%d
metricsBindAddress: 127.0.0.1:%d
iptables:
  masqueradeAll: true
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
`, kubeconfig, cfg.PodCIDR, cfg.NodeName, cfg.KubeProxyHealthzPort, cfg.KubeProxyMetricsPort)
	path := filepath.Join(dir, "config.yaml")
	return path, os.WriteFile(path, []byte(config), 0o644)
}
