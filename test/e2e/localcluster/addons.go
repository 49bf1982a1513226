package localcluster

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// StorageClassName is the cluster's default StorageClass: local volumes
// under the work directory, bound when the first pod is scheduled.
const StorageClassName = "standard"

// dnsPort is the unprivileged port CoreDNS listens on in its pod; the
// kube-dns Service maps port 53 to it.
const dnsPort = 1053

// installAddons creates the cluster DNS and the local volumes, and waits
// until a name resolves through the DNS Service.
func (c *Cluster) installAddons(ctx context.Context, clientset kubernetes.Interface, running []*process) error {
	if err := c.installStorage(ctx, clientset); err != nil {
		return fmt.Errorf("install storage: %w", err)
	}
	if err := c.installCoreDNS(ctx, clientset); err != nil {
		return fmt.Errorf("install CoreDNS: %w", err)
	}
	dnsIP, err := nthIP(c.cfg.ServiceCIDR, 10)
	if err != nil {
		return err
	}
	resolver := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, net.JoinHostPort(dnsIP.String(), "53"))
	}}
	name := "kubernetes.default.svc." + c.cfg.ClusterDomain
	return waitFor(ctx, "CoreDNS to resolve "+name, running, func(ctx context.Context) error {
		addrs, err := resolver.LookupHost(ctx, name)
		if err != nil {
			return err
		}
		if len(addrs) == 0 {
			return fmt.Errorf("%s resolved to nothing: %w", name, errNotYet)
		}
		return nil
	})
}

func (c *Cluster) installStorage(ctx context.Context, clientset kubernetes.Interface) error {
	class := &storagev1.StorageClass{
		ObjectMeta: metav1.ObjectMeta{
			Name:        StorageClassName,
			Annotations: map[string]string{"storageclass.kubernetes.io/is-default-class": "true"},
		},
		Provisioner:       "kubernetes.io/no-provisioner",
		VolumeBindingMode: ptr.To(storagev1.VolumeBindingWaitForFirstConsumer),
		ReclaimPolicy:     ptr.To(corev1.PersistentVolumeReclaimRetain),
	}
	if err := create(ctx, clientset.StorageV1().StorageClasses().Create, class); err != nil {
		return err
	}
	for i := range c.cfg.Volumes {
		name := fmt.Sprintf("local-%02d", i)
		path := filepath.Join(c.cfg.WorkDir, "volumes", name)
		if err := os.MkdirAll(path, 0o755); err != nil {
			return err
		}
		// The pods run as a non-root user; the kubelet applies their
		// fsGroup, and an open mode keeps pods without one working too.
		if err := os.Chmod(path, 0o777); err != nil {
			return err
		}
		pv := &corev1.PersistentVolume{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.PersistentVolumeSpec{
				Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("10Gi")},
				AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
				StorageClassName:              StorageClassName,
				PersistentVolumeSource:        corev1.PersistentVolumeSource{Local: &corev1.LocalVolumeSource{Path: path}},
				NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{
					NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{{
						Key: corev1.LabelHostname, Operator: corev1.NodeSelectorOpIn, Values: []string{c.cfg.NodeName},
					}}}},
				}},
			},
		}
		if err := create(ctx, clientset.CoreV1().PersistentVolumes().Create, pv); err != nil {
			return err
		}
	}
	return nil
}

func (c *Cluster) installCoreDNS(ctx context.Context, clientset kubernetes.Interface) error {
	const ns, name = "kube-system", "coredns"
	labels := map[string]string{"k8s-app": "kube-dns"}
	dnsIP, err := nthIP(c.cfg.ServiceCIDR, 10)
	if err != nil {
		return err
	}
	corefile := strings.Join([]string{
		fmt.Sprintf(".:%d {", dnsPort),
		"    errors",
		"    health :8080",
		"    ready :8181",
		"    kubernetes " + c.cfg.ClusterDomain + " in-addr.arpa ip6.arpa {",
		"        pods insecure",
		"        fallthrough in-addr.arpa ip6.arpa",
		"    }",
		"    cache 30",
		"}",
		"",
	}, "\n")

	objects := []func() error{
		func() error {
			return create(ctx, clientset.CoreV1().ServiceAccounts(ns).Create,
				&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}})
		},
		func() error {
			return create(ctx, clientset.RbacV1().ClusterRoles().Create, &rbacv1.ClusterRole{
				ObjectMeta: metav1.ObjectMeta{Name: "system:coredns"},
				Rules: []rbacv1.PolicyRule{
					{APIGroups: []string{""}, Resources: []string{"endpoints", "services", "pods", "namespaces"}, Verbs: []string{"list", "watch"}},
					{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"list", "watch"}},
				},
			})
		},
		func() error {
			return create(ctx, clientset.RbacV1().ClusterRoleBindings().Create, &rbacv1.ClusterRoleBinding{
				ObjectMeta: metav1.ObjectMeta{Name: "system:coredns"},
				RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "system:coredns"},
				Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: ns}},
			})
		},
		func() error {
			return create(ctx, clientset.CoreV1().ConfigMaps(ns).Create, &corev1.ConfigMap{
				ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
				Data:       map[string]string{"Corefile": corefile},
			})
		},
		func() error {
			return create(ctx, clientset.AppsV1().Deployments(ns).Create, c.coreDNSDeployment(ns, name, labels))
		},
		func() error {
			return create(ctx, clientset.CoreV1().Services(ns).Create, &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Name: "kube-dns", Namespace: ns, Labels: labels},
				Spec: corev1.ServiceSpec{
					Selector:  labels,
					ClusterIP: dnsIP.String(),
					Ports: []corev1.ServicePort{
						{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt32(dnsPort)},
						{Name: "dns-tcp", Port: 53, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(dnsPort)},
					},
				},
			})
		},
	}
	for _, createObject := range objects {
		if err := createObject(); err != nil {
			return err
		}
	}
	return nil
}

func (c *Cluster) coreDNSDeployment(ns, name string, labels map[string]string) *appsv1.Deployment {
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					ServiceAccountName: name,
					DNSPolicy:          corev1.DNSDefault,
					SecurityContext: &corev1.PodSecurityContext{
						RunAsNonRoot:   ptr.To(true),
						RunAsUser:      ptr.To[int64](65532),
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
					},
					Containers: []corev1.Container{{
						Name:            "coredns",
						Image:           c.cfg.CoreDNSImage,
						ImagePullPolicy: corev1.PullNever,
						Args:            []string{"-conf", "/etc/coredns/Corefile"},
						Ports: []corev1.ContainerPort{
							{Name: "dns", ContainerPort: dnsPort, Protocol: corev1.ProtocolUDP},
							{Name: "dns-tcp", ContainerPort: dnsPort, Protocol: corev1.ProtocolTCP},
						},
						ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
							HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromInt32(8181)},
						}, PeriodSeconds: 2},
						SecurityContext: &corev1.SecurityContext{
							AllowPrivilegeEscalation: ptr.To(false),
							ReadOnlyRootFilesystem:   ptr.To(true),
							Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
						},
						VolumeMounts: []corev1.VolumeMount{{Name: "config", MountPath: "/etc/coredns", ReadOnly: true}},
					}},
					Volumes: []corev1.Volume{{Name: "config", VolumeSource: corev1.VolumeSource{
						ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: name}},
					}}},
				},
			},
		},
	}
}

// create creates obj and accepts one that exists already.
func create[T any](ctx context.Context, createFunc func(context.Context, T, metav1.CreateOptions) (T, error), obj T) error {
	_, err := createFunc(ctx, obj, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}
