package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	thingdbv1 "github.com/thingdb/thingdb/api/v1alpha1"
)

// The operator's own tokens for a ThingNode, kept in `<name>-sync-token`.
// Their record names contain a dot, which spec.tokens names cannot, so they
// never clash with a declared token.
const (
	// keySyncToken is the token with the export scope that the node's peers
	// present when they pull from it.
	keySyncToken = "token"
	// keyStatusToken is the token with the read scope that the ThingSync
	// controller presents to read GET /v1/sync/status.
	keyStatusToken = "status-token"

	syncTokenRecord   = "thingdb.sync"
	statusTokenRecord = "thingdb.operator"
)

func syncTokenSecretName(tn *thingdbv1.ThingNode) string { return tn.Name + "-sync-token" }

// reconcileSyncTokens generates the Secret `<name>-sync-token` once (and a
// missing key of it) and returns the token records of its two tokens, keyed
// by file name, for `<name>-token-hashes`.
func (r *ThingNodeReconciler) reconcileSyncTokens(ctx context.Context, tn *thingdbv1.ThingNode) (map[string][]byte, error) {
	name := syncTokenSecretName(tn)
	secret := &corev1.Secret{}
	err := r.Get(ctx, client.ObjectKey{Namespace: tn.Namespace, Name: name}, secret)
	if err != nil && !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("get sync token Secret %s: %w", name, err)
	}
	exists := err == nil
	if !exists {
		secret = &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: tn.Namespace, Labels: childLabels(tn)},
			Type:       corev1.SecretTypeOpaque,
		}
		if err := controllerutil.SetControllerReference(tn, secret, r.Scheme); err != nil {
			return nil, fmt.Errorf("set owner of sync token Secret %s: %w", name, err)
		}
	}

	// Fill a missing key with a new token; an existing token never changes.
	changed := false
	if secret.Data == nil {
		secret.Data = map[string][]byte{}
	}
	for _, key := range []string{keySyncToken, keyStatusToken} {
		if len(secret.Data[key]) > 0 {
			continue
		}
		value, err := randomSecret()
		if err != nil {
			return nil, fmt.Errorf("generate %s of Secret %s: %w", key, name, err)
		}
		secret.Data[key] = []byte(value)
		changed = true
	}

	switch {
	case !exists:
		if err := r.Create(ctx, secret); err != nil {
			return nil, fmt.Errorf("create sync token Secret %s: %w", name, err)
		}
		r.recordChange(ctx, tn, secret, thingdbv1.EventCreated, "Create", "Created sync token Secret %s", name)
	case changed:
		if err := r.Update(ctx, secret); err != nil {
			return nil, fmt.Errorf("update sync token Secret %s: %w", name, err)
		}
		r.recordChange(ctx, tn, secret, thingdbv1.EventUpdated, "Update", "Generated a missing token in Secret %s", name)
	}

	records := map[string][]byte{}
	for _, token := range []struct {
		key, record string
		scope       thingdbv1.TokenScope
	}{
		{keySyncToken, syncTokenRecord, thingdbv1.TokenScopeExport},
		{keyStatusToken, statusTokenRecord, thingdbv1.TokenScopeRead},
	} {
		sum := sha256.Sum256(secret.Data[token.key])
		record, err := json.Marshal(tokenRecord{Name: token.record, Scopes: []string{string(token.scope)}, SHA256: hex.EncodeToString(sum[:])})
		if err != nil {
			return nil, fmt.Errorf("encode record of token %s: %w", token.record, err)
		}
		records[token.record+".json"] = record
	}
	return records, nil
}
