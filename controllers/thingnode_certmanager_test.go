package controllers_test

import (
	"context"
	"path/filepath"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	thingdbv1 "github.com/thingdb/thingdb/api/v1alpha1"
	"github.com/thingdb/thingdb/controllers"
	"github.com/thingdb/thingdb/internal/pki"
)

const certManagerSample = "thingdb_v1alpha1_thingnode_certmanager.yaml"

// The Certificate CRD is installed halfway through this container and stays
// for the rest of the suite, so its specs run in order and alone.
var _ = Describe("ThingNode controller with cert-manager", Ordered, Serial, func() {
	var (
		ns string
		tn *thingdbv1.ThingNode
	)

	BeforeAll(func(ctx SpecContext) {
		ns = newNamespace(ctx)
		passphrase := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "thingnode-certmanager-passphrase", Namespace: ns},
			Data:       map[string][]byte{"passphrase": []byte("a passphrase for the cert-manager sample")},
		}
		Expect(k8sClient.Create(ctx, passphrase)).To(Succeed())
		tn = loadSample(certManagerSample, ns)
		Expect(k8sClient.Create(ctx, tn)).To(Succeed())
	})

	Context("when the Certificate CRD is missing", func() {
		It("should say to install cert-manager or use the operator CA", func(ctx SpecContext) {
			eventually(ctx, func(g Gomega) {
				g.Expect(k8sClient.Get(ctx, key(ns, tn.Name), tn)).To(Succeed())
				tlsReady := condition(tn, thingdbv1.ConditionTLSReady)
				g.Expect(tlsReady).NotTo(BeNil())
				g.Expect(tlsReady.Status).To(Equal(metav1.ConditionFalse))
				g.Expect(tlsReady.Reason).To(Equal(thingdbv1.ReasonCertManagerNotInstalled))
				g.Expect(tlsReady.Message).To(ContainSubstring("install cert-manager"))
				g.Expect(tlsReady.Message).To(ContainSubstring("OperatorCA"))
			}).Should(Succeed())
			Expect(condition(tn, thingdbv1.ConditionReady)).To(HaveField("Status", metav1.ConditionFalse))
		})
	})

	Context("when a cert-manager stand-in fills the Certificate's Secret", func() {
		BeforeAll(func(ctx SpecContext) {
			_, err := envtest.InstallCRDs(cfg, envtest.CRDInstallOptions{
				Paths:              []string{filepath.Join("testdata", "crds")},
				ErrorIfPathMissing: true,
			})
			Expect(err).NotTo(HaveOccurred())

			standIn, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			wg.Go(func() { runCertManagerStandIn(standIn, ns) })
			DeferCleanup(func() {
				cancel()
				wg.Wait()
			})
		})

		It("should create a Certificate for every pod and Service name and become TLSReady", func(ctx SpecContext) {
			cert := &unstructured.Unstructured{}
			cert.SetGroupVersionKind(controllers.CertificateGVK)
			eventually(ctx, func() error { return k8sClient.Get(ctx, key(ns, tn.Name+"-tls"), cert) }).Should(Succeed())
			dnsNames, _, err := unstructured.NestedStringSlice(cert.Object, "spec", "dnsNames")
			Expect(err).NotTo(HaveOccurred())
			Expect(dnsNames).To(ContainElements(
				tn.Name, tn.Name+"."+ns+".svc",
				tn.Name+"-headless."+ns+".svc.cluster.local",
				tn.Name+"-0."+tn.Name+"-headless."+ns+".svc",
			))
			issuer, _, err := unstructured.NestedStringMap(cert.Object, "spec", "issuerRef")
			Expect(err).NotTo(HaveOccurred())
			Expect(issuer).To(Equal(map[string]string{"name": "thingdb-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}))

			eventually(ctx, func(g Gomega) {
				g.Expect(k8sClient.Get(ctx, key(ns, tn.Name), tn)).To(Succeed())
				g.Expect(condition(tn, thingdbv1.ConditionTLSReady)).To(HaveField("Status", metav1.ConditionTrue), describeStatus(tn))
				g.Expect(condition(tn, thingdbv1.ConditionTLSReady)).To(HaveField("Reason", thingdbv1.ReasonCertificateIssued))
			}).Should(Succeed())
		})

		It("should put back a Certificate edited by hand", func(ctx SpecContext) {
			cert := &unstructured.Unstructured{}
			cert.SetGroupVersionKind(controllers.CertificateGVK)
			Expect(k8sClient.Get(ctx, key(ns, tn.Name+"-tls"), cert)).To(Succeed())
			Expect(unstructured.SetNestedField(cert.Object, "other-issuer", "spec", "issuerRef", "name")).To(Succeed())
			Expect(k8sClient.Update(ctx, cert)).To(Succeed())

			// Certificates are not watched, so the fix comes with the next
			// event of the ThingNode, such as this spec change.
			updateThingNode(ctx, tn, func(tn *thingdbv1.ThingNode) { tn.Spec.Image = "thingdb:v2" })
			eventually(ctx, func(g Gomega) {
				g.Expect(k8sClient.Get(ctx, key(ns, tn.Name+"-tls"), cert)).To(Succeed())
				name, _, _ := unstructured.NestedString(cert.Object, "spec", "issuerRef", "name")
				g.Expect(name).To(Equal("thingdb-ca"))
			}).Should(Succeed())
		})
	})
})

// runCertManagerStandIn is a test stand-in for cert-manager: until ctx ends
// it issues, from a CA of its own, the Secret of every Certificate in
// namespace whose Secret is missing or does not cover the Certificate's DNS
// names, with the labels of the Certificate's secretTemplate.
func runCertManagerStandIn(ctx context.Context, namespace string) {
	defer GinkgoRecover()
	ca, err := pki.NewCA(pki.CARequest{CommonName: "cert-manager stand-in CA", Validity: time.Hour})
	Expect(err).NotTo(HaveOccurred())

	ticker := time.NewTicker(200 * time.Millisecond)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}

		var certs unstructured.UnstructuredList
		certs.SetGroupVersionKind(controllers.CertificateGVK.GroupVersion().WithKind("CertificateList"))
		if err := k8sClient.List(ctx, &certs, client.InNamespace(namespace)); err != nil {
			continue
		}
		for _, cert := range certs.Items {
			issueForCertificate(ctx, ca, &cert)
		}
	}
}

// issueForCertificate writes the Secret of one Certificate when it does not
// yet hold a certificate for every DNS name.
func issueForCertificate(ctx context.Context, ca *pki.KeyPair, cert *unstructured.Unstructured) {
	secretName, _, _ := unstructured.NestedString(cert.Object, "spec", "secretName")
	dnsNames, _, _ := unstructured.NestedStringSlice(cert.Object, "spec", "dnsNames")
	labels, _, _ := unstructured.NestedStringMap(cert.Object, "spec", "secretTemplate", "labels")

	secret := &corev1.Secret{}
	err := k8sClient.Get(ctx, key(cert.GetNamespace(), secretName), secret)
	if err == nil {
		if pair, err := pki.ParseKeyPair(secret.Data["tls.crt"], secret.Data["tls.key"]); err == nil && coversAll(pair, dnsNames) {
			return
		}
	} else if !apierrors.IsNotFound(err) {
		return
	}

	leaf, err := pki.Issue(ca, pki.IssueRequest{DNSNames: dnsNames, Server: true, Client: true, Validity: time.Hour})
	Expect(err).NotTo(HaveOccurred())
	secret.Name = secretName
	secret.Namespace = cert.GetNamespace()
	secret.Labels = labels
	secret.Type = corev1.SecretTypeTLS
	secret.Data = map[string][]byte{"tls.crt": leaf.CertPEM, "tls.key": leaf.KeyPEM, "ca.crt": ca.CertPEM}
	if secret.ResourceVersion == "" {
		_ = k8sClient.Create(ctx, secret)
	} else {
		_ = k8sClient.Update(ctx, secret)
	}
}

// coversAll reports whether pair's certificate is valid for every name.
func coversAll(pair *pki.KeyPair, names []string) bool {
	for _, name := range names {
		if pair.Cert.VerifyHostname(name) != nil {
			return false
		}
	}
	return true
}
