package controllers

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	thingdbv1 "github.com/thingdb/thingdb/api/v1alpha1"
)

// reasonError is an error with the Degraded reason it stands for.
type reasonError struct {
	reason string
	err    error
}

func (e *reasonError) Error() string { return e.err.Error() }
func (e *reasonError) Unwrap() error { return e.err }

// withReason tags err with a Degraded reason.
func withReason(reason string, err error) error {
	return &reasonError{reason: reason, err: err}
}

// errorReason returns the Degraded reason of err.
func errorReason(err error) string {
	if re, ok := errors.AsType[*reasonError](err); ok {
		return re.reason
	}
	return thingdbv1.ReasonReconcileFailed
}

// child describes one object the ThingNode owns: its desired state, an empty
// object of the same type to read the live one into, and how to compare and
// copy the fields the controller sets.
type child[T client.Object] struct {
	kind    string
	desired T
	live    T
	// inSync reports whether live already has every field of desired.
	// NOTE: comparisons built on DeepDerivative skip fields that desired
	// leaves empty, so a field set by hand that the operator never sets (a
	// sidecar's own field, an extra annotation) is not reverted.
	inSync func(desired, live T) bool
	// apply copies the fields of desired onto live before an update.
	apply func(desired, live T)
}

// ensureChild creates c.desired when no object of its name exists, updates
// the live object when c.inSync reports a difference, and returns the object
// as it is in the cluster afterwards. It records an Event for every write.
func ensureChild[T client.Object](ctx context.Context, r *ThingNodeReconciler, tn *thingdbv1.ThingNode, c child[T]) (T, error) {
	key := client.ObjectKeyFromObject(c.desired)
	err := r.Get(ctx, key, c.live)
	if apierrors.IsNotFound(err) {
		if err := controllerutil.SetControllerReference(tn, c.desired, r.Scheme); err != nil {
			return c.desired, fmt.Errorf("set owner of %s %s: %w", c.kind, key.Name, err)
		}
		if err := r.Create(ctx, c.desired); err != nil {
			return c.desired, fmt.Errorf("create %s %s: %w", c.kind, key.Name, err)
		}
		r.recordChange(ctx, tn, c.desired, thingdbv1.EventCreated, "Create", "Created %s %s", c.kind, key.Name)
		return c.desired, nil
	}
	if err != nil {
		return c.live, fmt.Errorf("get %s %s: %w", c.kind, key.Name, err)
	}

	if !metav1.IsControlledBy(c.live, tn) {
		return c.live, withReason(thingdbv1.ReasonChildConflict, fmt.Errorf(
			"%s %s exists and is not controlled by ThingNode %s; delete or rename it so the operator can create its own",
			c.kind, key.Name, tn.Name))
	}
	if c.inSync(c.desired, c.live) {
		return c.live, nil
	}

	c.apply(c.desired, c.live)
	if err := r.Update(ctx, c.live); err != nil {
		return c.live, fmt.Errorf("update %s %s: %w", c.kind, key.Name, err)
	}
	r.recordChange(ctx, tn, c.live, thingdbv1.EventUpdated, "Update", "Updated %s %s to match the ThingNode spec", c.kind, key.Name)
	return c.live, nil
}

// deleteChild deletes obj when it exists and tn controls it. It records an
// Event when it deleted something.
func deleteChild(ctx context.Context, r *ThingNodeReconciler, tn *thingdbv1.ThingNode, kind string, obj client.Object) error {
	key := client.ObjectKeyFromObject(obj)
	if err := r.Get(ctx, key, obj); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("get %s %s: %w", kind, key.Name, err)
	}
	if !metav1.IsControlledBy(obj, tn) {
		return nil
	}
	if err := r.Delete(ctx, obj); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete %s %s: %w", kind, key.Name, err)
	}
	r.recordChange(ctx, tn, obj, thingdbv1.EventDeleted, "Delete", "Deleted %s %s", kind, key.Name)
	return nil
}

// recordChange logs a change made to the cluster and records it as an Event
// on tn that refers to the changed object.
func (r *ThingNodeReconciler) recordChange(ctx context.Context, tn *thingdbv1.ThingNode, obj client.Object, reason, action, format string, args ...any) {
	logf.FromContext(ctx).Info(fmt.Sprintf(format, args...), "child", obj.GetName())
	if r.Recorder != nil {
		r.Recorder.Eventf(tn, obj, corev1.EventTypeNormal, reason, action, format, args...)
	}
}

// mergeLabels returns the labels of live with every label of desired set.
func mergeLabels(desired, live map[string]string) map[string]string {
	merged := make(map[string]string, len(live)+len(desired))
	for k, v := range live {
		merged[k] = v
	}
	for k, v := range desired {
		merged[k] = v
	}
	return merged
}

// labelsInSync reports whether live has every label of desired.
func labelsInSync(desired, live map[string]string) bool {
	for k, v := range desired {
		if live[k] != v {
			return false
		}
	}
	return true
}
