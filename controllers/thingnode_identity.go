package controllers

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	thingdbv1 "github.com/thingdb/thingdb/api/v1alpha1"
	"github.com/thingdb/thingdb/internal/pki"
)

// identityTimeout bounds one request to a node's identity endpoint.
const identityTimeout = 5 * time.Second

// maxIdentityBody caps the identity response the operator reads.
const maxIdentityBody = 64 << 10

// IdentityReader reads `GET /v1/identity` from node pods over HTTPS, trusting
// only the CA of the ThingNode's TLS Secret.
type IdentityReader struct {
	// PodURL returns the base URL of a pod's node API. Nil means
	// DefaultPodURL.
	PodURL func(tn *thingdbv1.ThingNode, pod *corev1.Pod) string

	// HTTPClient returns the client for requests that trust roots. Nil means
	// a client with roots as its only CAs and a timeout of identityTimeout.
	HTTPClient func(roots *x509.CertPool) *http.Client
}

// DefaultPodURL returns the pod's stable name under the headless Service of
// its ThingNode, for example https://db-0.db-headless.ns.svc:8443.
func DefaultPodURL(tn *thingdbv1.ThingNode, pod *corev1.Pod) string {
	return fmt.Sprintf("https://%s.%s.%s.svc:%d", pod.Name, headlessServiceName(tn), tn.Namespace, nodePort)
}

// identityResponse is the body of `GET /v1/identity`.
type identityResponse struct {
	NodeID       string `json:"nodeID"`
	KeyID        string `json:"keyID"`
	SigningKey   string `json:"signingKey"`
	RecipientKey string `json:"recipientKey"`
}

// Read returns the identity of one pod.
func (ir *IdentityReader) Read(ctx context.Context, tn *thingdbv1.ThingNode, pod *corev1.Pod, roots *x509.CertPool) (thingdbv1.NodeIdentity, error) {
	podURL := DefaultPodURL
	if ir.PodURL != nil {
		podURL = ir.PodURL
	}
	httpClient := defaultIdentityClient
	if ir.HTTPClient != nil {
		httpClient = ir.HTTPClient
	}
	url := strings.TrimSuffix(podURL(tn, pod), "/") + "/v1/identity"

	ctx, cancel := context.WithTimeout(ctx, identityTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return thingdbv1.NodeIdentity{}, fmt.Errorf("build identity request for %s: %w", url, err)
	}
	resp, err := httpClient(roots).Do(req)
	if err != nil {
		return thingdbv1.NodeIdentity{}, fmt.Errorf("get %s: %w", url, err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return thingdbv1.NodeIdentity{}, fmt.Errorf("get %s: status %s", url, resp.Status)
	}

	var body identityResponse
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxIdentityBody)).Decode(&body); err != nil {
		return thingdbv1.NodeIdentity{}, fmt.Errorf("decode identity from %s: %w", url, err)
	}
	if body.NodeID == "" || body.SigningKey == "" || body.RecipientKey == "" {
		return thingdbv1.NodeIdentity{}, fmt.Errorf("identity from %s lacks nodeID, signingKey or recipientKey", url)
	}
	return thingdbv1.NodeIdentity{
		Pod:          pod.Name,
		NodeID:       body.NodeID,
		KeyID:        body.KeyID,
		SigningKey:   body.SigningKey,
		RecipientKey: body.RecipientKey,
	}, nil
}

func defaultIdentityClient(roots *x509.CertPool) *http.Client {
	return &http.Client{
		Timeout: identityTimeout,
		Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
			DisableKeepAlives: true,
		},
	}
}

// readIdentities returns the identity of every pod of tn with an ordinal
// below spec.replicas: the one already in status, or read from the pod once
// it is ready. A node's identity lives in its ledger on its volume, so it
// survives pod restarts and is not read again.
//
// NOTE: a volume replaced by hand gives the pod a new ledger and identity,
// which status shows only after the pod's entry is removed from status.
func (r *ThingNodeReconciler) readIdentities(ctx context.Context, tn *thingdbv1.ThingNode) ([]thingdbv1.NodeIdentity, error) {
	var pods corev1.PodList
	if err := r.List(ctx, &pods, client.InNamespace(tn.Namespace), client.MatchingLabels(selectorLabels(tn))); err != nil {
		return tn.Status.Nodes, fmt.Errorf("list pods of %s: %w", tn.Name, err)
	}

	known := make(map[string]thingdbv1.NodeIdentity, len(tn.Status.Nodes))
	for _, node := range tn.Status.Nodes {
		known[node.Pod] = node
	}

	var roots *x509.CertPool
	var nodes []thingdbv1.NodeIdentity
	var errs []error
	for i := range pods.Items {
		pod := &pods.Items[i]
		if !isOwnPod(tn, pod.Name) {
			continue
		}
		if node, ok := known[pod.Name]; ok {
			nodes = append(nodes, node)
			continue
		}
		if !podReady(pod) {
			continue
		}

		if roots == nil {
			var err error
			if roots, err = r.tlsRoots(ctx, tn); err != nil {
				return tn.Status.Nodes, err
			}
		}
		node, err := r.Identity.Read(ctx, tn, pod, roots)
		if err != nil {
			errs = append(errs, fmt.Errorf("read identity of pod %s: %w", pod.Name, err))
			continue
		}
		nodes = append(nodes, node)
	}

	slices.SortFunc(nodes, func(a, b thingdbv1.NodeIdentity) int { return strings.Compare(a.Pod, b.Pod) })
	return nodes, errors.Join(errs...)
}

// tlsRoots returns the CA bundle of tn's TLS Secret as a pool.
func (r *ThingNodeReconciler) tlsRoots(ctx context.Context, tn *thingdbv1.ThingNode) (*x509.CertPool, error) {
	secret, err := r.getSecret(ctx, tn.Namespace, tlsSecretName(tn))
	if err != nil {
		return nil, err
	}
	if secret == nil || len(secret.Data[keyCACert]) == 0 {
		return nil, fmt.Errorf("read CA of Secret %s: no %s key yet", tlsSecretName(tn), keyCACert)
	}
	roots, err := pki.CertPool(secret.Data[keyCACert])
	if err != nil {
		return nil, fmt.Errorf("parse %s of Secret %s: %w", keyCACert, tlsSecretName(tn), err)
	}
	return roots, nil
}

// isOwnPod reports whether name is a pod of tn's StatefulSet with an ordinal
// below spec.replicas.
func isOwnPod(tn *thingdbv1.ThingNode, name string) bool {
	suffix, ok := strings.CutPrefix(name, statefulSetName(tn)+"-")
	if !ok {
		return false
	}
	ordinal, err := strconv.ParseInt(suffix, 10, 32)
	return err == nil && ordinal >= 0 && int32(ordinal) < replicas(tn)
}

// podReady reports whether the pod's Ready condition is True.
func podReady(pod *corev1.Pod) bool {
	for _, cond := range pod.Status.Conditions {
		if cond.Type == corev1.PodReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}
