// Package v1alpha1 contains the v1alpha1 API of the thingdb.io group: the
// ThingNode kind, which the operator reconciles into a StatefulSet of
// `thingdb serve` pods with their Services, Secrets and TLS certificate.
//
// +kubebuilder:object:generate=true
// +groupName=thingdb.io
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of every kind in this package.
	GroupVersion = schema.GroupVersion{Group: "thingdb.io", Version: "v1alpha1"}

	// SchemeBuilder registers the kinds of this package with a scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the kinds of this package to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
