package controllers_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	thingdbv1 "github.com/thingdb/thingdb/api/v1alpha1"
	"github.com/thingdb/thingdb/ledger"
)

var _ = Describe("ThingSync", Label("integration"), Ordered, func() {
	var (
		ns         string
		thingNodes []*thingdbv1.ThingNode
		ts         *thingdbv1.ThingSync
		cluster    *podCluster
		stopSync   func()
		// written counts the things each spec step has put, for unique ids.
		written int
	)

	byName := func(name string) *thingdbv1.ThingNode {
		for _, tn := range thingNodes {
			if tn.Name == name {
				return tn
			}
		}
		Fail("no ThingNode " + name)
		return nil
	}
	podOf := func(name string) *podProcess {
		for _, pod := range cluster.pods {
			if pod.pod == name+"-0" {
				return pod
			}
		}
		Fail("no pod process for " + name)
		return nil
	}
	put := func(ctx context.Context, name string) {
		written++
		putThing(ctx, byName(name), name+"-0", fmt.Sprintf("thing-%d", written))
	}

	// ledgers returns each node's lines by origin:sequence and fails on a
	// line that appears twice.
	ledgers := func(ctx context.Context, names ...string) (map[string]map[string]string, error) {
		all := map[string]map[string]string{}
		for _, name := range names {
			lines, err := exportedLines(ctx, byName(name), name+"-0")
			if err != nil {
				return nil, err
			}
			all[name] = map[string]string{}
			for _, line := range lines {
				var entry ledgerLine
				if err := json.Unmarshal([]byte(line), &entry); err != nil {
					return nil, fmt.Errorf("decode a line of %s: %w", name, err)
				}
				id := fmt.Sprintf("%s:%d", entry.Origin, entry.Sequence)
				if _, dup := all[name][id]; dup {
					return nil, fmt.Errorf("node %s holds entry %s twice", name, id)
				}
				all[name][id] = line
			}
		}
		return all, nil
	}

	// expectConverged waits until every named node holds the same lines,
	// byte for byte, want of them in all.
	expectConverged := func(ctx context.Context, want int, names ...string) {
		Eventually(ctx, func(g Gomega) {
			all, err := ledgers(ctx, names...)
			g.Expect(err).NotTo(HaveOccurred())
			first := all[names[0]]
			g.Expect(first).To(HaveLen(want), "entries on %s", names[0])
			for _, name := range names[1:] {
				g.Expect(all[name]).To(Equal(first), "the lines on %s, with their origin, sequence and signature, equal those on %s", name, names[0])
			}
		}).WithTimeout(90 * time.Second).WithPolling(time.Second).Should(Succeed())
	}

	expectSynced := func(ctx context.Context, pairs int) {
		Eventually(ctx, func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(ts), ts)).To(Succeed())
			synced := meta.FindStatusCondition(ts.Status.Conditions, thingdbv1.ConditionSynced)
			g.Expect(synced).NotTo(BeNil())
			g.Expect(synced.Status).To(Equal(metav1.ConditionTrue), "Synced: %s: %s", synced.Reason, synced.Message)
			g.Expect(ts.Status.ObservedGeneration).To(Equal(ts.Generation))
			g.Expect(ts.Status.LagEntries).To(BeZero())
			g.Expect(ts.Status.LastSyncTime).NotTo(BeNil())
			g.Expect(ts.Status.Pairs).To(HaveLen(pairs))
			for _, p := range ts.Status.Pairs {
				g.Expect(p.LagEntries).To(BeZero(), "lag of %s to %s", p.From, p.To)
				g.Expect(p.LastSuccess).NotTo(BeNil(), "last success of %s to %s", p.From, p.To)
				g.Expect(p.LastError).To(BeEmpty())
			}
		}).WithTimeout(90 * time.Second).WithPolling(time.Second).Should(Succeed())
	}

	// peerNames returns the peers a pod's node runs the sync loop with.
	peerNames := func(ctx context.Context, name string) ([]string, error) {
		tn := byName(name)
		token := secretValue(ctx, tn.Namespace, tn.Name+"-sync-token", "status-token")
		status, body, err := nodeAPI(ctx, tn, name+"-0", http.MethodGet, "/v1/sync/status", token, nil)
		if err != nil {
			return nil, err
		}
		if status != http.StatusOK {
			return nil, fmt.Errorf("sync status of %s: status %d", name, status)
		}
		var reply struct {
			Peers []struct {
				Name string `json:"name"`
			} `json:"peers"`
		}
		if err := json.Unmarshal(body, &reply); err != nil {
			return nil, err
		}
		var names []string
		for _, p := range reply.Peers {
			names = append(names, p.Name)
		}
		return names, nil
	}

	BeforeAll(func(ctx SpecContext) {
		ns = newNamespace(ctx)
		stopSync = startSyncManager(ns)
		// A spec restarts the manager, so stop whichever runs last.
		DeferCleanup(func() { stopSync() })

		By("applying the sample ThingNodes and Mesh ThingSync from config/samples")
		for _, obj := range loadSampleObjects("thingdb_v1alpha1_thingsync_mesh.yaml", ns) {
			Expect(k8sClient.Create(ctx, obj)).To(Succeed())
			switch obj.GetKind() {
			case "ThingNode":
				tn := &thingdbv1.ThingNode{}
				Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(obj), tn)).To(Succeed())
				thingNodes = append(thingNodes, tn)
			case "ThingSync":
				ts = &thingdbv1.ThingSync{}
				Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(obj), ts)).To(Succeed())
			default:
				Fail("the sample contains a " + obj.GetKind() + ", which this test does not expect")
			}
		}
		Expect(thingNodes).To(HaveLen(3))
		Expect(ts).NotTo(BeNil())

		By("waiting for the StatefulSets and the Secrets they mount")
		for _, tn := range thingNodes {
			eventually(ctx, func(g Gomega) {
				g.Expect(k8sClient.Get(ctx, key(ns, tn.Name), &appsv1.StatefulSet{})).To(Succeed())
				for _, name := range []string{"-tls", "-passphrase", "-token-hashes", "-peers", "-sync-token"} {
					g.Expect(k8sClient.Get(ctx, key(ns, tn.Name+name), &corev1.Secret{})).To(Succeed(), "Secret %s%s", tn.Name, name)
				}
				g.Expect(secretValue(ctx, ns, tn.Name+"-tls", "ca.crt")).NotTo(BeEmpty())
			}).Should(Succeed())
		}

		By("starting one thingdb serve per pod and the kubelet stand-in")
		cluster = preparePods(ctx, ns, thingNodes)
		cluster.startKubelet(ctx)
		for _, pod := range cluster.pods {
			pod.start(ctx)
			DeferCleanup(pod.stop)
		}
		for _, tn := range thingNodes {
			startPods(ctx, tn)
		}
	})

	It("should render a peer file per member that pins every other member", func(ctx SpecContext) {
		Eventually(ctx, func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(ts), ts)).To(Succeed())
			ready := meta.FindStatusCondition(ts.Status.Conditions, thingdbv1.ConditionReady)
			g.Expect(ready).NotTo(BeNil())
			g.Expect(ready.Status).To(Equal(metav1.ConditionTrue), "Ready: %s: %s", ready.Reason, ready.Message)
		}).WithTimeout(60 * time.Second).WithPolling(250 * time.Millisecond).Should(Succeed())
		Expect(ts.Status.Members).To(Equal([]string{"ledger-a", "ledger-b", "ledger-c"}))

		for _, tn := range thingNodes {
			Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(tn), tn)).To(Succeed())
			secret := &corev1.Secret{}
			Expect(k8sClient.Get(ctx, key(ns, tn.Name+"-peers"), secret)).To(Succeed())
			var file struct {
				Interval  string `json:"interval"`
				BatchSize int    `json:"batchSize"`
				Peers     []struct {
					Name, URL, NodeID, SigningKey, RecipientKey, CAFile, TokenFile string
				} `json:"peers"`
			}
			Expect(json.Unmarshal(secret.Data["peers.json"], &file)).To(Succeed())
			Expect(file.Interval).To(Equal("5s"))
			Expect(file.BatchSize).To(Equal(1000))
			Expect(file.Peers).To(HaveLen(2))
			for _, peer := range file.Peers {
				Expect(peer.Name).NotTo(Equal(tn.Name + "-0"))
				owner := byName(peer.Name[:len(peer.Name)-2])
				Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(owner), owner)).To(Succeed())
				Expect(owner.Status.Nodes).To(HaveLen(1))
				Expect(peer.URL).To(Equal(fmt.Sprintf("https://%s.%s-headless.%s.svc:8443", peer.Name, owner.Name, ns)))
				Expect(peer.NodeID).To(Equal(owner.Status.Nodes[0].NodeID))
				Expect(peer.SigningKey).To(Equal(owner.Status.Nodes[0].SigningKey))
				Expect(peer.RecipientKey).To(Equal(owner.Status.Nodes[0].RecipientKey))
				Expect(secret.Data[peer.CAFile]).To(Equal(secretValue(ctx, ns, owner.Name+"-tls", "ca.crt")))
				Expect(secret.Data[peer.TokenFile]).To(Equal(secretValue(ctx, ns, owner.Name+"-sync-token", "token")))
			}
		}
	})

	It("should bring the entries of every node to every other node", func(ctx SpecContext) {
		for _, name := range []string{"ledger-a", "ledger-b", "ledger-c"} {
			put(ctx, name)
			put(ctx, name)
		}
		expectConverged(ctx, 6, "ledger-a", "ledger-b", "ledger-c")
		all, err := ledgers(ctx, "ledger-a")
		Expect(err).NotTo(HaveOccurred())
		origins := map[string]int{}
		for _, line := range all["ledger-a"] {
			var entry ledgerLine
			Expect(json.Unmarshal([]byte(line), &entry)).To(Succeed())
			Expect(entry.Signature).NotTo(BeEmpty())
			origins[entry.Origin]++
		}
		Expect(origins).To(HaveLen(3), "two entries from each origin")
		for _, count := range origins {
			Expect(count).To(Equal(2))
		}
		expectSynced(ctx, 6)
	})

	It("should catch up a restarted node without duplicates", func(ctx SpecContext) {
		By("stopping ledger-c and writing on the others")
		podOf("ledger-c").stop()
		put(ctx, "ledger-a")
		put(ctx, "ledger-b")
		put(ctx, "ledger-b")
		expectConverged(ctx, 9, "ledger-a", "ledger-b")

		By("restarting ledger-c on its ledger")
		podOf("ledger-c").start(ctx)
		expectConverged(ctx, 9, "ledger-a", "ledger-b", "ledger-c")
		expectSynced(ctx, 6)
	})

	It("should keep syncing while the operator is stopped", func(ctx SpecContext) {
		stopSync()
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(ts), ts)).To(Succeed())
		before := ts.ResourceVersion

		put(ctx, "ledger-c")
		put(ctx, "ledger-a")
		expectConverged(ctx, 11, "ledger-a", "ledger-b", "ledger-c")

		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(ts), ts)).To(Succeed())
		Expect(ts.ResourceVersion).To(Equal(before), "nothing wrote the ThingSync while its controller was stopped")
		stopSync = startSyncManager(ns)
	})

	It("should follow a change to Star in the peer files without restarts", func(ctx SpecContext) {
		pids := map[string]int{}
		for _, pod := range cluster.pods {
			pids[pod.pod], _ = pod.pid()
		}
		generations := map[string]int64{}
		for _, tn := range thingNodes {
			sts := &appsv1.StatefulSet{}
			Expect(k8sClient.Get(ctx, key(ns, tn.Name), sts)).To(Succeed())
			generations[tn.Name] = sts.Generation
		}

		Expect(retry.RetryOnConflict(retry.DefaultRetry, func() error {
			if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(ts), ts); err != nil {
				return err
			}
			ts.Spec.Topology = thingdbv1.SyncTopology{Type: thingdbv1.TopologyStar, Hub: "ledger-a"}
			return k8sClient.Update(ctx, ts)
		})).To(Succeed())

		By("checking the peer files the pods see")
		Eventually(ctx, func(g Gomega) {
			for name, want := range map[string][]string{
				"ledger-a": {"ledger-b-0", "ledger-c-0"},
				"ledger-b": {"ledger-a-0"},
				"ledger-c": {"ledger-a-0"},
			} {
				data, err := os.ReadFile(podOf(name).mountedFile(name+"-peers", "peers.json"))
				g.Expect(err).NotTo(HaveOccurred())
				var file struct {
					Peers []struct {
						Name string `json:"name"`
					} `json:"peers"`
				}
				g.Expect(json.Unmarshal(data, &file)).To(Succeed())
				var names []string
				for _, p := range file.Peers {
					names = append(names, p.Name)
				}
				g.Expect(names).To(Equal(want), "peer file of %s", name)
			}
		}).WithTimeout(30 * time.Second).WithPolling(250 * time.Millisecond).Should(Succeed())

		By("checking that the running nodes follow")
		Eventually(ctx, func(g Gomega) {
			for name, want := range map[string][]string{
				"ledger-a": {"ledger-b-0", "ledger-c-0"},
				"ledger-b": {"ledger-a-0"},
				"ledger-c": {"ledger-a-0"},
			} {
				got, err := peerNames(ctx, name)
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(got).To(Equal(want), "peers of the running %s", name)
			}
		}).WithTimeout(30 * time.Second).WithPolling(500 * time.Millisecond).Should(Succeed())

		put(ctx, "ledger-b")
		expectConverged(ctx, 12, "ledger-a", "ledger-b", "ledger-c")
		expectSynced(ctx, 4)

		for _, pod := range cluster.pods {
			pid, running := pod.pid()
			Expect(running).To(BeTrue(), "pod %s still runs", pod.pod)
			Expect(pid).To(Equal(pids[pod.pod]), "pod %s was not restarted", pod.pod)
		}
		for _, tn := range thingNodes {
			sts := &appsv1.StatefulSet{}
			Expect(k8sClient.Get(ctx, key(ns, tn.Name), sts)).To(Succeed())
			Expect(sts.Generation).To(Equal(generations[tn.Name]), "the pod template of %s did not change", tn.Name)
		}
	})

	It("should report a peer that does not hold the pinned key", func(ctx SpecContext) {
		By("pinning a key for ledger-b-0 that its process does not hold")
		public, _, err := ed25519.GenerateKey(rand.Reader)
		Expect(err).NotTo(HaveOccurred())
		recipient := make([]byte, 32)
		_, err = rand.Read(recipient)
		Expect(err).NotTo(HaveOccurred())
		tnB := byName("ledger-b")
		Expect(retry.RetryOnConflict(retry.DefaultRetry, func() error {
			if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(tnB), tnB); err != nil {
				return err
			}
			tnB.Status.Nodes[0].NodeID = ledger.NodeID(public)
			tnB.Status.Nodes[0].SigningKey = base64.StdEncoding.EncodeToString(public)
			tnB.Status.Nodes[0].RecipientKey = base64.StdEncoding.EncodeToString(recipient)
			return k8sClient.Status().Update(ctx, tnB)
		})).To(Succeed())

		Eventually(ctx, func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(ts), ts)).To(Succeed())
			fork := meta.FindStatusCondition(ts.Status.Conditions, thingdbv1.ConditionForkDetected)
			g.Expect(fork).NotTo(BeNil())
			g.Expect(fork.Status).To(Equal(metav1.ConditionTrue))
			g.Expect(fork.Reason).To(Equal(thingdbv1.ReasonKeyMismatch))
			g.Expect(fork.Message).To(ContainSubstring("ledger-b-0"))
			synced := meta.FindStatusCondition(ts.Status.Conditions, thingdbv1.ConditionSynced)
			g.Expect(synced.Status).To(Equal(metav1.ConditionFalse))
			g.Expect(synced.Reason).To(Equal(thingdbv1.ReasonSyncFailing))
			var pairFromB *thingdbv1.SyncPairStatus
			for i := range ts.Status.Pairs {
				if ts.Status.Pairs[i].From == "ledger-b" && ts.Status.Pairs[i].To == "ledger-a" {
					pairFromB = &ts.Status.Pairs[i]
				}
			}
			g.Expect(pairFromB).NotTo(BeNil())
			g.Expect(pairFromB.LastErrorReason).To(Equal("key_mismatch"))
		}).WithTimeout(60 * time.Second).WithPolling(500 * time.Millisecond).Should(Succeed())

		By("recording a Warning event")
		Eventually(ctx, func(g Gomega) {
			var list eventsv1.EventList
			g.Expect(k8sClient.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
			found := false
			for _, event := range list.Items {
				if event.Regarding.Name == ts.Name && event.Reason == thingdbv1.EventForkDetected && event.Type == corev1.EventTypeWarning {
					found = true
				}
			}
			g.Expect(found).To(BeTrue())
		}).WithTimeout(10 * time.Second).WithPolling(250 * time.Millisecond).Should(Succeed())

		By("importing nothing from the mismatched peer")
		put(ctx, "ledger-b")
		Consistently(ctx, func(g Gomega) {
			all, err := ledgers(ctx, "ledger-a", "ledger-b")
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(all["ledger-b"]).To(HaveLen(13))
			g.Expect(all["ledger-a"]).To(HaveLen(12))
		}).WithTimeout(12 * time.Second).WithPolling(time.Second).Should(Succeed())
	})
})
