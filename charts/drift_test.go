package charts

import (
	"bytes"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

const (
	configDir     = "../config"
	syncHint      = "run `make chart-sync` to copy config/ into the chart"
	chartFilesDir = chartDir + "/files"
)

// chartCopies maps each file that `make chart-sync` copies into the chart's
// files/ to its source under config/.
var chartCopies = map[string]string{
	"manager-role.yaml":         "rbac/role.yaml",
	"leader-election-role.yaml": "rbac/leader_election_role.yaml",
}

// TestChart_CRDsMatchConfig checks that crds/ holds exactly the CRDs that
// controller-gen writes to config/crd/bases, byte for byte.
func TestChart_CRDsMatchConfig(t *testing.T) {
	generated := readYAMLFiles(t, filepath.Join(configDir, "crd", "bases"))
	copied := readYAMLFiles(t, filepath.Join(chartDir, "crds"))

	if len(generated) == 0 {
		t.Fatalf("no CRDs in %s/crd/bases: run `make manifests` first", configDir)
	}
	for name, content := range generated {
		chartContent, found := copied[name]
		if !found {
			t.Errorf("chart has no crds/%s: %s", name, syncHint)
			continue
		}
		if !bytes.Equal(chartContent, content) {
			t.Errorf("chart crds/%s differs from config/crd/bases/%s: %s", name, name, syncHint)
		}
	}
	for name := range copied {
		if _, found := generated[name]; !found {
			t.Errorf("chart crds/%s has no source in config/crd/bases: %s", name, syncHint)
		}
	}
}

// TestChart_RBACFilesMatchConfig checks that the RBAC files the chart reads
// are unchanged copies of config/rbac.
func TestChart_RBACFilesMatchConfig(t *testing.T) {
	for copyName, source := range chartCopies {
		want, err := os.ReadFile(filepath.Join(configDir, source))
		if err != nil {
			t.Errorf("read config/%s: %v", source, err)
			continue
		}
		got, err := os.ReadFile(filepath.Join(chartFilesDir, copyName))
		if err != nil {
			t.Errorf("read chart files/%s: %v; %s", copyName, err, syncHint)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("chart files/%s differs from config/%s: %s", copyName, source, syncHint)
		}
	}
}

// TestChart_RBACMatchesKustomize builds config/default with kustomize and
// checks that the chart, with default values, renders the same Roles and
// ClusterRoles with the same rules, and the same CRDs.
func TestChart_RBACMatchesKustomize(t *testing.T) {
	kustomized, prefix := buildKustomization(t, filepath.Join(configDir, "default"))
	rendered := mustRender(t, nil)

	kustomizeRoles := rolesByBaseName(kustomized, prefix)
	chartRoles := rolesByBaseName(rendered, namePrefix)
	if len(kustomizeRoles) == 0 {
		t.Fatalf("config/default renders no Role or ClusterRole")
	}
	for name, want := range kustomizeRoles {
		got, found := chartRoles[name]
		if !found {
			t.Errorf("config/default has %s %s, the chart has no %s%s", want.GetKind(), want.GetName(), namePrefix, name)
			continue
		}
		if got.GetKind() != want.GetKind() {
			t.Errorf("%s is a %s in the chart and a %s in config/default", name, got.GetKind(), want.GetKind())
		}
		if gotRules, wantRules := got.Object["rules"], want.Object["rules"]; !reflect.DeepEqual(gotRules, wantRules) {
			t.Errorf("%s rules differ:\nchart:          %v\nconfig/default: %v\n%s", name, gotRules, wantRules, syncHint)
		}
	}
	for name, got := range chartRoles {
		if _, found := kustomizeRoles[name]; !found {
			t.Errorf("chart has %s %s, config/default has no %s%s", got.GetKind(), got.GetName(), prefix, name)
		}
	}

	kustomizeCRDs := crdSpecs(kustomized)
	chartCRDs := crdSpecs(rendered)
	if !reflect.DeepEqual(slices.Sorted(maps.Keys(chartCRDs)), slices.Sorted(maps.Keys(kustomizeCRDs))) {
		t.Errorf("chart CRDs %v, config/default CRDs %v: %s", slices.Sorted(maps.Keys(chartCRDs)), slices.Sorted(maps.Keys(kustomizeCRDs)), syncHint)
	}
	for name, want := range kustomizeCRDs {
		if got, found := chartCRDs[name]; found && !reflect.DeepEqual(got, want) {
			t.Errorf("spec of CRD %s differs between the chart and config/default: %s", name, syncHint)
		}
	}
}

// TestChart_ManagerFlagsMatchKustomize checks that the chart passes the
// manager every flag that config/manager passes, so a flag renamed in the
// manager and in config/ cannot be left behind in the chart.
func TestChart_ManagerFlagsMatchKustomize(t *testing.T) {
	kustomized, _ := buildKustomization(t, filepath.Join(configDir, "default"))
	chartFlags := flagValues(containerArgs(t, managerContainer(t, mustRender(t, nil))))

	var kustomizeContainer map[string]any
	for _, object := range kustomized {
		if object.GetKind() != "Deployment" {
			continue
		}
		containers, _, _ := unstructured.NestedSlice(object.Object, "spec", "template", "spec", "containers")
		for _, container := range containers {
			if container, ok := container.(map[string]any); ok && container["name"] == "manager" {
				kustomizeContainer = container
			}
		}
	}
	if kustomizeContainer == nil {
		t.Fatalf("config/default renders no Deployment with a container named manager")
	}

	for name := range flagValues(containerArgs(t, kustomizeContainer)) {
		if _, found := chartFlags[name]; !found {
			t.Errorf("config/manager passes --%s, the chart does not", name)
		}
	}
	for _, probe := range []string{"livenessProbe", "readinessProbe"} {
		wantPath, _, _ := unstructured.NestedString(kustomizeContainer, probe, "httpGet", "path")
		gotPath, _, _ := unstructured.NestedString(managerContainer(t, mustRender(t, nil)), probe, "httpGet", "path")
		if gotPath != wantPath {
			t.Errorf("%s path is %q in the chart and %q in config/manager", probe, gotPath, wantPath)
		}
	}
}

// buildKustomization runs `kustomize build dir` in process and returns the
// objects with the namePrefix of dir's kustomization.yaml.
func buildKustomization(t *testing.T, dir string) ([]*unstructured.Unstructured, string) {
	t.Helper()

	kustomizer := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	resources, err := kustomizer.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	manifest, err := resources.AsYaml()
	if err != nil {
		t.Fatalf("print kustomize output of %s: %v", dir, err)
	}

	content, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatalf("read kustomization of %s: %v", dir, err)
	}
	var kustomization struct {
		NamePrefix string `json:"namePrefix"`
	}
	if err := yaml.Unmarshal(content, &kustomization); err != nil {
		t.Fatalf("parse %s/kustomization.yaml: %v", dir, err)
	}
	return parseObjects(t, string(manifest)), kustomization.NamePrefix
}

// rolesByBaseName maps the name of each Role and ClusterRole, without prefix,
// to the object.
func rolesByBaseName(objects []*unstructured.Unstructured, prefix string) map[string]*unstructured.Unstructured {
	roles := make(map[string]*unstructured.Unstructured)
	for _, object := range objects {
		if object.GetKind() == "Role" || object.GetKind() == "ClusterRole" {
			roles[strings.TrimPrefix(object.GetName(), prefix)] = object
		}
	}
	return roles
}

// crdSpecs maps the name of each CRD to its spec.
func crdSpecs(objects []*unstructured.Unstructured) map[string]any {
	specs := make(map[string]any)
	for _, object := range objects {
		if object.GetKind() == "CustomResourceDefinition" {
			specs[object.GetName()] = object.Object["spec"]
		}
	}
	return specs
}

// readYAMLFiles returns the content of each .yaml file in dir by file name.
// A missing dir gives an empty map.
func readYAMLFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()

	entries, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatalf("read directory %s: %v", dir, err)
	}
	files := make(map[string][]byte)
	for _, entry := range entries {
		if entry.IsDir() || !strings.HasSuffix(entry.Name(), ".yaml") {
			continue
		}
		content, err := os.ReadFile(filepath.Join(dir, entry.Name()))
		if err != nil {
			t.Fatalf("read %s: %v", entry.Name(), err)
		}
		files[entry.Name()] = content
	}
	return files
}
