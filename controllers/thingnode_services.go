package controllers

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	thingdbv1 "github.com/thingdb/thingdb/api/v1alpha1"
)

// reconcileServices keeps the headless Service, which gives every pod a
// stable DNS name for its peers, and the client Service.
func (r *ThingNodeReconciler) reconcileServices(ctx context.Context, tn *thingdbv1.ThingNode) error {
	headless := desiredService(tn, headlessServiceName(tn), corev1.ServiceTypeClusterIP)
	headless.Spec.ClusterIP = corev1.ClusterIPNone
	// Peers resolve a pod's name before the pod is ready, for example while
	// the whole set starts at once.
	headless.Spec.PublishNotReadyAddresses = true
	if _, err := r.reconcileService(ctx, tn, headless); err != nil {
		return err
	}

	serviceType := tn.Spec.ServiceType
	if serviceType == "" {
		serviceType = corev1.ServiceTypeClusterIP
	}
	_, err := r.reconcileService(ctx, tn, desiredService(tn, clientServiceName(tn), serviceType))
	return err
}

// reconcileService keeps one Service. Node ports that the API server
// allocated are kept, so a NodePort or LoadBalancer Service keeps its ports.
func (r *ThingNodeReconciler) reconcileService(ctx context.Context, tn *thingdbv1.ThingNode, desired *corev1.Service) (*corev1.Service, error) {
	return ensureChild(ctx, r, tn, child[*corev1.Service]{
		kind:    "Service",
		desired: desired,
		live:    &corev1.Service{},
		inSync: func(desired, live *corev1.Service) bool {
			keepNodePorts(desired, live)
			return labelsInSync(desired.Labels, live.Labels) &&
				desired.Spec.Type == live.Spec.Type &&
				equality.Semantic.DeepDerivative(desired.Spec, live.Spec)
		},
		apply: func(desired, live *corev1.Service) {
			live.Labels = mergeLabels(desired.Labels, live.Labels)
			live.Spec.Type = desired.Spec.Type
			live.Spec.Ports = desired.Spec.Ports
			live.Spec.Selector = desired.Spec.Selector
			live.Spec.PublishNotReadyAddresses = desired.Spec.PublishNotReadyAddresses
			if desired.Spec.Type == corev1.ServiceTypeClusterIP {
				// These are valid only on NodePort and LoadBalancer Services.
				live.Spec.ExternalTrafficPolicy = ""
				live.Spec.AllocateLoadBalancerNodePorts = nil
			}
		},
	})
}

// keepNodePorts copies the node ports allocated to live into desired, for
// Service types that have node ports.
func keepNodePorts(desired, live *corev1.Service) {
	if desired.Spec.Type == corev1.ServiceTypeClusterIP {
		return
	}
	for i := range desired.Spec.Ports {
		for _, port := range live.Spec.Ports {
			if port.Name == desired.Spec.Ports[i].Name {
				desired.Spec.Ports[i].NodePort = port.NodePort
			}
		}
	}
}

// desiredService returns a Service of the node API port that selects the
// pods of tn.
func desiredService(tn *thingdbv1.ThingNode, name string, serviceType corev1.ServiceType) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: tn.Namespace, Labels: childLabels(tn)},
		Spec: corev1.ServiceSpec{
			Type:     serviceType,
			Selector: selectorLabels(tn),
			Ports: []corev1.ServicePort{{
				Name:       nodePortName,
				Port:       nodePort,
				TargetPort: intstr.FromString(nodePortName),
				Protocol:   corev1.ProtocolTCP,
			}},
		},
	}
}

// reconcilePodDisruptionBudget keeps a PodDisruptionBudget that lets one pod
// at a time be evicted when tn has more than one replica, and deletes it
// otherwise.
func (r *ThingNodeReconciler) reconcilePodDisruptionBudget(ctx context.Context, tn *thingdbv1.ThingNode) error {
	if replicas(tn) <= 1 {
		pdb := &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: pdbName(tn), Namespace: tn.Namespace}}
		return deleteChild(ctx, r, tn, "PodDisruptionBudget", pdb)
	}

	maxUnavailable := intstr.FromInt32(1)
	_, err := ensureChild(ctx, r, tn, child[*policyv1.PodDisruptionBudget]{
		kind: "PodDisruptionBudget",
		desired: &policyv1.PodDisruptionBudget{
			ObjectMeta: metav1.ObjectMeta{Name: pdbName(tn), Namespace: tn.Namespace, Labels: childLabels(tn)},
			Spec: policyv1.PodDisruptionBudgetSpec{
				MaxUnavailable: &maxUnavailable,
				Selector:       &metav1.LabelSelector{MatchLabels: selectorLabels(tn)},
			},
		},
		live: &policyv1.PodDisruptionBudget{},
		inSync: func(desired, live *policyv1.PodDisruptionBudget) bool {
			return labelsInSync(desired.Labels, live.Labels) &&
				equality.Semantic.DeepDerivative(desired.Spec, live.Spec)
		},
		apply: func(desired, live *policyv1.PodDisruptionBudget) {
			live.Labels = mergeLabels(desired.Labels, live.Labels)
			live.Spec.MaxUnavailable = desired.Spec.MaxUnavailable
			live.Spec.Selector = desired.Spec.Selector
			live.Spec.MinAvailable = nil
		},
	})
	return err
}
