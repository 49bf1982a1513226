package controllers_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	thingdbv1 "github.com/thingdb/thingdb/api/v1alpha1"
	"github.com/thingdb/thingdb/ledger"
)

// newThingSync returns a ThingSync of the given members and topology, with
// the interval and batch size the API server would default.
func newThingSync(namespace, name string, members thingdbv1.SyncMembers, topology thingdbv1.SyncTopology) *thingdbv1.ThingSync {
	return &thingdbv1.ThingSync{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: thingdbv1.ThingSyncSpec{
			Members:   members,
			Topology:  topology,
			Interval:  &metav1.Duration{Duration: 30 * time.Second},
			BatchSize: 1000,
		},
	}
}

// createStartedThingNode creates a ThingNode, waits for its Secrets, pauses
// it and writes a random node identity per pod into its status, as if its
// pods had started. The paused controller keeps that status and changes no
// child, and the ThingSync controller pins what the status lists.
func createStartedThingNode(ctx context.Context, namespace, name string, replicas int32, labels map[string]string) []thingdbv1.NodeIdentity {
	tn := &thingdbv1.ThingNode{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: labels},
		Spec: thingdbv1.ThingNodeSpec{
			Replicas: replicas,
			Image:    "thingdb:test",
			Storage:  thingdbv1.StorageSpec{Size: resource.MustParse("1Gi")},
		},
	}
	Expect(k8sClient.Create(ctx, tn)).To(Succeed())
	eventually(ctx, func(g Gomega) {
		for _, suffix := range []string{"-peers", "-sync-token", "-tls"} {
			g.Expect(k8sClient.Get(ctx, key(namespace, name+suffix), &corev1.Secret{})).To(Succeed())
		}
		g.Expect(secretValue(ctx, namespace, name+"-tls", "ca.crt")).NotTo(BeEmpty())
	}).Should(Succeed())

	updateThingNode(ctx, tn, func(tn *thingdbv1.ThingNode) { tn.Spec.Paused = true })
	eventually(ctx, func(g Gomega) {
		g.Expect(k8sClient.Get(ctx, key(namespace, name), tn)).To(Succeed())
		g.Expect(condition(tn, thingdbv1.ConditionReady)).To(HaveField("Reason", thingdbv1.ReasonPaused))
	}).Should(Succeed())

	var nodes []thingdbv1.NodeIdentity
	for ordinal := range replicas {
		public, _, err := ed25519.GenerateKey(rand.Reader)
		Expect(err).NotTo(HaveOccurred())
		nodes = append(nodes, thingdbv1.NodeIdentity{
			Pod: fmt.Sprintf("%s-%d", name, ordinal), NodeID: ledger.NodeID(public),
			SigningKey:   base64.StdEncoding.EncodeToString(public),
			RecipientKey: base64.StdEncoding.EncodeToString(make([]byte, 32)),
		})
	}
	Expect(retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := k8sClient.Get(ctx, key(namespace, name), tn); err != nil {
			return err
		}
		tn.Status.Nodes = nodes
		return k8sClient.Status().Update(ctx, tn)
	})).To(Succeed())
	return nodes
}

var _ = Describe("ThingSync validation", func() {
	var ns string
	BeforeEach(func(ctx SpecContext) { ns = newNamespace(ctx) })

	names := thingdbv1.SyncMembers{Names: []string{"a", "b", "c"}}

	DescribeTable("should reject an invalid spec with a message naming the fix",
		func(ctx SpecContext, mutate func(*thingdbv1.ThingSync), message string) {
			ts := newThingSync(ns, "invalid", names, thingdbv1.SyncTopology{Type: thingdbv1.TopologyMesh})
			mutate(ts)
			err := k8sClient.Create(ctx, ts)
			Expect(err).To(HaveOccurred())
			Expect(err.Error()).To(ContainSubstring(message))
		},
		Entry("names and selector", func(ts *thingdbv1.ThingSync) {
			ts.Spec.Members.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"sync": "x"}}
		}, "set exactly one of members.names and members.selector"),
		Entry("neither names nor selector", func(ts *thingdbv1.ThingSync) {
			ts.Spec.Members = thingdbv1.SyncMembers{}
		}, "set exactly one of members.names and members.selector"),
		Entry("Star without hub", func(ts *thingdbv1.ThingSync) {
			ts.Spec.Topology = thingdbv1.SyncTopology{Type: thingdbv1.TopologyStar}
		}, "topology.hub is required when topology.type is Star"),
		Entry("hub outside the names", func(ts *thingdbv1.ThingSync) {
			ts.Spec.Topology = thingdbv1.SyncTopology{Type: thingdbv1.TopologyStar, Hub: "z"}
		}, "topology.hub must be one of members.names"),
		Entry("hub with Mesh", func(ts *thingdbv1.ThingSync) {
			ts.Spec.Topology.Hub = "a"
		}, "topology.hub is only allowed when topology.type is Star"),
		Entry("pairs with Mesh", func(ts *thingdbv1.ThingSync) {
			ts.Spec.Topology.Pairs = []thingdbv1.SyncPair{{From: "a", To: "b"}}
		}, "topology.pairs is only allowed when topology.type is Pairs"),
		Entry("Pairs without pairs", func(ts *thingdbv1.ThingSync) {
			ts.Spec.Topology = thingdbv1.SyncTopology{Type: thingdbv1.TopologyPairs}
		}, "topology.pairs must list at least one pair"),
		Entry("pair outside the names", func(ts *thingdbv1.ThingSync) {
			ts.Spec.Topology = thingdbv1.SyncTopology{Type: thingdbv1.TopologyPairs, Pairs: []thingdbv1.SyncPair{{From: "a", To: "z"}}}
		}, "every topology.pairs entry must name two of members.names"),
		Entry("pair to itself", func(ts *thingdbv1.ThingSync) {
			ts.Spec.Topology = thingdbv1.SyncTopology{Type: thingdbv1.TopologyPairs, Pairs: []thingdbv1.SyncPair{{From: "a", To: "a"}}}
		}, "a pair needs two different ThingNodes"),
		Entry("interval below 1s", func(ts *thingdbv1.ThingSync) {
			ts.Spec.Interval = &metav1.Duration{Duration: 500 * time.Millisecond}
		}, "interval must be between 1s and 1h"),
		Entry("interval above 1h", func(ts *thingdbv1.ThingSync) {
			ts.Spec.Interval = &metav1.Duration{Duration: 2 * time.Hour}
		}, "interval must be between 1s and 1h"),
		Entry("batch size above 10000", func(ts *thingdbv1.ThingSync) {
			ts.Spec.BatchSize = 10001
		}, "spec.batchSize"),
	)

	It("should accept a Star with a hub among the names and default the rest", func(ctx SpecContext) {
		ts := &thingdbv1.ThingSync{
			ObjectMeta: metav1.ObjectMeta{Name: "star", Namespace: ns},
			Spec: thingdbv1.ThingSyncSpec{
				Members:  names,
				Topology: thingdbv1.SyncTopology{Type: thingdbv1.TopologyStar, Hub: "b"},
			},
		}
		Expect(k8sClient.Create(ctx, ts)).To(Succeed())
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(ts), ts)).To(Succeed())
		Expect(ts.Spec.Interval).To(Equal(&metav1.Duration{Duration: 30 * time.Second}))
		Expect(ts.Spec.BatchSize).To(Equal(int32(1000)))
	})
})

var _ = Describe("ThingSync controller", Ordered, func() {
	var (
		ns         string
		identities = map[string]thingdbv1.NodeIdentity{}
	)

	// peerFile returns the peers.json of ThingNode name as the nodes see it.
	type renderedPeer struct {
		Name, NodeID, SigningKey, CAFile, TokenFile string
	}
	type renderedFile struct {
		Interval  string         `json:"interval"`
		BatchSize int            `json:"batchSize"`
		Peers     []renderedPeer `json:"peers"`
	}
	peerFile := func(ctx context.Context, g Gomega, name string) (renderedFile, map[string][]byte) {
		secret := &corev1.Secret{}
		g.Expect(k8sClient.Get(ctx, key(ns, name+"-peers"), secret)).To(Succeed())
		var file renderedFile
		g.Expect(json.Unmarshal(secret.Data["peers.json"], &file)).To(Succeed())
		return file, secret.Data
	}
	peerNames := func(file renderedFile) []string {
		names := []string{}
		for _, p := range file.Peers {
			names = append(names, p.Name)
		}
		return names
	}
	syncCondition := func(ctx context.Context, g Gomega, name, condType string) *metav1.Condition {
		ts := &thingdbv1.ThingSync{}
		g.Expect(k8sClient.Get(ctx, key(ns, name), ts)).To(Succeed())
		cond := meta.FindStatusCondition(ts.Status.Conditions, condType)
		g.Expect(cond).NotTo(BeNil())
		return cond
	}

	BeforeAll(func(ctx SpecContext) {
		ns = newNamespace(ctx)
		stop := startSyncManager(ns)
		DeferCleanup(stop)

		By("creating ThingNodes a, b and c with identities in their status")
		for _, name := range []string{"a", "b", "c"} {
			identities[name] = createStartedThingNode(ctx, ns, name, 1, map[string]string{"sync": "star"})[0]
		}
	})

	It("should keep the operator's export and read tokens in the token records", func(ctx SpecContext) {
		hashes := &corev1.Secret{}
		Expect(k8sClient.Get(ctx, key(ns, "a-token-hashes"), hashes)).To(Succeed())
		for file, want := range map[string]struct{ key, scope string }{
			"thingdb.sync.json":     {"token", "export"},
			"thingdb.operator.json": {"status-token", "read"},
		} {
			var record struct {
				Name   string   `json:"name"`
				Scopes []string `json:"scopes"`
				SHA256 string   `json:"sha256"`
			}
			Expect(json.Unmarshal(hashes.Data[file], &record)).To(Succeed(), "record %s", file)
			Expect(record.Name + ".json").To(Equal(file))
			Expect(record.Scopes).To(Equal([]string{want.scope}))
			token := secretValue(ctx, ns, "a-sync-token", want.key)
			Expect(token).To(HaveLen(43))
			Expect(record.SHA256).To(Equal(tokenHash(string(token))))
		}
	})

	It("should render one direction of a Pairs topology and leave the others empty", func(ctx SpecContext) {
		ts := newThingSync(ns, "pairs", thingdbv1.SyncMembers{Names: []string{"a", "b"}},
			thingdbv1.SyncTopology{Type: thingdbv1.TopologyPairs, Pairs: []thingdbv1.SyncPair{{From: "a", To: "b"}}})
		Expect(k8sClient.Create(ctx, ts)).To(Succeed())

		eventually(ctx, func(g Gomega) {
			file, data := peerFile(ctx, g, "b")
			g.Expect(peerNames(file)).To(Equal([]string{"a-0"}))
			g.Expect(file.Peers[0].NodeID).To(Equal(identities["a"].NodeID))
			g.Expect(file.Peers[0].SigningKey).To(Equal(identities["a"].SigningKey))
			g.Expect(file.Interval).To(Equal("30s"))
			g.Expect(data[file.Peers[0].CAFile]).To(Equal(secretValue(ctx, ns, "a-tls", "ca.crt")))
			g.Expect(data[file.Peers[0].TokenFile]).To(Equal(secretValue(ctx, ns, "a-sync-token", "token")))
			for _, name := range []string{"a", "c"} {
				_, data := peerFile(ctx, g, name)
				g.Expect(string(data["peers.json"])).To(Equal(`{"peers":[]}`), "peer file of %s", name)
			}
			g.Expect(syncCondition(ctx, g, "pairs", thingdbv1.ConditionReady)).To(HaveField("Status", metav1.ConditionTrue))
		}).Should(Succeed())

		By("reporting the pods whose sync status cannot be read")
		eventually(ctx, func(g Gomega) {
			synced := syncCondition(ctx, g, "pairs", thingdbv1.ConditionSynced)
			g.Expect(synced.Status).To(Equal(metav1.ConditionUnknown))
			g.Expect(synced.Reason).To(Equal(thingdbv1.ReasonStatusUnavailable))
			g.Expect(synced.Message).To(ContainSubstring("b-0"))
		}).Should(Succeed())
	})

	It("should render the union of two ThingSyncs with the shortest interval", func(ctx SpecContext) {
		star := newThingSync(ns, "star", thingdbv1.SyncMembers{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"sync": "star"}}},
			thingdbv1.SyncTopology{Type: thingdbv1.TopologyStar, Hub: "c"})
		star.Spec.Interval = &metav1.Duration{Duration: 10 * time.Second}
		star.Spec.BatchSize = 50
		Expect(k8sClient.Create(ctx, star)).To(Succeed())

		eventually(ctx, func(g Gomega) {
			for name, want := range map[string][]string{"a": {"c-0"}, "b": {"a-0", "c-0"}, "c": {"a-0", "b-0"}} {
				file, _ := peerFile(ctx, g, name)
				g.Expect(peerNames(file)).To(Equal(want), "peers of %s", name)
				g.Expect(file.Interval).To(Equal("10s"))
				g.Expect(file.BatchSize).To(Equal(50))
			}
			ts := &thingdbv1.ThingSync{}
			g.Expect(k8sClient.Get(ctx, key(ns, "star"), ts)).To(Succeed())
			g.Expect(ts.Status.Members).To(Equal([]string{"a", "b", "c"}))
			g.Expect(ts.Status.MemberCount).To(Equal(int32(3)))
		}).Should(Succeed())
	})

	It("should drop the peers of a suspended ThingSync", func(ctx SpecContext) {
		star := &thingdbv1.ThingSync{}
		Expect(retry.RetryOnConflict(retry.DefaultRetry, func() error {
			if err := k8sClient.Get(ctx, key(ns, "star"), star); err != nil {
				return err
			}
			star.Spec.Suspend = true
			return k8sClient.Update(ctx, star)
		})).To(Succeed())

		eventually(ctx, func(g Gomega) {
			file, _ := peerFile(ctx, g, "b")
			g.Expect(peerNames(file)).To(Equal([]string{"a-0"}))
			g.Expect(file.Interval).To(Equal("30s"))
			for _, name := range []string{"a", "c"} {
				_, data := peerFile(ctx, g, name)
				g.Expect(string(data["peers.json"])).To(Equal(`{"peers":[]}`), "peer file of %s", name)
			}
			ready := syncCondition(ctx, g, "star", thingdbv1.ConditionReady)
			g.Expect(ready.Reason).To(Equal(thingdbv1.ReasonSuspended))
		}).Should(Succeed())
	})

	It("should empty the peer files when the last ThingSync is deleted", func(ctx SpecContext) {
		for _, name := range []string{"pairs", "star"} {
			Expect(k8sClient.Delete(ctx, &thingdbv1.ThingSync{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}})).To(Succeed())
		}
		eventually(ctx, func(g Gomega) {
			for _, name := range []string{"a", "b", "c"} {
				_, data := peerFile(ctx, g, name)
				g.Expect(data).To(HaveLen(1))
				g.Expect(string(data["peers.json"])).To(Equal(`{"peers":[]}`), "peer file of %s", name)
			}
		}).Should(Succeed())
	})

	It("should wait for missing members and identities", func(ctx SpecContext) {
		ts := newThingSync(ns, "missing", thingdbv1.SyncMembers{Names: []string{"a", "zz"}}, thingdbv1.SyncTopology{Type: thingdbv1.TopologyMesh})
		Expect(k8sClient.Create(ctx, ts)).To(Succeed())
		eventually(ctx, func(g Gomega) {
			ready := syncCondition(ctx, g, "missing", thingdbv1.ConditionReady)
			g.Expect(ready.Status).To(Equal(metav1.ConditionFalse))
			g.Expect(ready.Reason).To(Equal(thingdbv1.ReasonMembersNotFound))
			g.Expect(ready.Message).To(ContainSubstring("zz"))
		}).Should(Succeed())

		By("creating the missing ThingNode, whose pod has no identity yet")
		tn := &thingdbv1.ThingNode{
			ObjectMeta: metav1.ObjectMeta{Name: "zz", Namespace: ns},
			Spec:       thingdbv1.ThingNodeSpec{Image: "thingdb:test", Storage: thingdbv1.StorageSpec{Size: resource.MustParse("1Gi")}},
		}
		Expect(k8sClient.Create(ctx, tn)).To(Succeed())
		eventually(ctx, func(g Gomega) {
			ready := syncCondition(ctx, g, "missing", thingdbv1.ConditionReady)
			g.Expect(ready.Reason).To(Equal(thingdbv1.ReasonIdentitiesPending))
			g.Expect(ready.Message).To(ContainSubstring("zz-0"))
			file, _ := peerFile(ctx, g, "zz")
			g.Expect(peerNames(file)).To(Equal([]string{"a-0"}), "the peers already known are rendered")
		}).Should(Succeed())
	})

	It("should let the replicas of one ThingNode pull from each other", func(ctx SpecContext) {
		createStartedThingNode(ctx, ns, "r", 2, nil)
		ts := newThingSync(ns, "replicas", thingdbv1.SyncMembers{Names: []string{"r"}}, thingdbv1.SyncTopology{Type: thingdbv1.TopologyMesh})
		Expect(k8sClient.Create(ctx, ts)).To(Succeed())
		eventually(ctx, func(g Gomega) {
			file, _ := peerFile(ctx, g, "r")
			g.Expect(peerNames(file)).To(Equal([]string{"r-0", "r-1"}), "one file for both pods, each skipping its own entry")
			g.Expect(k8sClient.Get(ctx, key(ns, "replicas"), ts)).To(Succeed())
			g.Expect(ts.Status.Pairs).To(HaveLen(1))
			g.Expect(ts.Status.Pairs[0]).To(And(HaveField("From", "r"), HaveField("To", "r")))
		}).Should(Succeed())
	})
})
