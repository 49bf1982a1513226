package controllers_test

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	thingdbv1 "github.com/thingdb/thingdb/api/v1alpha1"
	"github.com/thingdb/thingdb/internal/pki"
)

const operatorCASample = "thingdb_v1alpha1_thingnode.yaml"

// hotLoopReconciles is how many reconciles of a converged ThingNode the
// no-hot-loop checks run.
const hotLoopReconciles = 20

// condition returns the condition of the stored ThingNode, or nil.
func condition(tn *thingdbv1.ThingNode, conditionType string) *metav1.Condition {
	return meta.FindStatusCondition(tn.Status.Conditions, conditionType)
}

// tokenHash returns the hex SHA-256 of token, as the token records hold it.
func tokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

var _ = Describe("ThingNode controller", func() {
	var ns string

	BeforeEach(func(ctx SpecContext) {
		ns = newNamespace(ctx)
	})

	Context("when the OperatorCA sample is applied", func() {
		var tn *thingdbv1.ThingNode

		BeforeEach(func(ctx SpecContext) {
			tn = loadSample(operatorCASample, ns)
			Expect(k8sClient.Create(ctx, tn)).To(Succeed())
		})

		It("should create every child with the expected spec", func(ctx SpecContext) {
			By("rendering the StatefulSet")
			sts := &appsv1.StatefulSet{}
			eventually(ctx, func() error { return k8sClient.Get(ctx, key(ns, tn.Name), sts) }).Should(Succeed())
			Expect(metav1.IsControlledBy(sts, tn)).To(BeTrue())
			Expect(*sts.Spec.Replicas).To(Equal(int32(3)))
			Expect(sts.Spec.ServiceName).To(Equal(tn.Name + "-headless"))
			Expect(sts.Spec.PersistentVolumeClaimRetentionPolicy.WhenDeleted).To(Equal(appsv1.RetainPersistentVolumeClaimRetentionPolicyType))
			Expect(sts.Spec.PersistentVolumeClaimRetentionPolicy.WhenScaled).To(Equal(appsv1.RetainPersistentVolumeClaimRetentionPolicyType))

			claim := sts.Spec.VolumeClaimTemplates[0]
			Expect(claim.OwnerReferences).To(BeEmpty())
			Expect(claim.Spec.Resources.Requests.Storage().Equal(resource.MustParse("2Gi"))).To(BeTrue())

			pod := sts.Spec.Template.Spec
			Expect(pod.SecurityContext.RunAsNonRoot).To(Equal(ptr.To(true)))
			Expect(pod.SecurityContext.SeccompProfile.Type).To(Equal(corev1.SeccompProfileTypeRuntimeDefault))
			Expect(pod.AutomountServiceAccountToken).To(Equal(ptr.To(false)))
			Expect(pod.Containers).To(HaveLen(1))
			container := pod.Containers[0]
			Expect(container.Image).To(Equal("thingdb:latest"))
			Expect(container.Command).To(Equal([]string{"/thingdb", "serve"}))
			Expect(container.SecurityContext.ReadOnlyRootFilesystem).To(Equal(ptr.To(true)))
			Expect(container.SecurityContext.AllowPrivilegeEscalation).To(Equal(ptr.To(false)))
			Expect(container.SecurityContext.Capabilities.Drop).To(ConsistOf(corev1.Capability("ALL")))
			Expect(container.LivenessProbe.HTTPGet.Path).To(Equal("/healthz"))
			Expect(container.LivenessProbe.HTTPGet.Scheme).To(Equal(corev1.URISchemeHTTPS))
			Expect(container.ReadinessProbe.HTTPGet.Path).To(Equal("/readyz"))
			Expect(container.Resources.Limits.Memory().Equal(resource.MustParse("512Mi"))).To(BeTrue())
			env := map[string]string{}
			for _, e := range container.Env {
				env[e.Name] = e.Value
			}
			Expect(env).To(HaveKeyWithValue("THINGDB_LISTEN", ":8443"))
			Expect(env).To(HaveKeyWithValue("THINGDB_DURABILITY", "batch"))
			Expect(env).To(HaveKeyWithValue("THINGDB_PASSPHRASE_FILE", "/etc/thingdb/passphrase/passphrase"))
			Expect(env).To(HaveKeyWithValue("THINGDB_TLS_DIR", "/etc/thingdb/tls"))
			Expect(env).To(HaveKeyWithValue("THINGDB_TOKEN_DIR", "/etc/thingdb/tokens"))
			Expect(env).To(HaveKeyWithValue("THINGDB_PEERS_FILE", "/etc/thingdb/peers/peers.json"))
			Expect(env).To(HaveKey("THINGDB_DATA_DIR"))
			Expect(env).To(HaveKeyWithValue("THINGDB_SEAL_TO_PEERS", "false"))

			By("rendering the headless and client Services")
			headless := &corev1.Service{}
			eventually(ctx, func() error { return k8sClient.Get(ctx, key(ns, tn.Name+"-headless"), headless) }).Should(Succeed())
			Expect(headless.Spec.ClusterIP).To(Equal(corev1.ClusterIPNone))
			Expect(headless.Spec.PublishNotReadyAddresses).To(BeTrue())
			clientSvc := &corev1.Service{}
			Expect(k8sClient.Get(ctx, key(ns, tn.Name), clientSvc)).To(Succeed())
			Expect(clientSvc.Spec.Type).To(Equal(corev1.ServiceTypeClusterIP))
			Expect(clientSvc.Spec.Ports[0].Port).To(Equal(int32(8443)))

			By("generating the passphrase and token Secrets once")
			passphrase := &corev1.Secret{}
			Expect(k8sClient.Get(ctx, key(ns, tn.Name+"-passphrase"), passphrase)).To(Succeed())
			Expect(passphrase.Data["passphrase"]).To(HaveLen(43))
			Expect(passphrase.OwnerReferences).To(BeEmpty(), "a retained ledger needs its passphrase after the ThingNode is gone")
			hashes := &corev1.Secret{}
			eventually(ctx, func() error { return k8sClient.Get(ctx, key(ns, tn.Name+"-token-hashes"), hashes) }).Should(Succeed())
			for _, token := range []string{"ci", "sync"} {
				secret := &corev1.Secret{}
				Expect(k8sClient.Get(ctx, key(ns, tn.Name+"-token-"+token), secret)).To(Succeed())
				Expect(secret.Data["token"]).To(HaveLen(43))
				var record struct {
					Name   string   `json:"name"`
					Scopes []string `json:"scopes"`
					SHA256 string   `json:"sha256"`
				}
				Expect(json.Unmarshal(hashes.Data[token+".json"], &record)).To(Succeed())
				Expect(record.Name).To(Equal(token))
				Expect(record.SHA256).To(Equal(tokenHash(string(secret.Data["token"]))))
				Expect(string(hashes.Data[token+".json"])).NotTo(ContainSubstring(string(secret.Data["token"])))
			}

			By("creating an empty peer file")
			peers := &corev1.Secret{}
			Expect(k8sClient.Get(ctx, key(ns, tn.Name+"-peers"), peers)).To(Succeed())
			Expect(string(peers.Data["peers.json"])).To(MatchJSON(`{"peers":[]}`))

			By("issuing a certificate for every pod and Service name from the operator CA")
			tlsSecret := &corev1.Secret{}
			Expect(k8sClient.Get(ctx, key(ns, tn.Name+"-tls"), tlsSecret)).To(Succeed())
			pair, err := pki.ParseKeyPair(tlsSecret.Data["tls.crt"], tlsSecret.Data["tls.key"])
			Expect(err).NotTo(HaveOccurred())
			roots, err := pki.CertPool(tlsSecret.Data["ca.crt"])
			Expect(err).NotTo(HaveOccurred())
			for _, host := range []string{
				tn.Name, tn.Name + "." + ns + ".svc.cluster.local",
				tn.Name + "-0." + tn.Name + "-headless." + ns + ".svc",
				tn.Name + "-2." + tn.Name + "-headless." + ns + ".svc.cluster.local",
			} {
				_, err := pair.Cert.Verify(x509.VerifyOptions{DNSName: host, Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
				Expect(err).NotTo(HaveOccurred(), "certificate for %s", host)
			}

			By("adding a PodDisruptionBudget for three replicas")
			pdb := &policyv1.PodDisruptionBudget{}
			Expect(k8sClient.Get(ctx, key(ns, tn.Name), pdb)).To(Succeed())
			Expect(pdb.Spec.MaxUnavailable.IntValue()).To(Equal(1))

			By("reporting TLS ready and the pods not ready yet")
			eventually(ctx, func(g Gomega) {
				g.Expect(k8sClient.Get(ctx, key(ns, tn.Name), tn)).To(Succeed())
				g.Expect(tn.Status.ObservedGeneration).To(Equal(tn.Generation))
				g.Expect(condition(tn, thingdbv1.ConditionTLSReady)).To(HaveField("Status", metav1.ConditionTrue))
				g.Expect(condition(tn, thingdbv1.ConditionReady)).To(HaveField("Reason", thingdbv1.ReasonReplicasNotReady))
				g.Expect(condition(tn, thingdbv1.ConditionProgressing)).To(HaveField("Status", metav1.ConditionTrue))
				g.Expect(condition(tn, thingdbv1.ConditionDegraded)).To(HaveField("Status", metav1.ConditionFalse))
			}).Should(Succeed())
		})

		It("should become Ready with every node's identity and then write nothing", func(ctx SpecContext) {
			// The StatefulSet is created after the TLS Secret, and startNodes reads both.
			eventually(ctx, func() error { return k8sClient.Get(ctx, key(ns, tn.Name), &appsv1.StatefulSet{}) }).Should(Succeed())
			startNodes(ctx, tn)
			startPods(ctx, tn)

			eventually(ctx, func(g Gomega) {
				g.Expect(k8sClient.Get(ctx, key(ns, tn.Name), tn)).To(Succeed())
				g.Expect(condition(tn, thingdbv1.ConditionReady)).To(HaveField("Status", metav1.ConditionTrue))
				g.Expect(tn.Status.ReadyReplicas).To(Equal(int32(3)))
				g.Expect(tn.Status.Nodes).To(HaveLen(3))
			}).Should(Succeed())
			nodeIDs := map[string]bool{}
			for _, node := range tn.Status.Nodes {
				Expect(node).To(Equal(readIdentity(ctx, tn, node.Pod)))
				nodeIDs[node.NodeID] = true
			}
			Expect(nodeIDs).To(HaveLen(3), "each pod has a ledger of its own")
			Expect(condition(tn, thingdbv1.ConditionProgressing)).To(HaveField("Reason", thingdbv1.ReasonRolloutComplete))

			By("reconciling the converged ThingNode again")
			settled := func() int {
				before := writes.Count(ns)
				Consistently(ctx, func() int { return writes.Count(ns) }).WithTimeout(time.Second).Should(Equal(before))
				return before
			}
			before := settled()
			Expect(k8sClient.Get(ctx, key(ns, tn.Name), tn)).To(Succeed())
			statusBefore := tn.Status.DeepCopy()
			versionBefore := tn.ResourceVersion
			for range hotLoopReconciles {
				_, err := reconciler.Reconcile(ctx, ctrl.Request{NamespacedName: key(ns, tn.Name)})
				Expect(err).NotTo(HaveOccurred())
			}
			Expect(writes.Count(ns)).To(Equal(before), "a reconcile with nothing to change made API writes")
			Expect(k8sClient.Get(ctx, key(ns, tn.Name), tn)).To(Succeed())
			Expect(tn.ResourceVersion).To(Equal(versionBefore))
			Expect(tn.Status).To(Equal(*statusBefore))
		})

		It("should propagate a spec change", func(ctx SpecContext) {
			eventually(ctx, func() error { return k8sClient.Get(ctx, key(ns, tn.Name+"-tls"), &corev1.Secret{}) }).Should(Succeed())

			By("scaling to four replicas, changing the image and dropping a token")
			updateThingNode(ctx, tn, func(tn *thingdbv1.ThingNode) {
				tn.Spec.Replicas = 4
				tn.Spec.Image = "thingdb:v2"
				tn.Spec.Tokens = tn.Spec.Tokens[:1]
				tn.Spec.NodeSelector = map[string]string{"disk": "ssd"}
			})

			eventually(ctx, func(g Gomega) {
				sts := &appsv1.StatefulSet{}
				g.Expect(k8sClient.Get(ctx, key(ns, tn.Name), sts)).To(Succeed())
				g.Expect(*sts.Spec.Replicas).To(Equal(int32(4)))
				g.Expect(sts.Spec.Template.Spec.Containers[0].Image).To(Equal("thingdb:v2"))
				g.Expect(sts.Spec.Template.Spec.NodeSelector).To(Equal(map[string]string{"disk": "ssd"}))
			}).Should(Succeed())
			eventually(ctx, func(g Gomega) {
				tlsSecret := &corev1.Secret{}
				g.Expect(k8sClient.Get(ctx, key(ns, tn.Name+"-tls"), tlsSecret)).To(Succeed())
				pair, err := pki.ParseKeyPair(tlsSecret.Data["tls.crt"], tlsSecret.Data["tls.key"])
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(pair.Cert.VerifyHostname(tn.Name + "-3." + tn.Name + "-headless." + ns + ".svc")).To(Succeed())
			}).Should(Succeed())
			eventually(ctx, func() bool {
				return apierrors.IsNotFound(k8sClient.Get(ctx, key(ns, tn.Name+"-token-sync"), &corev1.Secret{}))
			}).Should(BeTrue())
			eventually(ctx, func(g Gomega) {
				hashes := &corev1.Secret{}
				g.Expect(k8sClient.Get(ctx, key(ns, tn.Name+"-token-hashes"), hashes)).To(Succeed())
				g.Expect(hashes.Data).To(HaveKey("ci.json"))
				g.Expect(hashes.Data).NotTo(HaveKey("sync.json"))
			}).Should(Succeed())

			By("scaling to one replica and clearing the node selector")
			updateThingNode(ctx, tn, func(tn *thingdbv1.ThingNode) {
				tn.Spec.Replicas = 1
				tn.Spec.NodeSelector = nil
			})
			eventually(ctx, func(g Gomega) {
				sts := &appsv1.StatefulSet{}
				g.Expect(k8sClient.Get(ctx, key(ns, tn.Name), sts)).To(Succeed())
				g.Expect(*sts.Spec.Replicas).To(Equal(int32(1)))
				g.Expect(sts.Spec.Template.Spec.NodeSelector).To(BeEmpty())
			}).Should(Succeed())
			eventually(ctx, func() bool {
				return apierrors.IsNotFound(k8sClient.Get(ctx, key(ns, tn.Name), &policyv1.PodDisruptionBudget{}))
			}).Should(BeTrue())
		})

		It("should restore a child edited or deleted by hand", func(ctx SpecContext) {
			sts := &appsv1.StatefulSet{}
			eventually(ctx, func() error { return k8sClient.Get(ctx, key(ns, tn.Name), sts) }).Should(Succeed())

			By("editing the StatefulSet's image and security context")
			sts.Spec.Template.Spec.Containers[0].Image = "evil:latest"
			sts.Spec.Template.Spec.Containers[0].SecurityContext.ReadOnlyRootFilesystem = ptr.To(false)
			Expect(k8sClient.Update(ctx, sts)).To(Succeed())
			eventually(ctx, func(g Gomega) {
				g.Expect(k8sClient.Get(ctx, key(ns, tn.Name), sts)).To(Succeed())
				g.Expect(sts.Spec.Template.Spec.Containers[0].Image).To(Equal("thingdb:latest"))
				g.Expect(*sts.Spec.Template.Spec.Containers[0].SecurityContext.ReadOnlyRootFilesystem).To(BeTrue())
			}).Should(Succeed())

			By("deleting the headless Service")
			headless := &corev1.Service{}
			Expect(k8sClient.Get(ctx, key(ns, tn.Name+"-headless"), headless)).To(Succeed())
			oldUID := headless.UID
			Expect(k8sClient.Delete(ctx, headless)).To(Succeed())
			eventually(ctx, func(g Gomega) {
				g.Expect(k8sClient.Get(ctx, key(ns, tn.Name+"-headless"), headless)).To(Succeed())
				g.Expect(headless.UID).NotTo(Equal(oldUID))
			}).Should(Succeed())

			By("editing a token record")
			hashes := &corev1.Secret{}
			Expect(k8sClient.Get(ctx, key(ns, tn.Name+"-token-hashes"), hashes)).To(Succeed())
			want := string(hashes.Data["ci.json"])
			hashes.Data["ci.json"] = []byte(`{"name":"ci","scopes":["admin"],"sha256":"00"}`)
			Expect(k8sClient.Update(ctx, hashes)).To(Succeed())
			eventually(ctx, func(g Gomega) {
				g.Expect(k8sClient.Get(ctx, key(ns, tn.Name+"-token-hashes"), hashes)).To(Succeed())
				g.Expect(string(hashes.Data["ci.json"])).To(Equal(want))
			}).Should(Succeed())

			By("deleting the TLS Secret")
			tlsSecret := &corev1.Secret{}
			Expect(k8sClient.Get(ctx, key(ns, tn.Name+"-tls"), tlsSecret)).To(Succeed())
			Expect(k8sClient.Delete(ctx, tlsSecret)).To(Succeed())
			eventually(ctx, func(g Gomega) {
				fresh := &corev1.Secret{}
				g.Expect(k8sClient.Get(ctx, key(ns, tn.Name+"-tls"), fresh)).To(Succeed())
				g.Expect(fresh.UID).NotTo(Equal(tlsSecret.UID))
				g.Expect(fresh.Data["ca.crt"]).To(Equal(tlsSecret.Data["ca.crt"]), "the CA must survive")
			}).Should(Succeed())
		})
	})

	Context("when the spec is invalid", func() {
		DescribeTable("should reject the ThingNode with the rule's message",
			func(ctx SpecContext, mutate func(*thingdbv1.ThingNode), message string) {
				tn := loadSample(operatorCASample, ns)
				mutate(tn)
				err := k8sClient.Create(ctx, tn)
				Expect(apierrors.IsInvalid(err)).To(BeTrue(), "error: %v", err)
				Expect(err.Error()).To(ContainSubstring(message))
			},
			Entry("replicas below 1", func(tn *thingdbv1.ThingNode) { tn.Spec.Replicas = -1 }, "replicas must be between 1 and 15"),
			Entry("replicas 16", func(tn *thingdbv1.ThingNode) { tn.Spec.Replicas = 16 }, "replicas must be between 1 and 15"),
			Entry("unknown token scope", func(tn *thingdbv1.ThingNode) {
				tn.Spec.Tokens[0].Scopes = []thingdbv1.TokenScope{"read", "delete"}
			}, "token scopes must be among read, write, export, import and admin"),
			Entry("cert-manager without issuer", func(tn *thingdbv1.ThingNode) {
				tn.Spec.TLS.Mode = thingdbv1.TLSModeCertManager
			}, "tls.issuerRef is required when tls.mode is CertManager"),
			Entry("name too long", func(tn *thingdbv1.ThingNode) {
				tn.Name = strings.Repeat("n", 41)
			}, "metadata.name must be at most 40 characters"),
		)

		DescribeTable("should reject a change to an immutable field",
			func(ctx SpecContext, mutate func(*thingdbv1.ThingNode), message string) {
				tn := loadSample(operatorCASample, ns)
				Expect(k8sClient.Create(ctx, tn)).To(Succeed())
				// Only a conflict with a status write of the controller is
				// retried; the expected error is Invalid.
				err := retry.OnError(retry.DefaultRetry, apierrors.IsConflict, func() error {
					if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(tn), tn); err != nil {
						return err
					}
					mutate(tn)
					return k8sClient.Update(ctx, tn)
				})
				Expect(apierrors.IsInvalid(err)).To(BeTrue(), "error: %v", err)
				Expect(err.Error()).To(ContainSubstring(message))
			},
			Entry("storage size", func(tn *thingdbv1.ThingNode) {
				tn.Spec.Storage.Size = resource.MustParse("5Gi")
			}, "storage.size is immutable"),
			Entry("storage class", func(tn *thingdbv1.ThingNode) {
				tn.Spec.Storage.StorageClassName = ptr.To("fast")
			}, "storage.storageClassName is immutable"),
			Entry("passphrase source", func(tn *thingdbv1.ThingNode) {
				tn.Spec.Passphrase.SecretName = "other"
			}, "passphrase is immutable"),
		)
	})

	Context("when the Secrets exist before the ThingNode", func() {
		It("should adopt them and never overwrite them", func(ctx SpecContext) {
			tn := loadSample(operatorCASample, ns)
			tn.Spec.Passphrase.SecretName = "my-passphrase"
			tn.Spec.Tokens[1].SecretName = "my-sync-token"

			By("creating a token Secret under the default name and one under a named Secret")
			ciToken := &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: tn.Name + "-token-ci", Namespace: ns},
				Data:       map[string][]byte{"token": []byte("existing-ci-token\n")},
			}
			syncToken := &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: "my-sync-token", Namespace: ns},
				Data:       map[string][]byte{"token": []byte("existing-sync-token")},
			}
			Expect(k8sClient.Create(ctx, ciToken)).To(Succeed())
			Expect(k8sClient.Create(ctx, syncToken)).To(Succeed())

			By("creating the ThingNode before its named passphrase Secret")
			Expect(k8sClient.Create(ctx, tn)).To(Succeed())
			eventually(ctx, func(g Gomega) {
				g.Expect(k8sClient.Get(ctx, key(ns, tn.Name), tn)).To(Succeed())
				degraded := condition(tn, thingdbv1.ConditionDegraded)
				g.Expect(degraded).NotTo(BeNil())
				g.Expect(degraded.Status).To(Equal(metav1.ConditionTrue))
				g.Expect(degraded.Reason).To(Equal(thingdbv1.ReasonSecretInvalid))
				g.Expect(degraded.Message).To(ContainSubstring("passphrase Secret my-passphrase"))
			}).Should(Succeed())
			Expect(k8sClient.Get(ctx, key(ns, tn.Name), &appsv1.StatefulSet{})).NotTo(Succeed(), "no pods before the passphrase exists")

			passphrase := &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: "my-passphrase", Namespace: ns},
				Data:       map[string][]byte{"passphrase": []byte("correct horse battery staple")},
			}
			Expect(k8sClient.Create(ctx, passphrase)).To(Succeed())

			By("converging once the passphrase Secret exists")
			hashes := &corev1.Secret{}
			eventually(ctx, func(g Gomega) {
				g.Expect(k8sClient.Get(ctx, key(ns, tn.Name+"-token-hashes"), hashes)).To(Succeed())
				g.Expect(k8sClient.Get(ctx, key(ns, tn.Name), tn)).To(Succeed())
				g.Expect(condition(tn, thingdbv1.ConditionDegraded)).To(HaveField("Status", metav1.ConditionFalse))
			}).Should(Succeed())
			Expect(string(hashes.Data["ci.json"])).To(ContainSubstring(tokenHash("existing-ci-token")))
			Expect(string(hashes.Data["sync.json"])).To(ContainSubstring(tokenHash("existing-sync-token")))
			Expect(k8sClient.Get(ctx, key(ns, tn.Name+"-passphrase"), &corev1.Secret{})).NotTo(Succeed(), "no passphrase is generated when the spec names one")

			sts := &appsv1.StatefulSet{}
			Expect(k8sClient.Get(ctx, key(ns, tn.Name), sts)).To(Succeed())
			Expect(sts.Spec.Template.Spec.Volumes[0].Secret.SecretName).To(Equal("my-passphrase"))

			By("changing the token scopes, which must leave the adopted Secrets alone")
			updateThingNode(ctx, tn, func(tn *thingdbv1.ThingNode) {
				tn.Spec.Tokens[0].Scopes = []thingdbv1.TokenScope{"read"}
			})
			eventually(ctx, func(g Gomega) {
				g.Expect(k8sClient.Get(ctx, key(ns, tn.Name+"-token-hashes"), hashes)).To(Succeed())
				g.Expect(string(hashes.Data["ci.json"])).To(ContainSubstring(`"scopes":["read"]`))
			}).Should(Succeed())
			for _, original := range []*corev1.Secret{ciToken, syncToken, passphrase} {
				stored := &corev1.Secret{}
				Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(original), stored)).To(Succeed())
				Expect(stored.ResourceVersion).To(Equal(original.ResourceVersion), "Secret %s was written", original.Name)
				Expect(stored.OwnerReferences).To(BeEmpty())
			}
		})
	})

	Context("when the ThingNode is deleted", func() {
		// envtest runs neither the garbage collector nor the StatefulSet
		// controller, so these specs check what the operator controls: the
		// claims carry no reference to the ThingNode, the operator deletes
		// none, and the StatefulSet's retention policy follows the spec.
		DescribeTable("should leave the claims to the StatefulSet's retention policy",
			func(ctx SpecContext, whenDeleted thingdbv1.VolumeRetention, want appsv1.PersistentVolumeClaimRetentionPolicyType, passphraseOwned bool) {
				tn := loadSample(operatorCASample, ns)
				tn.Spec.Storage.WhenDeleted = whenDeleted
				Expect(k8sClient.Create(ctx, tn)).To(Succeed())

				sts := &appsv1.StatefulSet{}
				eventually(ctx, func() error { return k8sClient.Get(ctx, key(ns, tn.Name), sts) }).Should(Succeed())
				Expect(sts.Spec.PersistentVolumeClaimRetentionPolicy.WhenDeleted).To(Equal(want))
				passphrase := &corev1.Secret{}
				Expect(k8sClient.Get(ctx, key(ns, tn.Name+"-passphrase"), passphrase)).To(Succeed())
				Expect(metav1.IsControlledBy(passphrase, tn)).To(Equal(passphraseOwned))

				By("creating the claim the StatefulSet controller would make")
				claim := &corev1.PersistentVolumeClaim{
					ObjectMeta: metav1.ObjectMeta{Name: "data-" + tn.Name + "-0", Namespace: ns, Labels: sts.Spec.VolumeClaimTemplates[0].Labels},
					Spec:       sts.Spec.VolumeClaimTemplates[0].Spec,
				}
				Expect(k8sClient.Create(ctx, claim)).To(Succeed())

				Expect(k8sClient.Delete(ctx, tn)).To(Succeed())
				eventually(ctx, func() bool {
					return apierrors.IsNotFound(k8sClient.Get(ctx, key(ns, tn.Name), tn))
				}).Should(BeTrue())
				Consistently(ctx, func(g Gomega) {
					stored := &corev1.PersistentVolumeClaim{}
					g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(claim), stored)).To(Succeed())
					g.Expect(stored.DeletionTimestamp).To(BeNil())
					g.Expect(stored.OwnerReferences).To(BeEmpty())
				}).WithTimeout(time.Second).Should(Succeed())
			},
			Entry("retain by default", thingdbv1.VolumeRetain, appsv1.RetainPersistentVolumeClaimRetentionPolicyType, false),
			Entry("delete when the spec says so", thingdbv1.VolumeDelete, appsv1.DeletePersistentVolumeClaimRetentionPolicyType, true),
		)
	})

	Context("when the ThingNode is paused", func() {
		It("should leave hand edits alone and say so in the status", func(ctx SpecContext) {
			tn := loadSample(operatorCASample, ns)
			Expect(k8sClient.Create(ctx, tn)).To(Succeed())
			sts := &appsv1.StatefulSet{}
			eventually(ctx, func() error { return k8sClient.Get(ctx, key(ns, tn.Name), sts) }).Should(Succeed())

			updateThingNode(ctx, tn, func(tn *thingdbv1.ThingNode) { tn.Spec.Paused = true })
			eventually(ctx, func(g Gomega) {
				g.Expect(k8sClient.Get(ctx, key(ns, tn.Name), tn)).To(Succeed())
				g.Expect(condition(tn, thingdbv1.ConditionReady)).To(HaveField("Reason", thingdbv1.ReasonPaused))
			}).Should(Succeed())

			Expect(k8sClient.Get(ctx, key(ns, tn.Name), sts)).To(Succeed())
			sts.Spec.Template.Spec.Containers[0].Image = "debug:latest"
			Expect(k8sClient.Update(ctx, sts)).To(Succeed())
			Consistently(ctx, func(g Gomega) {
				g.Expect(k8sClient.Get(ctx, key(ns, tn.Name), sts)).To(Succeed())
				g.Expect(sts.Spec.Template.Spec.Containers[0].Image).To(Equal("debug:latest"))
			}).WithTimeout(time.Second).Should(Succeed())
		})
	})
})

// describeStatus returns the conditions of tn on one line each, for failure
// messages.
func describeStatus(tn *thingdbv1.ThingNode) string {
	var lines []string
	for _, c := range tn.Status.Conditions {
		lines = append(lines, fmt.Sprintf("%s=%s %s: %s", c.Type, c.Status, c.Reason, c.Message))
	}
	return strings.Join(lines, "\n")
}
