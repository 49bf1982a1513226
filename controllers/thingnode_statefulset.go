package controllers

import (
	"context"
	"fmt"
	"maps"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	thingdbv1 "github.com/thingdb/thingdb/api/v1alpha1"
)

// reconcileStatefulSet keeps the StatefulSet of tn and returns it as it is in
// the cluster.
func (r *ThingNodeReconciler) reconcileStatefulSet(ctx context.Context, tn *thingdbv1.ThingNode) (*appsv1.StatefulSet, error) {
	return ensureChild(ctx, r, tn, child[*appsv1.StatefulSet]{
		kind:    "StatefulSet",
		desired: desiredStatefulSet(tn),
		live:    &appsv1.StatefulSet{},
		inSync: func(desired, live *appsv1.StatefulSet) bool {
			return labelsInSync(desired.Labels, live.Labels) &&
				equality.Semantic.DeepDerivative(desired.Spec, live.Spec) &&
				clearableFieldsInSync(&desired.Spec.Template.Spec, &live.Spec.Template.Spec)
		},
		apply: func(desired, live *appsv1.StatefulSet) {
			// Only these fields of a StatefulSet spec may change. The claim
			// template, selector and Service name are fixed at creation, so
			// the ThingNode's storage fields are immutable.
			live.Labels = mergeLabels(desired.Labels, live.Labels)
			live.Spec.Replicas = desired.Spec.Replicas
			live.Spec.Template = desired.Spec.Template
			live.Spec.UpdateStrategy = desired.Spec.UpdateStrategy
			live.Spec.PersistentVolumeClaimRetentionPolicy = desired.Spec.PersistentVolumeClaimRetentionPolicy
		},
	})
}

// clearableFieldsInSync compares the pod fields a user may clear in the
// ThingNode spec. DeepDerivative skips fields that are empty in the desired
// object, so without this check a removed node selector, toleration,
// affinity, pull secret or resource limit would stay on the pods.
func clearableFieldsInSync(desired, live *corev1.PodSpec) bool {
	if !maps.Equal(desired.NodeSelector, live.NodeSelector) ||
		len(desired.Tolerations) != len(live.Tolerations) ||
		len(desired.ImagePullSecrets) != len(live.ImagePullSecrets) ||
		!equality.Semantic.DeepEqual(desired.Affinity, live.Affinity) ||
		desired.PriorityClassName != live.PriorityClassName {
		return false
	}
	if len(desired.Containers) != len(live.Containers) {
		return false
	}
	for i := range desired.Containers {
		want, got := desired.Containers[i].Resources, live.Containers[i].Resources
		if len(want.Limits) != len(got.Limits) || len(want.Requests) != len(got.Requests) {
			return false
		}
	}
	return true
}

// statefulSetExists reports whether the StatefulSet of tn exists.
func (r *ThingNodeReconciler) statefulSetExists(ctx context.Context, tn *thingdbv1.ThingNode) (bool, error) {
	sts := &appsv1.StatefulSet{}
	err := r.Get(ctx, client.ObjectKey{Namespace: tn.Namespace, Name: statefulSetName(tn)}, sts)
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("get StatefulSet %s: %w", statefulSetName(tn), err)
	}
	return true, nil
}

// desiredStatefulSet returns the StatefulSet that runs `thingdb serve` for
// tn. Every field the API server would default on a field set here is set
// explicitly, so the comparison with the live object stays stable.
func desiredStatefulSet(tn *thingdbv1.ThingNode) *appsv1.StatefulSet {
	labels := childLabels(tn)
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: statefulSetName(tn), Namespace: tn.Namespace, Labels: labels},
		Spec: appsv1.StatefulSetSpec{
			Replicas:    ptr.To(replicas(tn)),
			ServiceName: headlessServiceName(tn),
			Selector:    &metav1.LabelSelector{MatchLabels: selectorLabels(tn)},
			// Nodes do not depend on each other to start, so all pods start
			// at once.
			PodManagementPolicy: appsv1.ParallelPodManagement,
			UpdateStrategy: appsv1.StatefulSetUpdateStrategy{
				Type: appsv1.RollingUpdateStatefulSetStrategyType,
			},
			PersistentVolumeClaimRetentionPolicy: &appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy{
				WhenDeleted: retentionPolicy(tn.Spec.Storage.WhenDeleted),
				WhenScaled:  retentionPolicy(tn.Spec.Storage.WhenScaled),
			},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       desiredPodSpec(tn),
			},
			VolumeClaimTemplates: []corev1.PersistentVolumeClaim{desiredClaimTemplate(tn)},
		},
	}
}

// desiredClaimTemplate returns the claim template of the ledger volume. The
// claims made from it carry no owner reference to the ThingNode, and the
// StatefulSet controller keeps or deletes them as spec.storage sets.
func desiredClaimTemplate(tn *thingdbv1.ThingNode) corev1.PersistentVolumeClaim {
	return corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: dataVolume, Labels: selectorLabels(tn)},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: tn.Spec.Storage.StorageClassName,
			Resources: corev1.VolumeResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceStorage: tn.Spec.Storage.Size},
			},
		},
	}
}

// desiredPodSpec returns the pod of one node: non-root, read-only root file
// system, no privilege escalation, no capabilities, the RuntimeDefault
// seccomp profile, and probes on the node's HTTPS endpoints.
func desiredPodSpec(tn *thingdbv1.ThingNode) corev1.PodSpec {
	return corev1.PodSpec{
		// The node never calls the Kubernetes API.
		AutomountServiceAccountToken: ptr.To(false),
		ImagePullSecrets:             tn.Spec.ImagePullSecrets,
		NodeSelector:                 tn.Spec.NodeSelector,
		Tolerations:                  tn.Spec.Tolerations,
		Affinity:                     tn.Spec.Affinity,
		PriorityClassName:            tn.Spec.PriorityClassName,
		SecurityContext: &corev1.PodSecurityContext{
			RunAsNonRoot:        ptr.To(true),
			RunAsUser:           ptr.To(nodeUser),
			RunAsGroup:          ptr.To(nodeUser),
			FSGroup:             ptr.To(nodeUser),
			FSGroupChangePolicy: ptr.To(corev1.FSGroupChangeOnRootMismatch),
			SeccompProfile:      &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		Containers: []corev1.Container{desiredNodeContainer(tn)},
		Volumes:    desiredVolumes(tn),
	}
}

// desiredNodeContainer returns the `thingdb serve` container, configured
// only through THINGDB_* environment variables.
func desiredNodeContainer(tn *thingdbv1.ThingNode) corev1.Container {
	return corev1.Container{
		Name:            "thingdb",
		Image:           tn.Spec.Image,
		ImagePullPolicy: tn.Spec.ImagePullPolicy,
		Command:         []string{"/thingdb", "serve"},
		Env: []corev1.EnvVar{
			{Name: "THINGDB_LISTEN", Value: fmt.Sprintf(":%d", nodePort)},
			{Name: "THINGDB_DATA_DIR", Value: ledgerDir},
			{Name: "THINGDB_PASSPHRASE_FILE", Value: passphraseMountPath + "/" + passphraseFile},
			{Name: "THINGDB_TOKEN_DIR", Value: tokenMountPath},
			{Name: "THINGDB_TLS_DIR", Value: tlsMountPath},
			{Name: "THINGDB_CLIENT_AUTH", Value: string(clientAuth(tn))},
			{Name: "THINGDB_PEERS_FILE", Value: peersMountPath + "/" + keyPeers},
			{Name: "THINGDB_DURABILITY", Value: string(durability(tn))},
			{Name: "THINGDB_SEAL_TO_PEERS", Value: strconv.FormatBool(tn.Spec.SealToPeers)},
		},
		Ports: []corev1.ContainerPort{{Name: nodePortName, ContainerPort: nodePort, Protocol: corev1.ProtocolTCP}},
		// Thresholds are the API server defaults, written out so that a
		// comparison with the live pod template finds no difference.
		LivenessProbe:  httpsProbe("/healthz", 10, 3),
		ReadinessProbe: httpsProbe("/readyz", 5, 3),
		Resources:      tn.Spec.Resources,
		SecurityContext: &corev1.SecurityContext{
			RunAsNonRoot:             ptr.To(true),
			ReadOnlyRootFilesystem:   ptr.To(true),
			AllowPrivilegeEscalation: ptr.To(false),
			Privileged:               ptr.To(false),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		VolumeMounts: []corev1.VolumeMount{
			{Name: dataVolume, MountPath: dataMountPath},
			{Name: "passphrase", MountPath: passphraseMountPath, ReadOnly: true},
			{Name: "tokens", MountPath: tokenMountPath, ReadOnly: true},
			{Name: "tls", MountPath: tlsMountPath, ReadOnly: true},
			{Name: "peers", MountPath: peersMountPath, ReadOnly: true},
			{Name: "tmp", MountPath: tmpMountPath},
		},
	}
}

// desiredVolumes returns the pod volumes besides the ledger claim. Secret
// volumes are mounted whole (no subPath), so the kubelet updates them in
// place and the node reloads tokens, certificates and peers without a
// restart.
func desiredVolumes(tn *thingdbv1.ThingNode) []corev1.Volume {
	secretVolume := func(name, secretName string, items []corev1.KeyToPath) corev1.Volume {
		return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName:  secretName,
			Items:       items,
			DefaultMode: ptr.To[int32](0o440),
		}}}
	}
	return []corev1.Volume{
		secretVolume("passphrase", passphraseSecretName(tn), []corev1.KeyToPath{{Key: passphraseKey(tn), Path: passphraseFile}}),
		secretVolume("tokens", tokenHashesSecretName(tn), nil),
		secretVolume("tls", tlsSecretName(tn), nil),
		secretVolume("peers", peersSecretName(tn), nil),
		{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
	}
}

// httpsProbe returns a probe of path on the node's HTTPS port.
func httpsProbe(path string, periodSeconds, failureThreshold int32) *corev1.Probe {
	return &corev1.Probe{
		ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
			Path:   path,
			Port:   intstr.FromString(nodePortName),
			Scheme: corev1.URISchemeHTTPS,
		}},
		TimeoutSeconds:   1,
		PeriodSeconds:    periodSeconds,
		SuccessThreshold: 1,
		FailureThreshold: failureThreshold,
	}
}

// retentionPolicy maps a ThingNode volume retention onto the StatefulSet's;
// empty (objects built without API defaults) means Retain.
func retentionPolicy(v thingdbv1.VolumeRetention) appsv1.PersistentVolumeClaimRetentionPolicyType {
	if v == thingdbv1.VolumeDelete {
		return appsv1.DeletePersistentVolumeClaimRetentionPolicyType
	}
	return appsv1.RetainPersistentVolumeClaimRetentionPolicyType
}

// durability returns spec.durability, or batch when it is empty.
func durability(tn *thingdbv1.ThingNode) thingdbv1.Durability {
	if tn.Spec.Durability == "" {
		return thingdbv1.DurabilityBatch
	}
	return tn.Spec.Durability
}

// clientAuth returns spec.tls.clientAuth, or none when it is empty.
func clientAuth(tn *thingdbv1.ThingNode) thingdbv1.ClientAuth {
	if tn.Spec.TLS.ClientAuth == "" {
		return thingdbv1.ClientAuthNone
	}
	return tn.Spec.TLS.ClientAuth
}
