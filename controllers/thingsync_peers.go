package controllers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	thingdbv1 "github.com/thingdb/thingdb/api/v1alpha1"
	"github.com/thingdb/thingdb/internal/peerfile"
)

// Defaults of a ThingSync built without API defaults, equal to the CRD's.
const (
	defaultSyncInterval  = 30 * time.Second
	defaultSyncBatchSize = 1000
)

// pair is one direction of exchange between two ThingNodes: the pods of to
// pull from the pods of from. A pair with from == to is the replicas of one
// ThingNode pulling from each other.
type pair struct{ from, to string }

// syncPlan is the members and pairs of one ThingSync.
type syncPlan struct {
	members []string // found members, sorted
	missing []string // names in spec.members.names that do not exist
	pairs   []pair   // directed, sorted, with a self pair for every member with several replicas
	err     error    // a topology that names a ThingNode that is not a member
}

// namespacePlan is the peers of every ThingNode of a namespace.
type namespacePlan struct {
	namespace  string
	thingNodes map[string]*thingdbv1.ThingNode
	syncs      map[string]*syncPlan // by ThingSync name
	// sources lists, for each ThingNode, the ThingNodes its pods pull from.
	sources map[string]map[string]bool
	// interval and batchSize are the shortest and smallest over the active
	// ThingSyncs that give a ThingNode peers.
	interval  map[string]time.Duration
	batchSize map[string]int32
	// pending lists the ThingNodes whose peer files lack a pod, because its
	// identity, CA or token is not known yet, with the reason.
	pending map[string][]string
}

// syncInterval returns spec.interval, or the default when it is unset.
func syncInterval(ts *thingdbv1.ThingSync) time.Duration {
	if ts.Spec.Interval == nil || ts.Spec.Interval.Duration <= 0 {
		return defaultSyncInterval
	}
	return ts.Spec.Interval.Duration
}

func syncBatchSize(ts *thingdbv1.ThingSync) int32 {
	if ts.Spec.BatchSize <= 0 {
		return defaultSyncBatchSize
	}
	return ts.Spec.BatchSize
}

// planNamespace lists the ThingSyncs and ThingNodes of namespace and works
// out which ThingNode pulls from which.
func (r *ThingSyncReconciler) planNamespace(ctx context.Context, namespace string) (*namespacePlan, error) {
	var syncs thingdbv1.ThingSyncList
	if err := r.List(ctx, &syncs, client.InNamespace(namespace)); err != nil {
		return nil, fmt.Errorf("list ThingSyncs in %s: %w", namespace, err)
	}
	var thingNodes thingdbv1.ThingNodeList
	if err := r.List(ctx, &thingNodes, client.InNamespace(namespace)); err != nil {
		return nil, fmt.Errorf("list ThingNodes in %s: %w", namespace, err)
	}

	plan := &namespacePlan{
		namespace:  namespace,
		thingNodes: map[string]*thingdbv1.ThingNode{},
		syncs:      map[string]*syncPlan{},
		sources:    map[string]map[string]bool{},
		interval:   map[string]time.Duration{},
		batchSize:  map[string]int32{},
		pending:    map[string][]string{},
	}
	for i := range thingNodes.Items {
		tn := &thingNodes.Items[i]
		if tn.DeletionTimestamp.IsZero() {
			plan.thingNodes[tn.Name] = tn
		}
	}

	for i := range syncs.Items {
		ts := &syncs.Items[i]
		if !ts.DeletionTimestamp.IsZero() {
			continue
		}
		sp := planSync(ts, plan.thingNodes)
		plan.syncs[ts.Name] = sp
		if ts.Spec.Suspend || sp.err != nil {
			continue
		}
		for _, p := range sp.pairs {
			if plan.sources[p.to] == nil {
				plan.sources[p.to] = map[string]bool{}
			}
			plan.sources[p.to][p.from] = true
			if d, ok := plan.interval[p.to]; !ok || syncInterval(ts) < d {
				plan.interval[p.to] = syncInterval(ts)
			}
			if b, ok := plan.batchSize[p.to]; !ok || syncBatchSize(ts) < b {
				plan.batchSize[p.to] = syncBatchSize(ts)
			}
		}
	}
	return plan, nil
}

// planSync returns the members and directed pairs of one ThingSync.
func planSync(ts *thingdbv1.ThingSync, thingNodes map[string]*thingdbv1.ThingNode) *syncPlan {
	sp := &syncPlan{}
	if ts.Spec.Members.Selector != nil {
		selector, err := metav1.LabelSelectorAsSelector(ts.Spec.Members.Selector)
		if err != nil {
			sp.err = fmt.Errorf("invalid spec.members.selector: %w", err)
			return sp
		}
		for name, tn := range thingNodes {
			if selector.Matches(labels.Set(tn.Labels)) {
				sp.members = append(sp.members, name)
			}
		}
	} else {
		for _, name := range ts.Spec.Members.Names {
			if thingNodes[name] != nil {
				sp.members = append(sp.members, name)
			} else {
				sp.missing = append(sp.missing, name)
			}
		}
	}
	slices.Sort(sp.members)
	sort.Strings(sp.missing)

	isMember := func(name string) bool { return slices.Contains(sp.members, name) }
	seen := map[pair]bool{}
	add := func(p pair) {
		if !seen[p] {
			seen[p] = true
			sp.pairs = append(sp.pairs, p)
		}
	}

	switch ts.Spec.Topology.Type {
	case thingdbv1.TopologyStar:
		hub := ts.Spec.Topology.Hub
		if !isMember(hub) {
			sp.err = fmt.Errorf("topology.hub %q is not a member found; label or create that ThingNode, or choose another hub", hub)
			return sp
		}
		for _, m := range sp.members {
			if m != hub {
				add(pair{from: hub, to: m})
				add(pair{from: m, to: hub})
			}
		}
	case thingdbv1.TopologyPairs:
		for _, p := range ts.Spec.Topology.Pairs {
			for _, name := range []string{p.From, p.To} {
				if !isMember(name) {
					sp.err = fmt.Errorf("topology.pairs names %q, which is not a member found; label or create that ThingNode, or remove the pair", name)
					return sp
				}
			}
			add(pair{from: p.From, to: p.To})
		}
	default: // Mesh, also when the API server did not default the type
		for _, to := range sp.members {
			for _, from := range sp.members {
				if from != to {
					add(pair{from: from, to: to})
				}
			}
		}
	}

	// The replicas of one ThingNode always pull from each other.
	for _, m := range sp.members {
		if replicas(thingNodes[m]) > 1 {
			add(pair{from: m, to: m})
		}
	}
	slices.SortFunc(sp.pairs, func(a, b pair) int {
		if c := strings.Compare(a.from, b.from); c != 0 {
			return c
		}
		return strings.Compare(a.to, b.to)
	})
	return sp
}

// peerCAFile and peerTokenFile name the CA and token of peer ThingNode m in
// the peer file Secret, next to peers.json.
func peerCAFile(m string) string    { return "ca-" + m + ".crt" }
func peerTokenFile(m string) string { return "token-" + m }

// renderPeerFiles writes, for every ThingNode of the plan whose peer file
// Secret exists, the peer file of its pods with the CA and token of each
// peer ThingNode. A ThingNode that no active ThingSync names gets an empty
// peer list. It returns the errors joined; one Secret failing does not stop
// the others.
func (r *ThingSyncReconciler) renderPeerFiles(ctx context.Context, plan *namespacePlan) error {
	names := make([]string, 0, len(plan.thingNodes))
	for name := range plan.thingNodes {
		names = append(names, name)
	}
	slices.Sort(names)

	var errs []error
	for _, name := range names {
		data, err := r.desiredPeerData(ctx, plan, name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := r.writePeerSecret(ctx, plan.thingNodes[name], data); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// desiredPeerData returns the data of the peer file Secret of ThingNode n.
func (r *ThingSyncReconciler) desiredPeerData(ctx context.Context, plan *namespacePlan, n string) (map[string][]byte, error) {
	sources := make([]string, 0, len(plan.sources[n]))
	for m := range plan.sources[n] {
		sources = append(sources, m)
	}
	slices.Sort(sources)

	file := peerfile.File{Interval: defaultSyncInterval.String(), BatchSize: defaultSyncBatchSize, Peers: []peerfile.Peer{}}
	if d, ok := plan.interval[n]; ok {
		file.Interval = d.String()
		file.BatchSize = int(plan.batchSize[n])
	}
	data := map[string][]byte{}

	for _, m := range sources {
		peer := plan.thingNodes[m]
		ca, token, pendingReason, err := r.peerCredentials(ctx, peer)
		if err != nil {
			return nil, err
		}
		if pendingReason != "" {
			plan.pending[n] = append(plan.pending[n], pendingReason)
			continue
		}
		data[peerCAFile(m)] = ca
		data[peerTokenFile(m)] = token

		identities := map[string]thingdbv1.NodeIdentity{}
		for _, node := range peer.Status.Nodes {
			identities[node.Pod] = node
		}
		for ordinal := range replicas(peer) {
			pod := podName(peer, ordinal)
			identity, ok := identities[pod]
			if !ok {
				plan.pending[n] = append(plan.pending[n], fmt.Sprintf("identity of pod %s is not in the status of ThingNode %s yet", pod, m))
				continue
			}
			// A node skips the entry with its own node id, so one file
			// serves every pod of n, its own replicas included.
			file.Peers = append(file.Peers, peerfile.Peer{
				Name:         pod,
				URL:          DefaultPodURL(peer, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: pod, Namespace: peer.Namespace}}),
				NodeID:       identity.NodeID,
				SigningKey:   identity.SigningKey,
				RecipientKey: identity.RecipientKey,
				CAFile:       peerCAFile(m),
				TokenFile:    peerTokenFile(m),
			})
		}
	}

	if len(sources) == 0 {
		// The file the ThingNode controller creates, so that a ThingNode
		// outside every ThingSync gets no write.
		return map[string][]byte{keyPeers: []byte(emptyPeerFile)}, nil
	}
	encoded, err := json.MarshalIndent(file, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode peer file of %s: %w", n, err)
	}
	data[keyPeers] = append(encoded, '\n')
	return data, nil
}

// peerCredentials returns the CA bundle of peer's TLS Secret and the export
// token its pods accept, or the reason they are not available yet.
func (r *ThingSyncReconciler) peerCredentials(ctx context.Context, peer *thingdbv1.ThingNode) (ca, token []byte, pendingReason string, err error) {
	tlsSecret := &corev1.Secret{}
	if err := r.Get(ctx, client.ObjectKey{Namespace: peer.Namespace, Name: tlsSecretName(peer)}, tlsSecret); client.IgnoreNotFound(err) != nil {
		return nil, nil, "", fmt.Errorf("get TLS Secret %s: %w", tlsSecretName(peer), err)
	}
	if len(tlsSecret.Data[keyCACert]) == 0 {
		return nil, nil, fmt.Sprintf("Secret %s has no %s yet", tlsSecretName(peer), keyCACert), nil
	}

	tokenSecret := &corev1.Secret{}
	if err := r.Get(ctx, client.ObjectKey{Namespace: peer.Namespace, Name: syncTokenSecretName(peer)}, tokenSecret); client.IgnoreNotFound(err) != nil {
		return nil, nil, "", fmt.Errorf("get sync token Secret %s: %w", syncTokenSecretName(peer), err)
	}
	if len(tokenSecret.Data[keySyncToken]) == 0 {
		return nil, nil, fmt.Sprintf("Secret %s has no %s yet", syncTokenSecretName(peer), keySyncToken), nil
	}
	return tlsSecret.Data[keyCACert], tokenSecret.Data[keySyncToken], "", nil
}

// writePeerSecret replaces the data of tn's peer file Secret when it
// differs. A missing Secret is left to the ThingNode controller, which
// creates it; its creation starts another reconcile through the watch.
func (r *ThingSyncReconciler) writePeerSecret(ctx context.Context, tn *thingdbv1.ThingNode, data map[string][]byte) error {
	secret := &corev1.Secret{}
	if err := r.Get(ctx, client.ObjectKey{Namespace: tn.Namespace, Name: peersSecretName(tn)}, secret); err != nil {
		if client.IgnoreNotFound(err) == nil {
			logf.FromContext(ctx).V(1).Info("Waiting for the ThingNode controller to create the peer file Secret", "secret", peersSecretName(tn))
			return nil
		}
		return fmt.Errorf("get peer file Secret %s: %w", peersSecretName(tn), err)
	}
	if secretDataEqual(secret.Data, data) {
		return nil
	}

	secret.Data = data
	secret.StringData = nil
	if err := r.Update(ctx, secret); err != nil {
		return fmt.Errorf("update peer file Secret %s: %w", secret.Name, err)
	}
	logf.FromContext(ctx).Info("Updated peer file", "secret", secret.Name, "thingNode", tn.Name)
	if r.Recorder != nil {
		r.Recorder.Eventf(tn, secret, corev1.EventTypeNormal, thingdbv1.EventPeersRendered, "Update", "Updated peer file Secret %s", secret.Name)
	}
	return nil
}
