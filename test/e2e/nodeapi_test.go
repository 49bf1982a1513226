package e2e_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/thingdb/thingdb/node"
)

// nodePort is the port of the thingdb container.
const nodePort = "8443"

// podAPI calls one pod's API the way its peers do: by the DNS name its
// certificate covers, verified against its ThingNode's CA, but dialled at
// the pod's address, which this host reaches without the cluster DNS.
type podAPI struct {
	pod    string
	host   string // name in the certificate, with the port
	client *http.Client
}

// podAPIs keeps one client per pod address and CA, so that the polls of
// the scenario reuse their connections instead of opening new ones.
var podAPIs = map[string]*podAPI{}

// apiOf returns the API of a pod of ThingNode tn.
func apiOf(ctx context.Context, tn, pod string) (*podAPI, error) {
	p := &corev1.Pod{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: testNamespace, Name: pod}, p); err != nil {
		return nil, err
	}
	if p.Status.PodIP == "" {
		return nil, fmt.Errorf("pod %s has no address yet", pod)
	}
	caSecret := &corev1.Secret{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: testNamespace, Name: tn + "-tls"}, caSecret); err != nil {
		return nil, err
	}
	addr := net.JoinHostPort(p.Status.PodIP, nodePort)
	key := pod + " " + addr + " " + string(caSecret.Data["ca.crt"])
	if api, ok := podAPIs[key]; ok {
		return api, nil
	}

	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caSecret.Data["ca.crt"]) {
		return nil, fmt.Errorf("secret %s-tls contains no CA certificate", tn)
	}
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	transport := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, addr)
		},
	}
	api := &podAPI{
		pod:    pod,
		host:   fmt.Sprintf("%s.%s-headless.%s.svc:%s", pod, tn, testNamespace, nodePort),
		client: &http.Client{Transport: transport, Timeout: 15 * time.Second},
	}
	podAPIs[key] = api
	return api, nil
}

// call sends one request with token and decodes a 200 response into out.
func (a *podAPI) call(ctx context.Context, method, path string, token []byte, body, out any) error {
	var reader io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return err
		}
		reader = bytes.NewReader(data)
	}

	req, err := http.NewRequestWithContext(ctx, method, "https://"+a.host+path, reader)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}

	resp, err := a.client.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}

	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s on %s: status %d: %s", method, path, a.pod, resp.StatusCode, data)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(data, out)
}

// secretValue reads one key of a Secret in the test namespace.
func secretValue(ctx context.Context, name, key string) ([]byte, error) {
	secret := &corev1.Secret{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: testNamespace, Name: name}, secret); err != nil {
		return nil, err
	}
	value, ok := secret.Data[key]
	if !ok {
		return nil, fmt.Errorf("secret %s has no key %s", name, key)
	}
	return value, nil
}

// callWithApp calls a pod of ThingNode tn with the ThingNode's app token.
func callWithApp(ctx context.Context, tn, pod, method, path string, body, out any) error {
	api, err := apiOf(ctx, tn, pod)
	if err != nil {
		return err
	}
	token, err := secretValue(ctx, tn+"-token-app", "token")
	if err != nil {
		return err
	}
	return api.call(ctx, method, path, token, body, out)
}

// put writes thing on pod of ThingNode tn.
func put(ctx context.Context, tn, pod, thing string) (node.EntryInfoJSON, error) {
	var info node.EntryInfoJSON
	body := map[string]any{"data": map[string]string{"writtenOn": pod}}
	err := callWithApp(ctx, tn, pod, http.MethodPut, "/v1/things/"+thing, body, &info)
	return info, err
}

// get reads the latest version of thing on pod of ThingNode tn.
func get(ctx context.Context, tn, pod, thing string) (node.VersionJSON, error) {
	var version node.VersionJSON
	err := callWithApp(ctx, tn, pod, http.MethodGet, "/v1/things/"+thing, nil, &version)
	return version, err
}

// syncStatus reads a pod's view of its peers.
func syncStatus(ctx context.Context, tn, pod string) (node.SyncStatusResponse, error) {
	var status node.SyncStatusResponse
	err := callWithApp(ctx, tn, pod, http.MethodGet, "/v1/sync/status", nil, &status)
	return status, err
}
