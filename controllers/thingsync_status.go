package controllers

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	thingdbv1 "github.com/thingdb/thingdb/api/v1alpha1"
	"github.com/thingdb/thingdb/internal/pki"
	"github.com/thingdb/thingdb/internal/syncstatus"
)

// maxSyncStatusBody caps the sync status response the operator reads.
const maxSyncStatusBody = 4 << 20

// recentSyncs is how many intervals old a pair's last success may be for
// the pair to count as synced.
const recentSyncs = 3

// ReadSyncStatus returns what GET /v1/sync/status of one pod returns,
// presenting token, which needs the read scope.
func (ir *IdentityReader) ReadSyncStatus(ctx context.Context, tn *thingdbv1.ThingNode, pod string, roots *x509.CertPool, token []byte) (*syncstatus.Response, error) {
	podURL := DefaultPodURL
	if ir.PodURL != nil {
		podURL = ir.PodURL
	}
	httpClient := defaultIdentityClient
	if ir.HTTPClient != nil {
		httpClient = ir.HTTPClient
	}
	url := strings.TrimSuffix(podURL(tn, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: pod, Namespace: tn.Namespace}}), "/") + "/v1/sync/status"

	ctx, cancel := context.WithTimeout(ctx, identityTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("build sync status request for %s: %w", url, err)
	}
	req.Header.Set("Authorization", "Bearer "+string(token))
	resp, err := httpClient(roots).Do(req)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", url, err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("get %s: status %s", url, resp.Status)
	}

	var body syncstatus.Response
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxSyncStatusBody)).Decode(&body); err != nil {
		return nil, fmt.Errorf("decode sync status from %s: %w", url, err)
	}
	return &body, nil
}

// pairState accumulates the pod pairs of one ThingNode pair.
type pairState struct {
	status    thingdbv1.SyncPairStatus
	expected  int // pod pairs the peer files give
	observed  int // pod pairs a node reported
	succeeded int // observed pod pairs with a last success
	oldest    *time.Time
	fork      string // a sentence on the first fork seen
	mismatch  string // a sentence on the first key mismatch seen
}

// updateStatus reads the sync status of every member pod, aggregates it per
// pair into a copy of ts's status, and writes the status when it changed.
func (r *ThingSyncReconciler) updateStatus(ctx context.Context, ts *thingdbv1.ThingSync, plan *namespacePlan, renderErr error) error {
	sp := plan.syncs[ts.Name]
	status := ts.Status.DeepCopy()
	status.ObservedGeneration = ts.Generation
	status.Members = sp.members
	status.MemberCount = int32(len(sp.members))

	setCondition := func(condType string, s metav1.ConditionStatus, reason, message string) {
		meta.SetStatusCondition(&status.Conditions, metav1.Condition{
			Type: condType, Status: s, Reason: reason, Message: message, ObservedGeneration: ts.Generation,
		})
	}

	// Ready: every member found and its peers pinned in the peer files.
	ready, readyReason, readyMessage := readyCondition(ts, sp, plan, renderErr)
	setCondition(thingdbv1.ConditionReady, ready, readyReason, readyMessage)

	if ts.Spec.Suspend || sp.err != nil {
		reason, message := thingdbv1.ReasonSuspended, "spec.suspend is true: this ThingSync gives its members no peer"
		if sp.err != nil {
			reason, message = thingdbv1.ReasonInvalidTopology, sp.err.Error()
		}
		status.Pairs, status.LagEntries, status.LastSyncTime = nil, 0, nil
		setCondition(thingdbv1.ConditionSynced, metav1.ConditionFalse, reason, message)
		setCondition(thingdbv1.ConditionForkDetected, metav1.ConditionFalse, thingdbv1.ReasonNoFork, "no pair is synced")
		return r.writeSyncStatus(ctx, ts, status)
	}

	// Synced and per pair: what the members' pods report.
	pairs, readErrs := r.collectPairs(ctx, sp, plan)
	r.summarizePairs(ts, status, sp, pairs, readErrs, setCondition)

	// ForkDetected: a fork or key mismatch on any pair, with a Warning event
	// when it is new.
	forkStatus, forkReason, forkMessage := metav1.ConditionFalse, thingdbv1.ReasonNoFork, "no member reports a fork or a key mismatch"
	for _, p := range sp.pairs {
		state := pairs[p]
		switch {
		case state.fork != "":
			forkStatus, forkReason, forkMessage = metav1.ConditionTrue, thingdbv1.ReasonFork, state.fork
		case state.mismatch != "" && forkReason != thingdbv1.ReasonFork:
			forkStatus, forkReason, forkMessage = metav1.ConditionTrue, thingdbv1.ReasonKeyMismatch, state.mismatch
		}
	}
	previous := meta.FindStatusCondition(ts.Status.Conditions, thingdbv1.ConditionForkDetected)
	setCondition(thingdbv1.ConditionForkDetected, forkStatus, forkReason, forkMessage)
	if forkStatus == metav1.ConditionTrue && r.Recorder != nil &&
		(previous == nil || previous.Status != metav1.ConditionTrue || previous.Message != forkMessage) {
		r.Recorder.Eventf(ts, nil, corev1.EventTypeWarning, thingdbv1.EventForkDetected, "Sync", "%s", forkMessage)
	}

	return r.writeSyncStatus(ctx, ts, status)
}

// readyCondition returns the Ready condition of a ThingSync.
func readyCondition(ts *thingdbv1.ThingSync, sp *syncPlan, plan *namespacePlan, renderErr error) (metav1.ConditionStatus, string, string) {
	var pending []string
	for _, m := range sp.members {
		pending = append(pending, plan.pending[m]...)
	}
	slices.Sort(pending)
	pending = slices.Compact(pending)

	switch {
	case ts.Spec.Suspend:
		return metav1.ConditionFalse, thingdbv1.ReasonSuspended, "spec.suspend is true: this ThingSync gives its members no peer"
	case sp.err != nil:
		return metav1.ConditionFalse, thingdbv1.ReasonInvalidTopology, sp.err.Error()
	case len(sp.missing) > 0:
		return metav1.ConditionFalse, thingdbv1.ReasonMembersNotFound, fmt.Sprintf(
			"ThingNodes %s named in spec.members.names not found in namespace %s; create them or remove them from the list",
			strings.Join(sp.missing, ", "), ts.Namespace)
	case len(sp.members) == 0:
		return metav1.ConditionFalse, thingdbv1.ReasonMembersNotFound, "spec.members.selector matches no ThingNode in namespace " + ts.Namespace
	case renderErr != nil:
		return metav1.ConditionFalse, thingdbv1.ReasonRenderFailed, renderErr.Error()
	case len(pending) > 0:
		return metav1.ConditionFalse, thingdbv1.ReasonIdentitiesPending, "waiting: " + strings.Join(pending, "; ")
	}
	return metav1.ConditionTrue, thingdbv1.ReasonPeersRendered, fmt.Sprintf("the peer files of %d members pin every peer pod", len(sp.members))
}

// collectPairs reads the sync status of every member pod with a known
// identity and adds each reported peer to the pair it belongs to.
func (r *ThingSyncReconciler) collectPairs(ctx context.Context, sp *syncPlan, plan *namespacePlan) (map[pair]*pairState, []error) {
	// The ThingNode of each pinned node id.
	owner := map[string]string{}
	for _, m := range sp.members {
		for _, node := range plan.thingNodes[m].Status.Nodes {
			owner[node.NodeID] = m
		}
	}

	pairs := map[pair]*pairState{}
	for _, p := range sp.pairs {
		pairs[p] = &pairState{status: thingdbv1.SyncPairStatus{From: p.from, To: p.to}}
		from := plan.thingNodes[p.from]
		to := plan.thingNodes[p.to]
		fromPods := knownPods(from)
		for _, toPod := range knownPods(to) {
			for _, fromPod := range fromPods {
				if toPod != fromPod {
					pairs[p].expected++
				}
			}
		}
	}

	var errs []error
	for _, m := range sp.members {
		tn := plan.thingNodes[m]
		pods := knownPods(tn)
		if len(pods) == 0 {
			continue
		}
		roots, token, err := r.statusCredentials(ctx, tn)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, pod := range pods {
			body, err := r.Nodes.ReadSyncStatus(ctx, tn, pod, roots, token)
			if err != nil {
				errs = append(errs, fmt.Errorf("read sync status of pod %s: %w", pod, err))
				continue
			}
			for _, peer := range body.Peers {
				state := pairs[pair{from: owner[peer.NodeID], to: m}]
				if state == nil {
					continue // a peer another ThingSync gives this member
				}
				addPeerStatus(state, pod, peer)
			}
		}
	}
	return pairs, errs
}

// addPeerStatus adds one pod's report on one peer to its pair.
func addPeerStatus(state *pairState, pod string, peer syncstatus.Peer) {
	state.observed++
	state.status.EntriesTransferred += int64(peer.EntriesTransferred)
	state.status.LagEntries += int64(peer.LagEntries)
	if peer.LastSuccess != nil {
		state.succeeded++
		if state.oldest == nil || peer.LastSuccess.Before(*state.oldest) {
			state.oldest = peer.LastSuccess
		}
	}
	if peer.LastError != "" && state.status.LastError == "" {
		state.status.LastError = fmt.Sprintf("pod %s pulling from %s: %s", pod, peer.Name, peer.LastError)
		state.status.LastErrorReason = peer.LastErrorReason
	}
	if (peer.ForkDetected || peer.LastErrorReason == syncstatus.ReasonFork) && state.fork == "" {
		state.fork = fmt.Sprintf("pod %s and peer %s hold different entries", pod, peer.Name)
		if peer.Fork != nil {
			state.fork += fmt.Sprintf(" for origin %s sequence %d", peer.Fork.Origin, peer.Fork.Sequence)
		}
		state.fork += "; compare both ledgers with thingdb verify before changing either"
	}
	if peer.LastErrorReason == syncstatus.ReasonKeyMismatch && state.mismatch == "" {
		state.mismatch = fmt.Sprintf("pod %s rejected peer %s: it does not hold the pinned node id and key (%s)", pod, peer.Name, peer.LastError)
	}
}

// summarizePairs writes the pairs, the totals and the Synced condition.
func (r *ThingSyncReconciler) summarizePairs(ts *thingdbv1.ThingSync, status *thingdbv1.ThingSyncStatus, sp *syncPlan, pairs map[pair]*pairState, readErrs []error,
	setCondition func(string, metav1.ConditionStatus, string, string)) {
	now := r.now()
	recent := recentSyncs * syncInterval(ts)
	status.Pairs = make([]thingdbv1.SyncPairStatus, 0, len(sp.pairs))
	status.LagEntries = 0
	var oldest *time.Time
	allSucceeded := true
	var failing, waiting []string

	for _, p := range sp.pairs {
		state := pairs[p]
		name := p.from + " to " + p.to
		complete := state.expected > 0 && state.observed >= state.expected && state.succeeded >= state.expected
		if complete {
			t := metav1.NewTime(state.oldest.UTC().Truncate(time.Second))
			state.status.LastSuccess = &t
			if oldest == nil || state.oldest.Before(*oldest) {
				oldest = state.oldest
			}
		} else {
			allSucceeded = false
		}
		status.Pairs = append(status.Pairs, state.status)
		status.LagEntries += state.status.LagEntries

		switch {
		case state.status.LastError != "":
			failing = append(failing, fmt.Sprintf("%s: %s: %s", name, state.status.LastErrorReason, state.status.LastError))
		case !complete:
			waiting = append(waiting, name+": no sync yet")
		case now.Sub(*state.oldest) > recent:
			waiting = append(waiting, fmt.Sprintf("%s: last sync %s ago", name, now.Sub(*state.oldest).Truncate(time.Second)))
		case state.status.LagEntries > 0:
			waiting = append(waiting, fmt.Sprintf("%s: %d entries behind", name, state.status.LagEntries))
		}
	}
	status.LastSyncTime = nil
	if allSucceeded && oldest != nil {
		t := metav1.NewTime(oldest.UTC().Truncate(time.Second))
		status.LastSyncTime = &t
	}

	switch {
	case len(readErrs) > 0:
		setCondition(thingdbv1.ConditionSynced, metav1.ConditionUnknown, thingdbv1.ReasonStatusUnavailable, errors.Join(readErrs...).Error())
	case len(failing) > 0:
		setCondition(thingdbv1.ConditionSynced, metav1.ConditionFalse, thingdbv1.ReasonSyncFailing, strings.Join(failing, "; "))
	case len(sp.pairs) == 0:
		setCondition(thingdbv1.ConditionSynced, metav1.ConditionFalse, thingdbv1.ReasonSyncPending, "no pair of members to sync")
	case len(waiting) > 0:
		setCondition(thingdbv1.ConditionSynced, metav1.ConditionFalse, thingdbv1.ReasonSyncPending, strings.Join(waiting, "; "))
	default:
		setCondition(thingdbv1.ConditionSynced, metav1.ConditionTrue, thingdbv1.ReasonAllPairsSynced,
			fmt.Sprintf("every pair synced within %s with zero lag", recent))
	}
}

// knownPods returns the pods of tn below spec.replicas whose identity is in
// its status.
func knownPods(tn *thingdbv1.ThingNode) []string {
	var pods []string
	for _, node := range tn.Status.Nodes {
		if isOwnPod(tn, node.Pod) {
			pods = append(pods, node.Pod)
		}
	}
	return pods
}

// statusCredentials returns the CA pool of tn's TLS Secret and the token
// with the read scope from its sync token Secret.
func (r *ThingSyncReconciler) statusCredentials(ctx context.Context, tn *thingdbv1.ThingNode) (*x509.CertPool, []byte, error) {
	tlsSecret := &corev1.Secret{}
	if err := r.Get(ctx, client.ObjectKey{Namespace: tn.Namespace, Name: tlsSecretName(tn)}, tlsSecret); err != nil {
		return nil, nil, fmt.Errorf("get TLS Secret %s: %w", tlsSecretName(tn), err)
	}
	roots, err := pki.CertPool(tlsSecret.Data[keyCACert])
	if err != nil {
		return nil, nil, fmt.Errorf("parse %s of Secret %s: %w", keyCACert, tlsSecretName(tn), err)
	}
	tokenSecret := &corev1.Secret{}
	if err := r.Get(ctx, client.ObjectKey{Namespace: tn.Namespace, Name: syncTokenSecretName(tn)}, tokenSecret); err != nil {
		return nil, nil, fmt.Errorf("get sync token Secret %s: %w", syncTokenSecretName(tn), err)
	}
	token := tokenSecret.Data[keyStatusToken]
	if len(token) == 0 {
		return nil, nil, fmt.Errorf("sync token Secret %s has no key %q yet", syncTokenSecretName(tn), keyStatusToken)
	}
	return roots, token, nil
}

// writeSyncStatus writes status when it differs from ts's.
func (r *ThingSyncReconciler) writeSyncStatus(ctx context.Context, ts *thingdbv1.ThingSync, status *thingdbv1.ThingSyncStatus) error {
	if equality.Semantic.DeepEqual(ts.Status, *status) {
		return nil
	}
	updated := ts.DeepCopy()
	updated.Status = *status
	if err := r.Status().Update(ctx, updated); err != nil {
		return fmt.Errorf("update status of ThingSync %s: %w", ts.Name, err)
	}
	return nil
}
