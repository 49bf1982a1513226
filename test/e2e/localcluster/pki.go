package localcluster

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/thingdb/thingdb/internal/pki"
)

// certValidity is long enough for any test run and short enough that a
// forgotten work directory holds nothing of lasting value.
const certValidity = 48 * time.Hour

// identity is a client certificate that one component uses against the
// API server, with the kubeconfig that holds it.
type identity struct {
	name       string // file name stem
	commonName string // the user name the API server authenticates
	groups     []string
}

// identities are the clients of the API server. Each one has the user name
// and groups that the default RBAC roles and the Node authorizer expect.
func identities(nodeName string) []identity {
	return []identity{
		{name: "admin", commonName: "thingdb-e2e-admin", groups: []string{"system:masters"}},
		{name: "controller-manager", commonName: "system:kube-controller-manager"},
		{name: "scheduler", commonName: "system:kube-scheduler"},
		{name: "kubelet", commonName: "system:node:" + nodeName, groups: []string{"system:nodes"}},
		{name: "kube-proxy", commonName: "system:kube-proxy"},
		// The API server's own client certificate, for logs and exec on the
		// kubelet.
		{name: "apiserver-kubelet-client", commonName: "kube-apiserver-kubelet-client", groups: []string{"system:masters"}},
	}
}

// writePKI creates the cluster CA, the serving certificates of the API
// server and kubelet, a client certificate and kubeconfig per component,
// and the service account signing key, all under dir.
func writePKI(dir string, cfg *Config) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	ca, err := pki.NewCA(pki.CARequest{CommonName: "thingdb-e2e-cluster-ca", Validity: certValidity})
	if err != nil {
		return err
	}
	if err := writeKeyPair(dir, "ca", ca); err != nil {
		return err
	}

	serviceIP, err := firstServiceIP(cfg.ServiceCIDR)
	if err != nil {
		return err
	}
	apiserver, err := pki.Issue(ca, pki.IssueRequest{
		CommonName: "kube-apiserver",
		DNSNames: []string{
			"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc." + cfg.ClusterDomain,
		},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP(cfg.NodeIP), serviceIP},
		Server:      true,
		Validity:    certValidity,
	})
	if err != nil {
		return err
	}
	if err := writeKeyPair(dir, "apiserver", apiserver); err != nil {
		return err
	}
	kubelet, err := pki.Issue(ca, pki.IssueRequest{
		CommonName:  cfg.NodeName,
		DNSNames:    []string{cfg.NodeName, "localhost"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP(cfg.NodeIP)},
		Server:      true,
		Validity:    certValidity,
	})
	if err != nil {
		return err
	}
	if err := writeKeyPair(dir, "kubelet-serving", kubelet); err != nil {
		return err
	}

	server := fmt.Sprintf("https://%s", net.JoinHostPort(cfg.NodeIP, fmt.Sprint(cfg.APIServerPort)))
	for _, id := range identities(cfg.NodeName) {
		pair, err := pki.Issue(ca, pki.IssueRequest{
			CommonName:   id.commonName,
			Organization: id.groups,
			Client:       true,
			Validity:     certValidity,
		})
		if err != nil {
			return err
		}
		if err := writeKeyPair(dir, id.name, pair); err != nil {
			return err
		}
		if err := writeKubeconfig(filepath.Join(dir, id.name+".kubeconfig"), server, dir, id.name); err != nil {
			return err
		}
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate service account key: %w", err)
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "service-account.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600)
}

func writeKeyPair(dir, name string, pair *pki.KeyPair) error {
	if err := os.WriteFile(filepath.Join(dir, name+".crt"), pair.CertPEM, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, name+".key"), pair.KeyPEM, 0o600)
}

// writeKubeconfig writes a kubeconfig that reaches server as the client
// certificate name.crt in dir.
func writeKubeconfig(path, server, dir, name string) error {
	config := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: thingdb-e2e
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: %s
  user:
    client-certificate: %s
    client-key: %s
contexts:
- name: thingdb-e2e
  context:
    cluster: thingdb-e2e
    user: %s
current-context: thingdb-e2e
`, server, filepath.Join(dir, "ca.crt"), name, filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key"), name)
	return os.WriteFile(path, []byte(config), 0o600)
}

// firstServiceIP is the address of the kubernetes Service: the first host
// address of the service range.
func firstServiceIP(cidr string) (net.IP, error) {
	return nthIP(cidr, 1)
}

// nthIP returns the n-th address of cidr, counting the network address as 0.
func nthIP(cidr string, n int) (net.IP, error) {
	_, network, err := net.ParseCIDR(cidr)
	if err != nil {
		return nil, fmt.Errorf("invalid CIDR %q: use a form such as 10.96.0.0/16", cidr)
	}
	ip := network.IP.To4()
	if ip == nil {
		return nil, fmt.Errorf("CIDR %q is not IPv4: use an IPv4 range such as 10.96.0.0/16", cidr)
	}
	out := make(net.IP, 4)
	copy(out, ip)
	for i := 3; i >= 0 && n > 0; i-- {
		sum := int(out[i]) + n
		out[i] = byte(sum % 256)
		n = sum / 256
	}
	if !network.Contains(out) {
		return nil, fmt.Errorf("CIDR %q is too small", cidr)
	}
	return out, nil
}
