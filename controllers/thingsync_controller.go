package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	thingdbv1 "github.com/thingdb/thingdb/api/v1alpha1"
)

// ThingSyncReconciler renders the peer file of every ThingNode from the
// ThingSyncs that name it, and aggregates the nodes' sync status into each
// ThingSync's status.
//
// The peer file of a ThingNode is the union of every ThingSync in its
// namespace, so each reconcile renders the peer files of the whole
// namespace and then writes the status of the one ThingSync requested.
type ThingSyncReconciler struct {
	client.Client
	Scheme *runtime.Scheme

	// Recorder records an Event for every peer file written and a Warning
	// for a fork or a key mismatch.
	Recorder events.EventRecorder

	// Nodes reads GET /v1/sync/status from node pods, with the same URL
	// resolver and HTTP client as identities.
	Nodes *IdentityReader

	// Now returns the current time for the recency of syncs. Nil means
	// time.Now.
	Now func() time.Time
}

// +kubebuilder:rbac:groups=thingdb.io,resources=thingsyncs,verbs=get;list;watch
// +kubebuilder:rbac:groups=thingdb.io,resources=thingsyncs/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=thingdb.io,resources=thingnodes,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile renders the peer files of the request's namespace and, when the
// ThingSync exists, writes its status.
func (r *ThingSyncReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	ts := &thingdbv1.ThingSync{}
	if req.Name == "" {
		// A request for a namespace without ThingSyncs (thingSyncsInNamespace).
		ts = nil
	} else if err := r.Get(ctx, req.NamespacedName, ts); err != nil {
		if !apierrors.IsNotFound(err) {
			return ctrl.Result{}, fmt.Errorf("get ThingSync %s: %w", req.NamespacedName, err)
		}
		// A deleted ThingSync no longer contributes peers: render without it.
		ts = nil
	}

	// Plan the peers of every ThingNode of the namespace.
	plan, err := r.planNamespace(ctx, req.Namespace)
	if err != nil {
		return ctrl.Result{}, err
	}

	// Write every peer file Secret whose content differs from the plan.
	renderErr := r.renderPeerFiles(ctx, plan)
	if ts == nil || !ts.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, renderErr
	}

	// Read the members' sync status and write the ThingSync's status.
	if err := r.updateStatus(ctx, ts, plan, renderErr); err != nil {
		if apierrors.IsConflict(err) {
			return ctrl.Result{RequeueAfter: time.Second}, nil
		}
		return ctrl.Result{}, errors.Join(renderErr, err)
	}
	if renderErr != nil {
		return ctrl.Result{}, renderErr
	}
	return ctrl.Result{RequeueAfter: syncInterval(ts)}, nil
}

func (r *ThingSyncReconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// SetupWithManager registers the controller and its watches: the
// ThingSyncs, the ThingNodes (their identities fill the peer files) and the
// Secrets of ThingNodes (a peer file, CA or token that changes).
func (r *ThingSyncReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Nodes == nil {
		r.Nodes = &IdentityReader{}
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&thingdbv1.ThingSync{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&thingdbv1.ThingNode{}, handler.EnqueueRequestsFromMapFunc(r.thingSyncsInNamespace)).
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.thingSyncsForSecret)).
		Named("thingsync").
		Complete(r)
}

// thingSyncsInNamespace maps an object to every ThingSync of its namespace.
// A namespace without ThingSyncs gets a request for a ThingSync that does
// not exist, so that peer files left over from a deleted one are emptied.
func (r *ThingSyncReconciler) thingSyncsInNamespace(ctx context.Context, obj client.Object) []reconcile.Request {
	var list thingdbv1.ThingSyncList
	if err := r.List(ctx, &list, client.InNamespace(obj.GetNamespace())); err != nil {
		logf.FromContext(ctx).Error(err, "Cannot list the ThingSyncs of a namespace", "namespace", obj.GetNamespace())
		return nil
	}
	if len(list.Items) == 0 {
		return []reconcile.Request{{NamespacedName: client.ObjectKey{Namespace: obj.GetNamespace(), Name: ""}}}
	}
	requests := make([]reconcile.Request, 0, len(list.Items))
	for i := range list.Items {
		requests = append(requests, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
	}
	return requests
}

// thingSyncsForSecret maps a Secret that belongs to a ThingNode to every
// ThingSync of its namespace.
func (r *ThingSyncReconciler) thingSyncsForSecret(ctx context.Context, obj client.Object) []reconcile.Request {
	if obj.GetLabels()[LabelThingNode] == "" {
		return nil
	}
	return r.thingSyncsInNamespace(ctx, obj)
}
