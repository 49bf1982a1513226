package controllers

import (
	"context"
	"errors"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	thingdbv1 "github.com/thingdb/thingdb/api/v1alpha1"
)

// DefaultClusterDomain is the DNS domain of Services unless --cluster-domain
// sets another.
const DefaultClusterDomain = "cluster.local"

// identityRetry is the delay before a reconcile reads again the identity of
// a ready pod that did not return it.
const identityRetry = 30 * time.Second

// secretRefIndex indexes ThingNodes by the Secrets their spec names, so a
// change to an adopted Secret reconciles the ThingNodes that use it.
const secretRefIndex = "spec.secretRefs"

// ThingNodeReconciler reconciles a ThingNode into its StatefulSet, Services,
// Secrets, TLS certificate and PodDisruptionBudget.
type ThingNodeReconciler struct {
	client.Client
	Scheme *runtime.Scheme

	// Recorder records an Event for every change made to the cluster.
	Recorder events.EventRecorder

	// Identity reads the identity of ready node pods.
	Identity *IdentityReader

	// ClusterDomain is the DNS domain of Services in certificate names.
	// Empty means DefaultClusterDomain.
	ClusterDomain string

	// Now returns the current time for certificate checks. Nil means
	// time.Now.
	Now func() time.Time
}

// +kubebuilder:rbac:groups=thingdb.io,resources=thingnodes,verbs=get;list;watch
// +kubebuilder:rbac:groups=thingdb.io,resources=thingnodes/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=thingdb.io,resources=thingnodes/finalizers,verbs=update
// +kubebuilder:rbac:groups=apps,resources=statefulsets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=services;secrets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=cert-manager.io,resources=certificates,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile brings the children of one ThingNode to the state of its spec
// and writes what it observed into the status.
func (r *ThingNodeReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	tn := &thingdbv1.ThingNode{}
	if err := r.Get(ctx, req.NamespacedName, tn); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}

	// Children go with the ThingNode through their owner references, and
	// the claims stay unless the StatefulSet's retention policy deletes
	// them, so deletion needs no finalizer and no work here.
	if !tn.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}

	var obs observation
	if tn.Spec.Paused {
		logf.FromContext(ctx).V(1).Info("ThingNode is paused; changing no child")
		obs.err = r.observe(ctx, tn, &obs)
	} else {
		obs.err = r.reconcileChildren(ctx, tn, &obs)
	}

	if err := r.writeStatus(ctx, tn, &obs); err != nil {
		if apierrors.IsConflict(err) {
			// The ThingNode changed since it was read. A change that is not
			// to the spec brings no watch event, so look again soon.
			return ctrl.Result{RequeueAfter: time.Second}, nil
		}
		return ctrl.Result{}, errors.Join(obs.err, err)
	}
	if obs.err != nil {
		if errorReason(obs.err) != thingdbv1.ReasonReconcileFailed {
			// A spec or Secret problem that retrying cannot fix: the watches
			// start a reconcile when the ThingNode or the Secret changes.
			r.recordFailure(tn, obs.err)
			return ctrl.Result{}, nil
		}
		r.recordFailure(tn, obs.err)
		return ctrl.Result{}, obs.err
	}
	return ctrl.Result{RequeueAfter: obs.requeueAfter()}, nil
}

// reconcileChildren runs the steps of a reconcile in order and stops at the
// first error. Each step records what it found in obs.
func (r *ThingNodeReconciler) reconcileChildren(ctx context.Context, tn *thingdbv1.ThingNode, obs *observation) error {
	// The passphrase Secret, generated once unless the spec names one.
	if err := r.reconcilePassphrase(ctx, tn); err != nil {
		return err
	}

	// One Secret per token and the Secret of token records the nodes read.
	if err := r.reconcileTokens(ctx, tn); err != nil {
		return err
	}

	// The peer file Secret, empty until a ThingSync fills it.
	if err := r.reconcilePeers(ctx, tn); err != nil {
		return err
	}

	// The TLS Secret, from cert-manager or the operator CA.
	tlsState, err := r.reconcileTLS(ctx, tn)
	obs.tls = &tlsState
	if err != nil {
		return err
	}

	// The headless and client Services.
	if err := r.reconcileServices(ctx, tn); err != nil {
		return err
	}

	// The StatefulSet that runs the nodes.
	if obs.statefulSet, err = r.reconcileStatefulSet(ctx, tn); err != nil {
		return err
	}

	// The PodDisruptionBudget, only with more than one replica.
	if err := r.reconcilePodDisruptionBudget(ctx, tn); err != nil {
		return err
	}

	// The identity of every ready pod.
	obs.nodes, obs.identityErr = r.readIdentities(ctx, tn)
	obs.nodesRead = true
	return nil
}

// observe fills obs without changing any child, for a paused ThingNode.
func (r *ThingNodeReconciler) observe(ctx context.Context, tn *thingdbv1.ThingNode, obs *observation) error {
	sts := &appsv1.StatefulSet{}
	if err := r.Get(ctx, client.ObjectKey{Namespace: tn.Namespace, Name: statefulSetName(tn)}, sts); err == nil {
		obs.statefulSet = sts
	} else if !apierrors.IsNotFound(err) {
		return err
	}
	obs.nodes = tn.Status.Nodes
	return nil
}

// recordFailure records an Event for a reconcile that stopped on err. The
// error text names objects and keys, never Secret values.
func (r *ThingNodeReconciler) recordFailure(tn *thingdbv1.ThingNode, err error) {
	if r.Recorder != nil {
		r.Recorder.Eventf(tn, nil, corev1.EventTypeWarning, thingdbv1.EventReconcileFailed, "Reconcile", "%s", err.Error())
	}
}

func (r *ThingNodeReconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// CacheOptions returns the cache settings the controller needs: only the
// given namespaces when there are any (all when none), and of all pods only
// the node pods.
func CacheOptions(namespaces []string) cache.Options {
	opts := cache.Options{
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Pod{}: {Label: labels.SelectorFromSet(labels.Set{labelManagedBy: ManagedByValue})},
		},
	}
	if len(namespaces) > 0 {
		opts.DefaultNamespaces = map[string]cache.Config{}
		for _, ns := range namespaces {
			opts.DefaultNamespaces[ns] = cache.Config{}
		}
	}
	return opts
}

// SetupWithManager registers the controller and its watches: the ThingNodes,
// every kind of child, the pods (readiness decides when identities are read)
// and the Secrets a ThingNode names or that carry its label.
func (r *ThingNodeReconciler) SetupWithManager(mgr ctrl.Manager, maxConcurrentReconciles int) error {
	if r.Identity == nil {
		r.Identity = &IdentityReader{}
	}
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &thingdbv1.ThingNode{}, secretRefIndex, secretRefs); err != nil {
		return err
	}

	return ctrl.NewControllerManagedBy(mgr).
		For(&thingdbv1.ThingNode{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Owns(&appsv1.StatefulSet{}).
		Owns(&corev1.Service{}).
		Owns(&corev1.Secret{}).
		Owns(&policyv1.PodDisruptionBudget{}).
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.thingNodesForSecret)).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(thingNodeForPod)).
		WithOptions(controller.Options{MaxConcurrentReconciles: maxConcurrentReconciles}).
		Named("thingnode").
		Complete(r)
}

// secretRefs returns the Secrets a ThingNode's spec names.
func secretRefs(obj client.Object) []string {
	tn, ok := obj.(*thingdbv1.ThingNode)
	if !ok {
		return nil
	}
	var names []string
	if tn.Spec.Passphrase.SecretName != "" {
		names = append(names, tn.Spec.Passphrase.SecretName)
	}
	for _, token := range tn.Spec.Tokens {
		if token.SecretName != "" {
			names = append(names, token.SecretName)
		}
	}
	return names
}

// thingNodesForSecret maps a Secret to the ThingNode in its label and to
// every ThingNode whose spec names it.
func (r *ThingNodeReconciler) thingNodesForSecret(ctx context.Context, obj client.Object) []reconcile.Request {
	var requests []reconcile.Request
	if name := obj.GetLabels()[LabelThingNode]; name != "" {
		requests = append(requests, reconcile.Request{NamespacedName: client.ObjectKey{Namespace: obj.GetNamespace(), Name: name}})
	}

	var list thingdbv1.ThingNodeList
	if err := r.List(ctx, &list, client.InNamespace(obj.GetNamespace()), client.MatchingFields{secretRefIndex: obj.GetName()}); err != nil {
		logf.FromContext(ctx).Error(err, "Cannot list the ThingNodes that name a Secret", "secret", obj.GetName())
		return requests
	}
	for _, tn := range list.Items {
		requests = append(requests, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&tn)})
	}
	return requests
}

// thingNodeForPod maps a node pod to its ThingNode.
func thingNodeForPod(_ context.Context, obj client.Object) []reconcile.Request {
	labels := obj.GetLabels()
	if labels[labelManagedBy] != ManagedByValue || labels[LabelThingNode] == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: client.ObjectKey{Namespace: obj.GetNamespace(), Name: labels[LabelThingNode]}}}
}
