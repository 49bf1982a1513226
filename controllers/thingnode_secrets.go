package controllers

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	thingdbv1 "github.com/thingdb/thingdb/api/v1alpha1"
)

// labelToken is on each generated token Secret; its value is the token name.
const labelToken = "thingdb.io/token"

// emptyPeerFile is the peer file of a node without peers. The ThingSync
// controller replaces it, and this controller never overwrites it.
const emptyPeerFile = `{"peers":[]}`

// tokenRecord is one file of the node's token directory.
type tokenRecord struct {
	Name   string   `json:"name"`
	Scopes []string `json:"scopes"`
	SHA256 string   `json:"sha256"`
}

// randomSecret returns 32 random bytes as unpadded base64url, the form of
// generated passphrases and tokens.
func randomSecret() (string, error) {
	buf := make([]byte, 32)
	if _, err := rand.Read(buf); err != nil {
		return "", fmt.Errorf("read random bytes: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(buf), nil
}

// reconcilePassphrase checks the passphrase Secret the spec names, or
// generates `<name>-passphrase` once.
//
// The generated Secret is owned by the ThingNode only when
// spec.storage.whenDeleted is Delete. Otherwise it outlives the ThingNode
// with the volumes, so a ThingNode created again under the same name adopts
// it and opens the retained ledgers.
func (r *ThingNodeReconciler) reconcilePassphrase(ctx context.Context, tn *thingdbv1.ThingNode) error {
	name := passphraseSecretName(tn)
	key := passphraseKey(tn)
	secret := &corev1.Secret{}
	err := r.Get(ctx, client.ObjectKey{Namespace: tn.Namespace, Name: name}, secret)

	switch {
	case err == nil:
		if len(secret.Data[key]) == 0 {
			return withReason(thingdbv1.ReasonSecretInvalid, fmt.Errorf(
				"passphrase Secret %s has no key %q; add the passphrase under that key or set spec.passphrase.key", name, key))
		}
		return nil
	case !apierrors.IsNotFound(err):
		return fmt.Errorf("get passphrase Secret %s: %w", name, err)
	case tn.Spec.Passphrase.SecretName != "":
		return withReason(thingdbv1.ReasonSecretInvalid, fmt.Errorf(
			"passphrase Secret %s named in spec.passphrase.secretName not found; create it with the key %q", name, key))
	}

	// A missing generated Secret is created only before the StatefulSet
	// exists: after that the pods may have sealed their ledgers under it,
	// and a new passphrase would not open them.
	started, err := r.statefulSetExists(ctx, tn)
	if err != nil {
		return err
	}
	if started {
		return withReason(thingdbv1.ReasonSecretInvalid, fmt.Errorf(
			"passphrase Secret %s was deleted after the nodes started; restore it from a backup, because a new passphrase cannot open the existing ledgers", name))
	}

	passphrase, err := randomSecret()
	if err != nil {
		return fmt.Errorf("generate passphrase: %w", err)
	}
	secret = &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: tn.Namespace, Labels: childLabels(tn)},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{key: []byte(passphrase)},
	}
	if tn.Spec.Storage.WhenDeleted == thingdbv1.VolumeDelete {
		if err := controllerutil.SetControllerReference(tn, secret, r.Scheme); err != nil {
			return fmt.Errorf("set owner of passphrase Secret %s: %w", name, err)
		}
	}
	if err := r.Create(ctx, secret); err != nil {
		return fmt.Errorf("create passphrase Secret %s: %w", name, err)
	}
	r.recordChange(ctx, tn, secret, thingdbv1.EventCreated, "Create", "Created passphrase Secret %s", name)
	return nil
}

// reconcileTokens adopts or generates the Secret of each declared token,
// deletes generated token Secrets of tokens no longer declared, and writes
// the token records the nodes read, with those of the operator's own
// tokens, into `<name>-token-hashes`.
func (r *ThingNodeReconciler) reconcileTokens(ctx context.Context, tn *thingdbv1.ThingNode) error {
	records := make(map[string][]byte, len(tn.Spec.Tokens))
	for _, token := range tn.Spec.Tokens {
		value, err := r.reconcileTokenSecret(ctx, tn, token)
		if err != nil {
			return err
		}
		sum := sha256.Sum256([]byte(value))
		record, err := json.Marshal(tokenRecord{Name: token.Name, Scopes: scopeStrings(token.Scopes), SHA256: hex.EncodeToString(sum[:])})
		if err != nil {
			return fmt.Errorf("encode record of token %s: %w", token.Name, err)
		}
		records[token.Name+".json"] = record
	}

	if err := r.deleteUndeclaredTokenSecrets(ctx, tn); err != nil {
		return err
	}

	// The operator's export token for peers and read token for sync status.
	operatorRecords, err := r.reconcileSyncTokens(ctx, tn)
	if err != nil {
		return err
	}
	maps.Copy(records, operatorRecords)

	_, err = ensureChild(ctx, r, tn, child[*corev1.Secret]{
		kind: "Secret",
		desired: &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: tokenHashesSecretName(tn), Namespace: tn.Namespace, Labels: childLabels(tn)},
			Type:       corev1.SecretTypeOpaque,
			Data:       records,
		},
		live: &corev1.Secret{},
		inSync: func(desired, live *corev1.Secret) bool {
			return labelsInSync(desired.Labels, live.Labels) && secretDataEqual(desired.Data, live.Data)
		},
		apply: func(desired, live *corev1.Secret) {
			live.Labels = mergeLabels(desired.Labels, live.Labels)
			live.Data = desired.Data
			live.StringData = nil
		},
	})
	return err
}

// reconcileTokenSecret returns the token of one declared token, from its
// existing Secret or from a Secret it generates. It never changes the token
// of an existing Secret. On a generated Secret it keeps the `scopes` key,
// which is informational, equal to the spec.
func (r *ThingNodeReconciler) reconcileTokenSecret(ctx context.Context, tn *thingdbv1.ThingNode, token thingdbv1.TokenSpec) (string, error) {
	name := tokenSecretName(tn, token)
	scopes := strings.Join(scopeStrings(token.Scopes), ",")
	secret := &corev1.Secret{}
	err := r.Get(ctx, client.ObjectKey{Namespace: tn.Namespace, Name: name}, secret)

	switch {
	case err == nil:
		// A Secret mounted from a file often ends in a newline that is not
		// part of the token.
		value := strings.TrimRight(string(secret.Data[keyToken]), "\r\n")
		if value == "" {
			return "", withReason(thingdbv1.ReasonSecretInvalid, fmt.Errorf(
				"token Secret %s has no key %q; add the token under that key or delete the Secret to let the operator generate one", name, keyToken))
		}
		if metav1.IsControlledBy(secret, tn) && string(secret.Data[keyScopes]) != scopes {
			secret.Data[keyScopes] = []byte(scopes)
			if err := r.Update(ctx, secret); err != nil {
				return "", fmt.Errorf("update scopes of token Secret %s: %w", name, err)
			}
			r.recordChange(ctx, tn, secret, thingdbv1.EventUpdated, "Update", "Updated the scopes of token Secret %s", name)
		}
		return value, nil
	case !apierrors.IsNotFound(err):
		return "", fmt.Errorf("get token Secret %s: %w", name, err)
	case token.SecretName != "":
		return "", withReason(thingdbv1.ReasonSecretInvalid, fmt.Errorf(
			"token Secret %s named for token %s not found; create it with the key %q or clear secretName to let the operator generate one",
			name, token.Name, keyToken))
	}

	value, err := randomSecret()
	if err != nil {
		return "", fmt.Errorf("generate token %s: %w", token.Name, err)
	}
	labels := childLabels(tn)
	labels[labelToken] = token.Name
	secret = &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: tn.Namespace, Labels: labels},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{keyToken: []byte(value), keyScopes: []byte(scopes)},
	}
	if err := controllerutil.SetControllerReference(tn, secret, r.Scheme); err != nil {
		return "", fmt.Errorf("set owner of token Secret %s: %w", name, err)
	}
	if err := r.Create(ctx, secret); err != nil {
		return "", fmt.Errorf("create token Secret %s: %w", name, err)
	}
	r.recordChange(ctx, tn, secret, thingdbv1.EventCreated, "Create", "Created token Secret %s", name)
	return value, nil
}

// deleteUndeclaredTokenSecrets deletes the token Secrets this ThingNode
// generated for tokens that the spec no longer declares. Adopted Secrets
// are never deleted.
func (r *ThingNodeReconciler) deleteUndeclaredTokenSecrets(ctx context.Context, tn *thingdbv1.ThingNode) error {
	var secrets corev1.SecretList
	if err := r.List(ctx, &secrets, client.InNamespace(tn.Namespace),
		client.MatchingLabels{LabelThingNode: tn.Name}, client.HasLabels{labelToken}); err != nil {
		return fmt.Errorf("list token Secrets of %s: %w", tn.Name, err)
	}

	for i := range secrets.Items {
		secret := &secrets.Items[i]
		declared := slices.ContainsFunc(tn.Spec.Tokens, func(token thingdbv1.TokenSpec) bool {
			return tokenSecretName(tn, token) == secret.Name
		})
		if declared || !metav1.IsControlledBy(secret, tn) {
			continue
		}
		if err := deleteChild(ctx, r, tn, "Secret", secret); err != nil {
			return err
		}
	}
	return nil
}

// reconcilePeers creates the peer file Secret with an empty peer list when it
// is missing. Its peer file belongs to the ThingSync controller, so this
// controller restores only the labels and a missing peer file.
func (r *ThingNodeReconciler) reconcilePeers(ctx context.Context, tn *thingdbv1.ThingNode) error {
	_, err := ensureChild(ctx, r, tn, child[*corev1.Secret]{
		kind: "Secret",
		desired: &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: peersSecretName(tn), Namespace: tn.Namespace, Labels: childLabels(tn)},
			Type:       corev1.SecretTypeOpaque,
			Data:       map[string][]byte{keyPeers: []byte(emptyPeerFile)},
		},
		live: &corev1.Secret{},
		inSync: func(desired, live *corev1.Secret) bool {
			return labelsInSync(desired.Labels, live.Labels) && len(live.Data[keyPeers]) > 0
		},
		apply: func(desired, live *corev1.Secret) {
			live.Labels = mergeLabels(desired.Labels, live.Labels)
			if len(live.Data[keyPeers]) == 0 {
				if live.Data == nil {
					live.Data = map[string][]byte{}
				}
				live.Data[keyPeers] = desired.Data[keyPeers]
			}
		},
	})
	return err
}

// scopeStrings returns scopes as sorted strings, so the records do not change
// when only the order in the spec does.
func scopeStrings(scopes []thingdbv1.TokenScope) []string {
	out := make([]string, len(scopes))
	for i, scope := range scopes {
		out[i] = string(scope)
	}
	slices.Sort(out)
	return out
}

// secretDataEqual reports whether two Secret data maps hold the same keys and
// values. A nil map equals an empty one.
func secretDataEqual(a, b map[string][]byte) bool {
	return maps.EqualFunc(a, b, func(x, y []byte) bool { return string(x) == string(y) })
}
