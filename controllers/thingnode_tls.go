package controllers

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	thingdbv1 "github.com/thingdb/thingdb/api/v1alpha1"
	"github.com/thingdb/thingdb/internal/pki"
)

// CertificateGVK is the cert-manager Certificate kind. The operator uses it
// as unstructured data, so it does not import cert-manager's Go module.
var CertificateGVK = schema.GroupVersionKind{Group: "cert-manager.io", Version: "v1", Kind: "Certificate"}

// Lifetimes of the operator CA and of the certificates it issues.
const (
	caValidity   = 10 * 365 * 24 * time.Hour
	leafValidity = 365 * 24 * time.Hour
	// leafRenewBefore is how long before expiry a leaf is issued again.
	leafRenewBefore = 30 * 24 * time.Hour
	// tlsPendingRequeue is how soon a reconcile checks again on a TLS Secret
	// that is not ready, because the controller does not watch Certificates
	// (their CRD may not exist).
	tlsPendingRequeue = 15 * time.Second
	// maxRequeue caps the wait for the next certificate renewal.
	maxRequeue = 12 * time.Hour
)

// tlsState is the outcome of the TLS step: the TLSReady condition and when to
// look again.
type tlsState struct {
	ready        bool
	reason       string
	message      string
	requeueAfter time.Duration
}

// reconcileTLS keeps the TLS Secret `<name>-tls`, through cert-manager or
// the operator CA as spec.tls.mode selects.
func (r *ThingNodeReconciler) reconcileTLS(ctx context.Context, tn *thingdbv1.ThingNode) (tlsState, error) {
	if tn.Spec.TLS.Mode == thingdbv1.TLSModeCertManager {
		return r.reconcileCertificate(ctx, tn)
	}
	return r.reconcileOperatorCA(ctx, tn)
}

// reconcileCertificate keeps the cert-manager Certificate `<name>-tls` and
// reports whether cert-manager has filled its Secret.
func (r *ThingNodeReconciler) reconcileCertificate(ctx context.Context, tn *thingdbv1.ThingNode) (tlsState, error) {
	desired := r.desiredCertificate(tn)
	live := &unstructured.Unstructured{}
	live.SetGroupVersionKind(CertificateGVK)
	_, err := ensureChild(ctx, r, tn, child[*unstructured.Unstructured]{
		kind:    "Certificate",
		desired: desired,
		live:    live,
		inSync: func(desired, live *unstructured.Unstructured) bool {
			return labelsInSync(desired.GetLabels(), live.GetLabels()) &&
				equality.Semantic.DeepDerivative(desired.Object["spec"], live.Object["spec"])
		},
		apply: func(desired, live *unstructured.Unstructured) {
			live.SetLabels(mergeLabels(desired.GetLabels(), live.GetLabels()))
			live.Object["spec"] = desired.Object["spec"]
		},
	})
	if isNoKindMatch(err) {
		return tlsState{
			reason: thingdbv1.ReasonCertManagerNotInstalled,
			message: "spec.tls.mode is CertManager but the cluster has no cert-manager Certificate CRD (certificates.cert-manager.io/v1); " +
				"install cert-manager or set spec.tls.mode to OperatorCA",
			requeueAfter: tlsPendingRequeue,
		}, nil
	}
	if err != nil {
		return tlsState{reason: thingdbv1.ReasonCertificateFailed, message: err.Error()}, err
	}

	secret, err := r.getSecret(ctx, tn.Namespace, tlsSecretName(tn))
	if err != nil {
		return tlsState{reason: thingdbv1.ReasonCertificateFailed, message: err.Error()}, err
	}
	if secret == nil {
		return tlsState{
			reason:       thingdbv1.ReasonCertificatePending,
			message:      fmt.Sprintf("waiting for cert-manager to write Secret %s for Certificate %s", tlsSecretName(tn), tlsSecretName(tn)),
			requeueAfter: tlsPendingRequeue,
		}, nil
	}
	if _, err := checkServingCertificate(secret, r.dnsNames(tn), r.now()); err != nil {
		return tlsState{
			reason:       thingdbv1.ReasonCertificatePending,
			message:      fmt.Sprintf("waiting for cert-manager to renew Secret %s: %s", secret.Name, err.Error()),
			requeueAfter: tlsPendingRequeue,
		}, nil
	}
	return tlsState{
		ready:   true,
		reason:  thingdbv1.ReasonCertificateIssued,
		message: fmt.Sprintf("Secret %s contains a valid certificate from %s %s", secret.Name, tn.Spec.TLS.IssuerRef.Kind, tn.Spec.TLS.IssuerRef.Name),
	}, nil
}

// desiredCertificate returns the Certificate whose Secret serves every pod
// and Service name of tn.
func (r *ThingNodeReconciler) desiredCertificate(tn *thingdbv1.ThingNode) *unstructured.Unstructured {
	issuer := tn.Spec.TLS.IssuerRef
	if issuer == nil {
		// Unreachable through the API server: a CEL rule requires issuerRef
		// in CertManager mode.
		issuer = &thingdbv1.IssuerReference{}
	}
	dnsNames := make([]any, 0)
	for _, name := range r.dnsNames(tn) {
		dnsNames = append(dnsNames, name)
	}
	secretLabels := map[string]any{}
	for k, v := range childLabels(tn) {
		secretLabels[k] = v
	}

	cert := &unstructured.Unstructured{Object: map[string]any{
		"spec": map[string]any{
			"secretName": tlsSecretName(tn),
			"commonName": clientServiceName(tn) + "." + tn.Namespace + ".svc",
			"dnsNames":   dnsNames,
			"usages":     []any{"digital signature", "server auth", "client auth"},
			"issuerRef": map[string]any{
				"name":  issuer.Name,
				"kind":  issuer.Kind,
				"group": issuer.Group,
			},
			"privateKey": map[string]any{
				"algorithm":      "ECDSA",
				"size":           int64(256),
				"rotationPolicy": "Always",
			},
			// The labels let a change to the Secret reconcile the ThingNode.
			"secretTemplate": map[string]any{"labels": secretLabels},
		},
	}}
	cert.SetGroupVersionKind(CertificateGVK)
	cert.SetName(tlsSecretName(tn))
	cert.SetNamespace(tn.Namespace)
	cert.SetLabels(childLabels(tn))
	return cert
}

// reconcileOperatorCA keeps the CA Secret `<name>-ca` and issues the TLS
// Secret from it when the Secret is missing, does not cover every name, was
// signed by another CA or is due for renewal.
func (r *ThingNodeReconciler) reconcileOperatorCA(ctx context.Context, tn *thingdbv1.ThingNode) (tlsState, error) {
	failed := func(err error) (tlsState, error) {
		return tlsState{reason: thingdbv1.ReasonCertificateFailed, message: err.Error()}, err
	}

	ca, err := r.reconcileCASecret(ctx, tn)
	if err != nil {
		return failed(err)
	}

	name := tlsSecretName(tn)
	names := r.dnsNames(tn)
	live, err := r.getSecret(ctx, tn.Namespace, name)
	if err != nil {
		return failed(err)
	}
	if live != nil && !metav1.IsControlledBy(live, tn) {
		return failed(withReason(thingdbv1.ReasonChildConflict, fmt.Errorf(
			"Secret %s exists and is not controlled by ThingNode %s; delete or rename it so the operator can issue its own", name, tn.Name)))
	}

	if live != nil && bytes.Equal(live.Data[keyCACert], ca.CertPEM) && labelsInSync(childLabels(tn), live.Labels) {
		leaf, err := checkServingCertificate(live, names, r.now())
		if err == nil && verifySignedBy(leaf, ca.Cert) == nil {
			renewAt := leaf.NotAfter.Add(-leafRenewBefore)
			if wait := renewAt.Sub(r.now()); wait > 0 {
				return tlsState{
					ready:        true,
					reason:       thingdbv1.ReasonCertificateIssued,
					message:      fmt.Sprintf("Secret %s contains a certificate from the operator CA in Secret %s", name, caSecretName(tn)),
					requeueAfter: min(wait, maxRequeue),
				}, nil
			}
		}
	}

	leaf, err := pki.Issue(ca, pki.IssueRequest{
		CommonName: clientServiceName(tn) + "." + tn.Namespace + ".svc",
		DNSNames:   names,
		Server:     true,
		Client:     true,
		Validity:   leafValidity,
		Now:        r.now(),
	})
	if err != nil {
		return failed(fmt.Errorf("issue certificate for Secret %s: %w", name, err))
	}
	data := map[string][]byte{keyTLSCert: leaf.CertPEM, keyTLSKey: leaf.KeyPEM, keyCACert: ca.CertPEM}

	if live == nil {
		live = &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: tn.Namespace, Labels: childLabels(tn)},
			Type:       corev1.SecretTypeTLS,
			Data:       data,
		}
		if err := controllerutil.SetControllerReference(tn, live, r.Scheme); err != nil {
			return failed(fmt.Errorf("set owner of Secret %s: %w", name, err))
		}
		if err := r.Create(ctx, live); err != nil {
			return failed(fmt.Errorf("create Secret %s: %w", name, err))
		}
	} else {
		live.Labels = mergeLabels(childLabels(tn), live.Labels)
		live.Data = data
		if err := r.Update(ctx, live); err != nil {
			return failed(fmt.Errorf("update Secret %s: %w", name, err))
		}
	}
	r.recordChange(ctx, tn, live, thingdbv1.EventCertificateIssued, "Issue",
		"Issued a certificate for %d names into Secret %s from the operator CA", len(names), name)
	return tlsState{
		ready:        true,
		reason:       thingdbv1.ReasonCertificateIssued,
		message:      fmt.Sprintf("Secret %s contains a certificate from the operator CA in Secret %s", name, caSecretName(tn)),
		requeueAfter: min(leafValidity-leafRenewBefore, maxRequeue),
	}, nil
}

// reconcileCASecret returns the operator CA of tn, creating its Secret once.
func (r *ThingNodeReconciler) reconcileCASecret(ctx context.Context, tn *thingdbv1.ThingNode) (*pki.KeyPair, error) {
	name := caSecretName(tn)
	live, err := r.getSecret(ctx, tn.Namespace, name)
	if err != nil {
		return nil, err
	}
	if live != nil {
		ca, err := pki.ParseKeyPair(live.Data[keyCACert], live.Data[keyCAKey])
		if err != nil {
			return nil, withReason(thingdbv1.ReasonSecretInvalid, fmt.Errorf(
				"parse CA Secret %s: %w; delete the Secret to let the operator create a new CA", name, err))
		}
		if !ca.Cert.IsCA {
			return nil, withReason(thingdbv1.ReasonSecretInvalid, fmt.Errorf(
				"CA Secret %s contains a certificate that is not a CA; delete the Secret to let the operator create a new CA", name))
		}
		return ca, nil
	}

	ca, err := pki.NewCA(pki.CARequest{
		CommonName: fmt.Sprintf("thingdb operator CA %s/%s", tn.Namespace, tn.Name),
		Validity:   caValidity,
		Now:        r.now(),
	})
	if err != nil {
		return nil, fmt.Errorf("create CA for Secret %s: %w", name, err)
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: tn.Namespace, Labels: childLabels(tn)},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{keyCACert: ca.CertPEM, keyCAKey: ca.KeyPEM},
	}
	if err := controllerutil.SetControllerReference(tn, secret, r.Scheme); err != nil {
		return nil, fmt.Errorf("set owner of CA Secret %s: %w", name, err)
	}
	if err := r.Create(ctx, secret); err != nil {
		return nil, fmt.Errorf("create CA Secret %s: %w", name, err)
	}
	r.recordChange(ctx, tn, secret, thingdbv1.EventCreated, "Create", "Created CA Secret %s", name)
	return ca, nil
}

// checkServingCertificate parses the certificate and key of a TLS Secret and
// returns the certificate when it is valid at now and covers every name.
func checkServingCertificate(secret *corev1.Secret, names []string, now time.Time) (*x509.Certificate, error) {
	pair, err := pki.ParseKeyPair(secret.Data[keyTLSCert], secret.Data[keyTLSKey])
	if err != nil {
		return nil, fmt.Errorf("parse %s and %s: %w", keyTLSCert, keyTLSKey, err)
	}
	if now.Before(pair.Cert.NotBefore) || !now.Before(pair.Cert.NotAfter) {
		return nil, fmt.Errorf("certificate is valid from %s to %s, not now", pair.Cert.NotBefore.UTC().Format(time.RFC3339), pair.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	for _, name := range names {
		if err := pair.Cert.VerifyHostname(name); err != nil {
			return nil, fmt.Errorf("certificate does not cover %s", name)
		}
	}
	return pair.Cert, nil
}

// verifySignedBy checks that leaf chains to ca.
func verifySignedBy(leaf, ca *x509.Certificate) error {
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, CurrentTime: leaf.NotBefore.Add(time.Minute)})
	return err
}

// getSecret returns the Secret, or nil when it does not exist.
func (r *ThingNodeReconciler) getSecret(ctx context.Context, namespace, name string) (*corev1.Secret, error) {
	secret := &corev1.Secret{}
	if err := r.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, secret); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("get Secret %s: %w", name, err)
	}
	return secret, nil
}

// dnsNames returns the subject alternative names of tn's certificate.
func (r *ThingNodeReconciler) dnsNames(tn *thingdbv1.ThingNode) []string {
	domain := r.ClusterDomain
	if domain == "" {
		domain = DefaultClusterDomain
	}
	return serviceDNSNames(tn, domain)
}

// isNoKindMatch reports whether err means the API server does not serve the
// kind, which for a Certificate means cert-manager is not installed.
func isNoKindMatch(err error) bool {
	if err == nil {
		return false
	}
	if meta.IsNoMatchError(err) {
		return true
	}
	_, ok := errors.AsType[*apiutil.ErrResourceDiscoveryFailed](err)
	return ok
}
