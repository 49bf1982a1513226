package controllers

import (
	"context"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	thingdbv1 "github.com/thingdb/thingdb/api/v1alpha1"
)

// observation is the state one reconcile found, for the status and the
// requeue.
type observation struct {
	// err stopped the reconcile; the steps after it did not run.
	err error
	// tls is the outcome of the TLS step; nil when it did not run.
	tls *tlsState
	// statefulSet is the live StatefulSet; nil when it was not read.
	statefulSet *appsv1.StatefulSet
	// nodes are the pod identities; valid when nodesRead is true.
	nodes     []thingdbv1.NodeIdentity
	nodesRead bool
	// identityErr is the reason some ready pods have no identity yet.
	identityErr error
}

// requeueAfter returns how soon to reconcile again without a watch event:
// for a TLS Secret not ready yet or due for renewal, or a pod whose identity
// could not be read. Zero means only on watch events.
func (o *observation) requeueAfter() time.Duration {
	var after time.Duration
	if o.tls != nil {
		after = o.tls.requeueAfter
	}
	if o.identityErr != nil && (after == 0 || identityRetry < after) {
		after = identityRetry
	}
	return after
}

// writeStatus builds the status from obs on a copy and writes it only when it
// differs from the status tn already has.
func (r *ThingNodeReconciler) writeStatus(ctx context.Context, tn *thingdbv1.ThingNode, obs *observation) error {
	status := tn.Status.DeepCopy()
	status.ObservedGeneration = tn.Generation
	if obs.nodesRead {
		status.Nodes = obs.nodes
	}

	want := replicas(tn)
	rolledOut := false
	if sts := obs.statefulSet; sts != nil {
		status.Replicas = sts.Status.Replicas
		status.ReadyReplicas = sts.Status.ReadyReplicas
		rolledOut = sts.Status.ObservedGeneration >= sts.Generation &&
			sts.Status.Replicas == want &&
			sts.Status.UpdatedReplicas == want &&
			sts.Status.ReadyReplicas == want
	}

	set := func(conditionType string, ok metav1.ConditionStatus, reason, message string) {
		meta.SetStatusCondition(&status.Conditions, metav1.Condition{
			Type:               conditionType,
			Status:             ok,
			Reason:             reason,
			Message:            message,
			ObservedGeneration: tn.Generation,
		})
	}

	// TLSReady, as the TLS step found it.
	switch {
	case obs.tls != nil && obs.tls.ready:
		set(thingdbv1.ConditionTLSReady, metav1.ConditionTrue, obs.tls.reason, obs.tls.message)
	case obs.tls != nil:
		set(thingdbv1.ConditionTLSReady, metav1.ConditionFalse, obs.tls.reason, obs.tls.message)
	case meta.FindStatusCondition(status.Conditions, thingdbv1.ConditionTLSReady) == nil:
		set(thingdbv1.ConditionTLSReady, metav1.ConditionUnknown, thingdbv1.ReasonTLSNotChecked,
			"the reconcile stopped before it checked the TLS Secret; see the Degraded condition")
	}
	tlsReady := meta.IsStatusConditionTrue(status.Conditions, thingdbv1.ConditionTLSReady)

	// Progressing and Ready, from the StatefulSet.
	var updated int32
	if obs.statefulSet != nil {
		updated = obs.statefulSet.Status.UpdatedReplicas
	}
	podsMessage := fmt.Sprintf("%d of %d pods run the current spec, %d are ready", updated, want, status.ReadyReplicas)
	switch {
	case tn.Spec.Paused:
		set(thingdbv1.ConditionProgressing, metav1.ConditionFalse, thingdbv1.ReasonPaused, "spec.paused is true; the operator changes no child")
		set(thingdbv1.ConditionReady, metav1.ConditionFalse, thingdbv1.ReasonPaused, "spec.paused is true; the operator changes no child")
	case !rolledOut:
		set(thingdbv1.ConditionProgressing, metav1.ConditionTrue, thingdbv1.ReasonRollingOut, podsMessage)
		set(thingdbv1.ConditionReady, metav1.ConditionFalse, thingdbv1.ReasonReplicasNotReady, podsMessage)
	case !tlsReady:
		set(thingdbv1.ConditionProgressing, metav1.ConditionFalse, thingdbv1.ReasonRolloutComplete, podsMessage)
		set(thingdbv1.ConditionReady, metav1.ConditionFalse, thingdbv1.ReasonTLSNotReady,
			fmt.Sprintf("Secret %s is not ready; see the TLSReady condition", tlsSecretName(tn)))
	default:
		set(thingdbv1.ConditionProgressing, metav1.ConditionFalse, thingdbv1.ReasonRolloutComplete, podsMessage)
		set(thingdbv1.ConditionReady, metav1.ConditionTrue, thingdbv1.ReasonReplicasReady, podsMessage)
	}

	// Degraded, from the first error of the reconcile.
	switch {
	case obs.err != nil:
		set(thingdbv1.ConditionDegraded, metav1.ConditionTrue, errorReason(obs.err), obs.err.Error())
	case obs.identityErr != nil:
		set(thingdbv1.ConditionDegraded, metav1.ConditionTrue, thingdbv1.ReasonIdentityUnavailable, obs.identityErr.Error())
	default:
		set(thingdbv1.ConditionDegraded, metav1.ConditionFalse, thingdbv1.ReasonReconcileSucceeded, "every child matches the spec")
	}

	if equality.Semantic.DeepEqual(&tn.Status, status) {
		return nil
	}
	tn.Status = *status
	if err := r.Status().Update(ctx, tn); err != nil {
		return fmt.Errorf("update status of ThingNode %s: %w", tn.Name, err)
	}
	logf.FromContext(ctx).V(1).Info("Updated status", "ready", meta.IsStatusConditionTrue(status.Conditions, thingdbv1.ConditionReady),
		"readyReplicas", status.ReadyReplicas)
	return nil
}
