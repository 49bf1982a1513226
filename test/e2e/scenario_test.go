package e2e_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	thingdbv1 "github.com/thingdb/thingdb/api/v1alpha1"
)

const (
	// nodeUser is the user the node image and the rendered pods run as.
	nodeUser = 65532
	// syncInterval is short so that entries spread within seconds.
	syncInterval = 2 * time.Second
	// spreadTimeout bounds how long an entry may take to reach every pod:
	// several sync rounds, plus a pod restart where one is involved.
	spreadTimeout = 3 * time.Minute
)

// member is a ThingNode of the scenario and its pods.
type member struct {
	name     string
	replicas int32
}

func (m member) pods() []string {
	pods := make([]string, m.replicas)
	for i := range pods {
		pods[i] = fmt.Sprintf("%s-%d", m.name, i)
	}
	return pods
}

var (
	alpha = member{name: "alpha", replicas: 2}
	beta  = member{name: "beta", replicas: 1}
)

// written is what a put returned, to compare with what every pod reads.
type written struct {
	thing, origin, hash string
	sequence            uint64
}

var _ = Describe("Operator on a real cluster", Label("e2e"), Ordered, func() {
	// writes lists every acknowledged write of the scenario. Each step
	// checks that all of them are still on every pod it expects.
	var writes []written
	counter := 0

	thingNode := func(m member) *thingdbv1.ThingNode {
		return &thingdbv1.ThingNode{
			ObjectMeta: metav1.ObjectMeta{Name: m.name, Namespace: testNamespace},
			Spec: thingdbv1.ThingNodeSpec{
				Replicas:        m.replicas,
				Image:           image,
				ImagePullPolicy: corev1.PullIfNotPresent,
				Storage: thingdbv1.StorageSpec{
					Size:        resource.MustParse("256Mi"),
					WhenDeleted: thingdbv1.VolumeRetain,
				},
				TLS:    thingdbv1.TLSSpec{Mode: thingdbv1.TLSModeOperatorCA},
				Tokens: []thingdbv1.TokenSpec{{Name: "app", Scopes: []thingdbv1.TokenScope{thingdbv1.TokenScopeRead, thingdbv1.TokenScopeWrite}}},
			},
		}
	}

	// write puts a new thing on pod and records what the pod acknowledged.
	write := func(ctx context.Context, m member, pod string) written {
		counter++
		thing := fmt.Sprintf("thing-%d-from-%s", counter, pod)
		var info written
		Eventually(func(ctx context.Context) error {
			got, err := put(ctx, m.name, pod, thing)
			info = written{thing: thing, origin: got.Origin, hash: got.Hash, sequence: got.Sequence}
			return err
		}).WithContext(ctx).WithTimeout(time.Minute).WithPolling(time.Second).Should(Succeed())
		writes = append(writes, info)
		return info
	}

	// expectEverywhere waits until every pod of members holds every write
	// with the provenance its writer acknowledged.
	expectEverywhere := func(ctx context.Context, members ...member) {
		for _, m := range members {
			for _, pod := range m.pods() {
				Eventually(func(ctx context.Context) error {
					for _, w := range writes {
						v, err := get(ctx, m.name, pod, w.thing)
						if err != nil {
							return err
						}
						if v.Origin != w.origin || v.Sequence != w.sequence || v.Hash != w.hash || !v.SignatureValid {
							return fmt.Errorf("pod %s holds %s as origin %s sequence %d hash %s valid %t; written as origin %s sequence %d hash %s",
								pod, w.thing, v.Origin, v.Sequence, v.Hash, v.SignatureValid, w.origin, w.sequence, w.hash)
						}
					}
					return nil
				}).WithContext(ctx).WithTimeout(spreadTimeout).WithPolling(2*time.Second).Should(Succeed(), "pod %s", pod)
			}
		}
	}

	podsOf := func(ctx context.Context, m member) []corev1.Pod {
		list := &corev1.PodList{}
		Expect(k8sClient.List(ctx, list, client.InNamespace(testNamespace),
			client.MatchingLabels{"app.kubernetes.io/instance": m.name})).To(Succeed())
		return list.Items
	}

	// podState is what a restart or a new pod would change.
	type podState struct {
		uid      types.UID
		restarts int32
	}
	podStates := func(ctx context.Context, members ...member) map[string]podState {
		states := map[string]podState{}
		for _, m := range members {
			for _, pod := range podsOf(ctx, m) {
				var restarts int32
				for _, cs := range pod.Status.ContainerStatuses {
					restarts += cs.RestartCount
				}
				states[pod.Name] = podState{uid: pod.UID, restarts: restarts}
			}
		}
		return states
	}

	waitReady := func(ctx context.Context, m member) {
		Eventually(func(g Gomega, ctx context.Context) {
			tn := &thingdbv1.ThingNode{}
			g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: testNamespace, Name: m.name}, tn)).To(Succeed())
			ready := meta.FindStatusCondition(tn.Status.Conditions, thingdbv1.ConditionReady)
			g.Expect(ready).NotTo(BeNil(), "ThingNode %s has no Ready condition", m.name)
			g.Expect(ready.Status).To(Equal(metav1.ConditionTrue), "ThingNode %s: %s", m.name, ready.Message)
			g.Expect(tn.Status.Nodes).To(HaveLen(int(m.replicas)))
		}).WithContext(ctx).WithTimeout(5 * time.Minute).WithPolling(2 * time.Second).Should(Succeed())
	}

	waitSynced := func(ctx context.Context, name string) {
		Eventually(func(g Gomega, ctx context.Context) {
			ts := &thingdbv1.ThingSync{}
			g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: testNamespace, Name: name}, ts)).To(Succeed())
			g.Expect(ts.Status.ObservedGeneration).To(Equal(ts.Generation))
			synced := meta.FindStatusCondition(ts.Status.Conditions, thingdbv1.ConditionSynced)
			g.Expect(synced).NotTo(BeNil())
			g.Expect(synced.Status).To(Equal(metav1.ConditionTrue), "ThingSync %s: %s", name, synced.Message)
		}).WithContext(ctx).WithTimeout(spreadTimeout).WithPolling(2 * time.Second).Should(Succeed())
	}

	BeforeAll(func(ctx SpecContext) {
		// A cluster that outlives the suite (E2E_KUBECONFIG) may still hold
		// the namespace of an earlier run.
		deleteNamespace(ctx)
		if !localHost {
			DeferCleanup(deleteNamespace, NodeTimeout(5*time.Minute))
		}
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testNamespace}}
		Expect(k8sClient.Create(ctx, ns)).To(Succeed())
		for _, m := range []member{alpha, beta} {
			Expect(k8sClient.Create(ctx, thingNode(m))).To(Succeed())
		}
		Expect(k8sClient.Create(ctx, &thingdbv1.ThingSync{
			ObjectMeta: metav1.ObjectMeta{Name: "mesh", Namespace: testNamespace},
			Spec: thingdbv1.ThingSyncSpec{
				Members:  thingdbv1.SyncMembers{Names: []string{alpha.name, beta.name}},
				Topology: thingdbv1.SyncTopology{Type: thingdbv1.TopologyMesh},
				Interval: &metav1.Duration{Duration: syncInterval},
			},
		})).To(Succeed())
	})

	It("brings every pod to Ready with the rendered security context", func(ctx SpecContext) {
		start := time.Now()
		for _, m := range []member{alpha, beta} {
			waitReady(ctx, m)
		}
		GinkgoWriter.Printf("ThingNodes Ready %s after creation\n", time.Since(start).Round(time.Second))

		for _, m := range []member{alpha, beta} {
			pods := podsOf(ctx, m)
			Expect(pods).To(HaveLen(int(m.replicas)), "pods of ThingNode %s", m.name)
			for _, pod := range pods {
				Expect(pod.Status.Phase).To(Equal(corev1.PodRunning), "pod %s", pod.Name)
				psc := pod.Spec.SecurityContext
				Expect(psc).NotTo(BeNil(), "securityContext of pod %s", pod.Name)
				Expect(psc.RunAsNonRoot).To(HaveValue(BeTrue()), "runAsNonRoot of pod %s", pod.Name)
				Expect(psc.RunAsUser).To(HaveValue(BeEquivalentTo(nodeUser)), "runAsUser of pod %s", pod.Name)
				Expect(psc.SeccompProfile).NotTo(BeNil(), "seccompProfile of pod %s", pod.Name)
				Expect(psc.SeccompProfile.Type).To(Equal(corev1.SeccompProfileTypeRuntimeDefault), "seccompProfile of pod %s", pod.Name)
				for _, c := range pod.Spec.Containers {
					sc := c.SecurityContext
					Expect(sc).NotTo(BeNil(), "container %s of pod %s", c.Name, pod.Name)
					Expect(sc.AllowPrivilegeEscalation).To(HaveValue(BeFalse()), "allowPrivilegeEscalation of container %s in pod %s", c.Name, pod.Name)
					Expect(sc.ReadOnlyRootFilesystem).To(HaveValue(BeTrue()), "readOnlyRootFilesystem of container %s in pod %s", c.Name, pod.Name)
					Expect(sc.Capabilities).NotTo(BeNil(), "capabilities of container %s in pod %s", c.Name, pod.Name)
					Expect(sc.Capabilities.Drop).To(ContainElement(corev1.Capability("ALL")), "capabilities dropped by container %s in pod %s", c.Name, pod.Name)
				}
			}
		}

		if !localHost {
			return
		}
		// The runtime, not only the spec: every thingdb process on this
		// host runs as the node user with no capabilities and no way to
		// gain privileges.
		procs := nodeProcesses()
		Expect(procs).To(HaveLen(int(alpha.replicas+beta.replicas)), "thingdb serve processes on this host")
		for pid, status := range procs {
			Expect(status["Uid"]).To(HavePrefix(strconv.Itoa(nodeUser)+"\t"), "process %d", pid)
			Expect(status["CapEff"]).To(Equal("0000000000000000"), "process %d", pid)
			Expect(status["NoNewPrivs"]).To(Equal("1"), "process %d", pid)
			Expect(status["Seccomp"]).To(Equal("2"), "process %d runs without a seccomp filter", pid)
		}
	})

	It("carries writes on every pod to every other pod with their provenance", func(ctx SpecContext) {
		for _, m := range []member{alpha, beta} {
			tn := &thingdbv1.ThingNode{}
			Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: testNamespace, Name: m.name}, tn)).To(Succeed())
			for _, pod := range m.pods() {
				w := write(ctx, m, pod)
				// The origin is the writing pod's own node id.
				idx := slices.IndexFunc(tn.Status.Nodes, func(n thingdbv1.NodeIdentity) bool { return n.Pod == pod })
				Expect(idx).NotTo(Equal(-1), "pod %s is not in the status of %s", pod, m.name)
				Expect(w.origin).To(Equal(tn.Status.Nodes[idx].NodeID), "origin of a write on %s", pod)
			}
		}
		start := time.Now()
		expectEverywhere(ctx, alpha, beta)
		GinkgoWriter.Printf("%d writes on every pod after %s\n", len(writes), time.Since(start).Round(time.Second))
		waitSynced(ctx, "mesh")
	})

	It("loses nothing when a pod is deleted, and the new pod catches up", func(ctx SpecContext) {
		before := podStates(ctx, alpha)
		Expect(k8sClient.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: testNamespace, Name: "alpha-0"}})).To(Succeed())
		// Written while alpha-0 is away: it must arrive after the restart.
		write(ctx, beta, "beta-0")
		Eventually(func(ctx context.Context) (types.UID, error) {
			pod := &corev1.Pod{}
			err := k8sClient.Get(ctx, client.ObjectKey{Namespace: testNamespace, Name: "alpha-0"}, pod)
			return pod.UID, err
		}).WithContext(ctx).WithTimeout(2*time.Minute).ShouldNot(Equal(before["alpha-0"].uid), "alpha-0 was not replaced")
		waitReady(ctx, alpha)
		expectEverywhere(ctx, alpha, beta)
	})

	It("keeps syncing while the operator is down", func(ctx SpecContext) {
		DeferCleanup(func(ctx SpecContext) { scaleOperator(ctx, 1) })
		scaleOperator(ctx, 0)
		Eventually(func(ctx context.Context) ([]corev1.Pod, error) {
			list := &corev1.PodList{}
			err := k8sClient.List(ctx, list, client.InNamespace(operatorNamespace))
			return list.Items, err
		}).WithContext(ctx).WithTimeout(time.Minute).Should(BeEmpty())

		write(ctx, alpha, "alpha-1")
		write(ctx, beta, "beta-0")
		expectEverywhere(ctx, alpha, beta)
	})

	It("applies a topology change without restarting a pod", func(ctx SpecContext) {
		waitSynced(ctx, "mesh")
		before := podStates(ctx, alpha, beta)

		peersOf := func(ctx context.Context) ([]string, error) {
			status, err := syncStatus(ctx, alpha.name, "alpha-0")
			names := []string{}
			for _, p := range status.Peers {
				names = append(names, p.Name)
			}
			return names, err
		}
		Expect(peersOf(ctx)).To(ContainElement("beta-0"), "in the mesh, alpha-0 pulls from beta-0")

		// One way only: beta pulls from alpha, alpha no longer from beta.
		updateSync(ctx, "mesh", func(ts *thingdbv1.ThingSync) {
			ts.Spec.Topology = thingdbv1.SyncTopology{Type: thingdbv1.TopologyPairs,
				Pairs: []thingdbv1.SyncPair{{From: alpha.name, To: beta.name}}}
		})
		Eventually(peersOf).WithContext(ctx).WithTimeout(spreadTimeout).WithPolling(2*time.Second).ShouldNot(ContainElement("beta-0"),
			"alpha-0 still pulls from beta-0 after the change to one-way pairs")
		write(ctx, alpha, "alpha-0")
		expectEverywhere(ctx, beta)

		// And back to the mesh: beta's entries reach alpha again.
		updateSync(ctx, "mesh", func(ts *thingdbv1.ThingSync) {
			ts.Spec.Topology = thingdbv1.SyncTopology{Type: thingdbv1.TopologyMesh}
		})
		write(ctx, beta, "beta-0")
		expectEverywhere(ctx, alpha, beta)
		waitSynced(ctx, "mesh")

		Expect(podStates(ctx, alpha, beta)).To(Equal(before), "a pod was replaced or restarted by the topology change")
	})

	It("keeps the volumes of a deleted ThingNode", func(ctx SpecContext) {
		claims := func(ctx context.Context) ([]string, error) {
			list := &corev1.PersistentVolumeClaimList{}
			err := k8sClient.List(ctx, list, client.InNamespace(testNamespace))
			var names []string
			for _, pvc := range list.Items {
				if strings.HasSuffix(pvc.Name, "-"+beta.name+"-0") && pvc.Status.Phase == corev1.ClaimBound {
					names = append(names, pvc.Name)
				}
			}
			return names, err
		}
		bound, err := claims(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(bound).To(HaveLen(1), "beta-0 has no bound claim")

		Expect(k8sClient.Delete(ctx, thingNode(beta))).To(Succeed())
		Eventually(func(ctx context.Context) bool {
			err := k8sClient.Get(ctx, client.ObjectKey{Namespace: testNamespace, Name: beta.name}, &appsv1.StatefulSet{})
			return apierrors.IsNotFound(err)
		}).WithContext(ctx).WithTimeout(2 * time.Minute).Should(BeTrue())
		Eventually(func(ctx context.Context) []corev1.Pod { return podsOf(ctx, beta) }).
			WithContext(ctx).WithTimeout(2 * time.Minute).Should(BeEmpty())
		Consistently(claims).WithContext(ctx).WithTimeout(10 * time.Second).Should(Equal(bound))
	})
})

// deleteNamespace deletes the test namespace and everything in it, and
// waits until it is gone.
func deleteNamespace(ctx SpecContext) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testNamespace}}
	Expect(client.IgnoreNotFound(k8sClient.Delete(ctx, ns))).To(Succeed())
	Eventually(func(ctx context.Context) bool {
		return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(ns), ns))
	}).WithContext(ctx).WithTimeout(5*time.Minute).WithPolling(time.Second).Should(BeTrue(), "namespace %s is not deleted", testNamespace)
}

// scaleOperator sets the replicas of the operator's Deployment and, for a
// scale-up, waits until a manager is available again.
func scaleOperator(ctx context.Context, replicas int32) {
	list := &appsv1.DeploymentList{}
	Expect(k8sClient.List(ctx, list, client.InNamespace(operatorNamespace))).To(Succeed())
	Expect(list.Items).To(HaveLen(1), "deployments in %s", operatorNamespace)
	name := list.Items[0].Name
	Expect(retry.RetryOnConflict(retry.DefaultRetry, func() error {
		d := &appsv1.Deployment{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: operatorNamespace, Name: name}, d); err != nil {
			return err
		}
		d.Spec.Replicas = ptr.To(replicas)
		return k8sClient.Update(ctx, d)
	})).To(Succeed())
	if replicas == 0 {
		// Killed, not drained: the manager gets no time to finish work.
		grace := int64(0)
		Expect(client.IgnoreNotFound(k8sClient.DeleteAllOf(ctx, &corev1.Pod{}, client.InNamespace(operatorNamespace),
			&client.DeleteAllOfOptions{DeleteOptions: client.DeleteOptions{GracePeriodSeconds: &grace}}))).To(Succeed())
		return
	}
	Eventually(func(ctx context.Context) (int32, error) {
		d := &appsv1.Deployment{}
		err := k8sClient.Get(ctx, client.ObjectKey{Namespace: operatorNamespace, Name: name}, d)
		return d.Status.AvailableReplicas, err
	}).WithContext(ctx).WithTimeout(2 * time.Minute).Should(Equal(replicas))
}

func updateSync(ctx context.Context, name string, mutate func(*thingdbv1.ThingSync)) {
	Expect(retry.RetryOnConflict(retry.DefaultRetry, func() error {
		ts := &thingdbv1.ThingSync{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: testNamespace, Name: name}, ts); err != nil {
			return err
		}
		mutate(ts)
		return k8sClient.Update(ctx, ts)
	})).To(Succeed())
}

// nodeProcesses returns the /proc/PID/status fields of every
// "/thingdb serve" process on this host, by PID.
func nodeProcesses() map[int]map[string]string {
	found := map[int]map[string]string{}
	entries, err := os.ReadDir("/proc")
	Expect(err).NotTo(HaveOccurred())
	for _, entry := range entries {
		pid, err := strconv.Atoi(entry.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", entry.Name(), "cmdline"))
		if err != nil || string(cmdline) != "/thingdb\x00serve\x00" {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/proc", entry.Name(), "status"))
		if err != nil {
			continue
		}
		fields := map[string]string{}
		for _, line := range strings.Split(string(data), "\n") {
			if key, value, ok := strings.Cut(line, ":"); ok {
				fields[key] = strings.TrimSpace(value)
			}
		}
		found[pid] = fields
	}
	return found
}
