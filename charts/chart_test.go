package charts

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func TestChart_Lint(t *testing.T) {
	tests := map[string]struct {
		// values are passed as with `helm lint --set`.
		values map[string]any
	}{
		"defaults": {},
		"watched namespaces and ServiceMonitor": {values: map[string]any{
			"watchNamespaces": []any{"team-a", "team-b"},
			"metrics":         map[string]any{"serviceMonitor": map[string]any{"enabled": true}},
		}},
		"metrics and leader election off": {values: map[string]any{
			"metrics":        map[string]any{"enabled": false},
			"leaderElection": map[string]any{"enabled": false},
		}},
	}
	for name, test := range tests {
		t.Run(name, func(t *testing.T) {
			lint := action.NewLint()
			lint.Strict = true
			lint.Namespace = releaseNamespace

			result := lint.Run([]string{chartDir}, test.values)

			for _, message := range result.Messages {
				if message.Severity >= support.WarningSev {
					t.Errorf("lint: %s", message)
				}
			}
			for _, err := range result.Errors {
				t.Errorf("lint error: %v", err)
			}
			if result.TotalChartsLinted != 1 {
				t.Errorf("linted %d charts, expected 1", result.TotalChartsLinted)
			}
		})
	}
}

func TestChart_RenderDefaults(t *testing.T) {
	objects := mustRender(t, nil)
	loaded := loadChart(t)

	if got := countKind(objects, "CustomResourceDefinition"); got != len(loaded.CRDObjects()) || got == 0 {
		t.Errorf("rendered %d CRDs, expected the %d files under crds/", got, len(loaded.CRDObjects()))
	}
	mustFind(t, objects, "ServiceAccount", releaseNamespace, namePrefix+"controller-manager")
	mustFind(t, objects, "ClusterRole", "", namePrefix+"manager-role")
	mustFind(t, objects, "Role", releaseNamespace, namePrefix+"leader-election-role")
	mustFind(t, objects, "Service", releaseNamespace, namePrefix+"metrics")
	if got := countKind(objects, "ServiceMonitor"); got != 0 {
		t.Errorf("rendered %d ServiceMonitors by default, expected 0", got)
	}

	binding := mustFind(t, objects, "ClusterRoleBinding", "", namePrefix+"manager-rolebinding")
	subjects, _, _ := unstructured.NestedSlice(binding.Object, "subjects")
	wantSubject := map[string]any{"kind": "ServiceAccount", "name": namePrefix + "controller-manager", "namespace": releaseNamespace}
	if len(subjects) != 1 || !reflect.DeepEqual(subjects[0], wantSubject) {
		t.Errorf("manager ClusterRoleBinding subjects = %v, expected [%v]", subjects, wantSubject)
	}

	deployment := mustFind(t, objects, "Deployment", releaseNamespace, namePrefix+"controller-manager")
	if replicas, _, _ := unstructured.NestedInt64(deployment.Object, "spec", "replicas"); replicas != 1 {
		t.Errorf("Deployment replicas = %d, expected 1", replicas)
	}
	container := managerContainer(t, objects)
	if want := "thingdb:" + loaded.Metadata.AppVersion; container["image"] != want {
		t.Errorf("manager image = %v, expected %s (image.tag defaults to appVersion)", container["image"], want)
	}
	flags := flagValues(containerArgs(t, container))
	if flags["leader-elect"] != "true" {
		t.Errorf("--leader-elect = %q, expected true", flags["leader-elect"])
	}
	if flags["metrics-bind-address"] != ":8080" {
		t.Errorf("--metrics-bind-address = %q, expected :8080", flags["metrics-bind-address"])
	}
	if _, found := flags["watch-namespaces"]; found {
		t.Errorf("--watch-namespaces is set by default, expected every namespace to be watched")
	}
	for _, probe := range []string{"livenessProbe", "readinessProbe"} {
		if _, found := container[probe]; !found {
			t.Errorf("manager container has no %s", probe)
		}
	}
}

// TestChart_RestrictedPodSecurity checks the default pod and container
// security settings that the "restricted" Pod Security Standard requires.
func TestChart_RestrictedPodSecurity(t *testing.T) {
	objects := mustRender(t, nil)
	deployment := mustFind(t, objects, "Deployment", releaseNamespace, namePrefix+"controller-manager")
	podSpec, _, _ := unstructured.NestedMap(deployment.Object, "spec", "template", "spec")
	container := managerContainer(t, objects)

	checks := map[string]struct {
		object map[string]any
		path   []string
		want   any
	}{
		"pod runAsNonRoot":              {podSpec, []string{"securityContext", "runAsNonRoot"}, true},
		"pod runAsUser":                 {podSpec, []string{"securityContext", "runAsUser"}, int64(65532)},
		"pod seccompProfile":            {podSpec, []string{"securityContext", "seccompProfile", "type"}, "RuntimeDefault"},
		"allowPrivilegeEscalation":      {container, []string{"securityContext", "allowPrivilegeEscalation"}, false},
		"readOnlyRootFilesystem":        {container, []string{"securityContext", "readOnlyRootFilesystem"}, true},
		"capabilities dropped":          {container, []string{"securityContext", "capabilities", "drop"}, []any{"ALL"}},
		"no hostNetwork":                {podSpec, []string{"hostNetwork"}, nil},
		"no privileged container":       {container, []string{"securityContext", "privileged"}, nil},
		"no added capabilities":         {container, []string{"securityContext", "capabilities", "add"}, nil},
		"service account token mounted": {podSpec, []string{"automountServiceAccountToken"}, nil},
	}
	for name, check := range checks {
		got, _, err := unstructured.NestedFieldNoCopy(check.object, check.path...)
		if err != nil {
			t.Errorf("%s: read %s: %v", name, strings.Join(check.path, "."), err)
			continue
		}
		if !reflect.DeepEqual(got, check.want) {
			t.Errorf("%s: %s = %#v, expected %#v", name, strings.Join(check.path, "."), got, check.want)
		}
	}
}

func TestChart_RenderValues(t *testing.T) {
	tests := map[string]struct {
		values map[string]any
		// check inspects the rendered objects.
		check func(t *testing.T, objects []*unstructured.Unstructured)
	}{
		"image repository, tag and pull policy": {
			values: map[string]any{"image": map[string]any{"repository": "registry.example/thingdb", "tag": "v9", "pullPolicy": "Always"}},
			check: func(t *testing.T, objects []*unstructured.Unstructured) {
				container := managerContainer(t, objects)
				if container["image"] != "registry.example/thingdb:v9" {
					t.Errorf("image = %v, expected registry.example/thingdb:v9", container["image"])
				}
				if container["imagePullPolicy"] != "Always" {
					t.Errorf("imagePullPolicy = %v, expected Always", container["imagePullPolicy"])
				}
			},
		},
		"replicas with leader election": {
			values: map[string]any{"replicas": 3},
			check: func(t *testing.T, objects []*unstructured.Unstructured) {
				deployment := mustFind(t, objects, "Deployment", releaseNamespace, namePrefix+"controller-manager")
				if replicas, _, _ := unstructured.NestedInt64(deployment.Object, "spec", "replicas"); replicas != 3 {
					t.Errorf("replicas = %d, expected 3", replicas)
				}
			},
		},
		"leader election off": {
			values: map[string]any{"leaderElection": map[string]any{"enabled": false}},
			check: func(t *testing.T, objects []*unstructured.Unstructured) {
				if flags := flagValues(containerArgs(t, managerContainer(t, objects))); flags["leader-elect"] != "false" {
					t.Errorf("--leader-elect = %q, expected false", flags["leader-elect"])
				}
				if role := findObject(objects, "Role", releaseNamespace, namePrefix+"leader-election-role"); role != nil {
					t.Errorf("leader election Role rendered with leader election off")
				}
			},
		},
		"watched namespaces": {
			values: map[string]any{"watchNamespaces": []any{"team-a", "team-b"}},
			check: func(t *testing.T, objects []*unstructured.Unstructured) {
				if flags := flagValues(containerArgs(t, managerContainer(t, objects))); flags["watch-namespaces"] != "team-a,team-b" {
					t.Errorf("--watch-namespaces = %q, expected team-a,team-b", flags["watch-namespaces"])
				}
				if role := findObject(objects, "ClusterRole", "", namePrefix+"manager-role"); role != nil {
					t.Errorf("manager ClusterRole rendered although only some namespaces are watched")
				}
				wantRules := renderedRules(t, mustRender(t, nil), "ClusterRole", "", namePrefix+"manager-role")
				for _, namespace := range []string{"team-a", "team-b"} {
					gotRules := renderedRules(t, objects, "Role", namespace, namePrefix+"manager-role")
					if !reflect.DeepEqual(gotRules, wantRules) {
						t.Errorf("Role in %s has rules %v, expected the manager rules %v", namespace, gotRules, wantRules)
					}
					mustFind(t, objects, "RoleBinding", namespace, namePrefix+"manager-rolebinding")
				}
			},
		},
		"metrics off": {
			values: map[string]any{"metrics": map[string]any{"enabled": false}},
			check: func(t *testing.T, objects []*unstructured.Unstructured) {
				if flags := flagValues(containerArgs(t, managerContainer(t, objects))); flags["metrics-bind-address"] != "0" {
					t.Errorf("--metrics-bind-address = %q, expected 0 (off)", flags["metrics-bind-address"])
				}
				if service := findObject(objects, "Service", releaseNamespace, namePrefix+"metrics"); service != nil {
					t.Errorf("metrics Service rendered with metrics off")
				}
			},
		},
		"ServiceMonitor": {
			values: map[string]any{"metrics": map[string]any{"port": 9443, "serviceMonitor": map[string]any{
				"enabled": true, "labels": map[string]any{"release": "prometheus"},
			}}},
			check: func(t *testing.T, objects []*unstructured.Unstructured) {
				monitor := mustFind(t, objects, "ServiceMonitor", releaseNamespace, namePrefix+"metrics")
				if monitor.GetLabels()["release"] != "prometheus" {
					t.Errorf("ServiceMonitor labels = %v, expected release=prometheus among them", monitor.GetLabels())
				}
				service := mustFind(t, objects, "Service", releaseNamespace, namePrefix+"metrics")
				ports, _, _ := unstructured.NestedSlice(service.Object, "spec", "ports")
				if len(ports) != 1 || ports[0].(map[string]any)["port"] != int64(9443) {
					t.Errorf("metrics Service ports = %v, expected one on 9443", ports)
				}
			},
		},
		"resources and scheduling": {
			values: map[string]any{
				"resources":    map[string]any{"limits": map[string]any{"memory": "1Gi"}},
				"nodeSelector": map[string]any{"kubernetes.io/os": "linux"},
			},
			check: func(t *testing.T, objects []*unstructured.Unstructured) {
				container := managerContainer(t, objects)
				if memory, _, _ := unstructured.NestedString(container, "resources", "limits", "memory"); memory != "1Gi" {
					t.Errorf("memory limit = %q, expected 1Gi", memory)
				}
				deployment := mustFind(t, objects, "Deployment", releaseNamespace, namePrefix+"controller-manager")
				if os, _, _ := unstructured.NestedString(deployment.Object, "spec", "template", "spec", "nodeSelector", "kubernetes.io/os"); os != "linux" {
					t.Errorf("nodeSelector kubernetes.io/os = %q, expected linux", os)
				}
			},
		},
		"existing ServiceAccount": {
			values: map[string]any{"serviceAccount": map[string]any{"create": false, "name": "ops"}},
			check: func(t *testing.T, objects []*unstructured.Unstructured) {
				if countKind(objects, "ServiceAccount") != 0 {
					t.Errorf("ServiceAccount rendered although serviceAccount.create is false")
				}
				deployment := mustFind(t, objects, "Deployment", releaseNamespace, namePrefix+"controller-manager")
				if name, _, _ := unstructured.NestedString(deployment.Object, "spec", "template", "spec", "serviceAccountName"); name != "ops" {
					t.Errorf("serviceAccountName = %q, expected ops", name)
				}
			},
		},
		"extra args": {
			values: map[string]any{"extraArgs": []any{"--zap-log-level=debug"}},
			check: func(t *testing.T, objects []*unstructured.Unstructured) {
				args := containerArgs(t, managerContainer(t, objects))
				if !slices.Contains(args, "--zap-log-level=debug") {
					t.Errorf("args = %v, expected --zap-log-level=debug among them", args)
				}
			},
		},
	}
	for name, test := range tests {
		t.Run(name, func(t *testing.T) {
			test.check(t, mustRender(t, test.values))
		})
	}
}

func TestChart_RejectsInvalidValues(t *testing.T) {
	tests := map[string]struct {
		values map[string]any
		// wantError are substrings of the error: the value and the fix.
		wantError []string
	}{
		"replicas without leader election": {
			values:    map[string]any{"replicas": 2, "leaderElection": map[string]any{"enabled": false}},
			wantError: []string{"replicas is 2", "leaderElection.enabled=true"},
		},
		"replicas not a number": {
			values:    map[string]any{"replicas": "two"},
			wantError: []string{"replicas"},
		},
		"negative replicas": {
			values:    map[string]any{"replicas": -1},
			wantError: []string{"replicas"},
		},
		"misspelt key": {
			values:    map[string]any{"replica": 2},
			wantError: []string{"replica"},
		},
		"invalid namespace": {
			values:    map[string]any{"watchNamespaces": []any{"Team_A"}},
			wantError: []string{"watchNamespaces"},
		},
		"empty image repository": {
			values:    map[string]any{"image": map[string]any{"repository": ""}},
			wantError: []string{"repository"},
		},
		"unknown pull policy": {
			values:    map[string]any{"image": map[string]any{"pullPolicy": "Sometimes"}},
			wantError: []string{"pullPolicy"},
		},
		"ServiceMonitor without metrics": {
			values: map[string]any{"metrics": map[string]any{
				"enabled": false, "serviceMonitor": map[string]any{"enabled": true},
			}},
			wantError: []string{"metrics.enabled=true"},
		},
		"no ServiceAccount": {
			values:    map[string]any{"serviceAccount": map[string]any{"create": false}},
			wantError: []string{"serviceAccount.name is required"},
		},
	}
	for name, test := range tests {
		t.Run(name, func(t *testing.T) {
			objects, err := renderChart(t, test.values)

			if err == nil {
				t.Fatalf("values %v rendered %d objects, expected an error", test.values, len(objects))
			}
			for _, want := range test.wantError {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
		})
	}
}

// renderedRules returns the rules of a rendered Role or ClusterRole.
func renderedRules(t *testing.T, objects []*unstructured.Unstructured, kind, namespace, name string) []any {
	t.Helper()

	role := mustFind(t, objects, kind, namespace, name)
	rules, _, err := unstructured.NestedSlice(role.Object, "rules")
	if err != nil {
		t.Fatalf("read rules of %s %s: %v", kind, name, err)
	}
	return rules
}
