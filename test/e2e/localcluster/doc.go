// Package localcluster runs a single-node Kubernetes cluster from real
// binaries on the host, for end-to-end tests on machines that cannot run
// kind.
//
// The cluster is etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler, a kubelet, kube-proxy in iptables mode and CoreDNS as a
// pod. The kubelet runs pods on a containerd of its own, with a socket, root
// and state apart from any other containerd on the host. Pods attach to a
// bridge through the CNI plugins, and local PersistentVolumes stand behind
// a default StorageClass. Nothing is pulled: the
// pause and CoreDNS images are built FROM scratch by hack/e2e-assets.sh, and
// the caller imports every other image it needs.
//
// Start needs root with the capabilities to create network namespaces,
// iptables rules and cgroups. It writes every file under Config.WorkDir and
// every process logs to a file there, so a failed run can be inspected.
// The kubelet changes a few kernel settings; Stop puts them back.
package localcluster
