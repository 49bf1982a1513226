package charts

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/action"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	release "helm.sh/helm/v4/pkg/release/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

const (
	chartDir = "thingdb-operator"
	// releaseName contains the chart name, so the object name prefix is just
	// "thingdb-operator".
	releaseName      = "thingdb-operator"
	releaseNamespace = "thingdb-system"
	namePrefix       = releaseName + "-"
)

// loadChart loads the chart from its directory, as `helm install ./dir` does.
func loadChart(t *testing.T) *chart.Chart {
	t.Helper()

	loaded, err := loader.Load(chartDir)
	if err != nil {
		t.Fatalf("load chart %s: %v", chartDir, err)
	}
	return loaded
}

// renderChart renders the chart with values the way `helm template
// --include-crds` does: a client-only dry-run install that contacts no
// cluster. It returns every object of the manifest, CRDs included.
func renderChart(t *testing.T, values map[string]any) ([]*unstructured.Unstructured, error) {
	t.Helper()

	config := action.NewConfiguration()
	// Helm logs its dry-run notices through slog; the test output does not need them.
	config.SetLogger(slog.NewTextHandler(io.Discard, nil))

	install := action.NewInstall(config)
	install.DryRunStrategy = action.DryRunClient
	install.ReleaseName = releaseName
	install.Namespace = releaseNamespace
	install.Replace = true
	install.IncludeCRDs = true

	releaser, err := install.Run(loadChart(t), values)
	if err != nil {
		return nil, fmt.Errorf("render chart: %w", err)
	}
	rendered, ok := releaser.(*release.Release)
	if !ok {
		t.Fatalf("install returned %T, expected *release.Release", releaser)
	}
	if len(rendered.Hooks) != 0 {
		t.Errorf("chart rendered %d hooks, expected none", len(rendered.Hooks))
	}
	return parseObjects(t, rendered.Manifest), nil
}

// mustRender renders the chart and fails the test on an error.
func mustRender(t *testing.T, values map[string]any) []*unstructured.Unstructured {
	t.Helper()

	objects, err := renderChart(t, values)
	if err != nil {
		t.Fatalf("values %v: %v", values, err)
	}
	return objects
}

// parseObjects splits a multi-document YAML manifest into objects, skipping
// empty documents. Integers become int64, as in objects read from a cluster.
func parseObjects(t *testing.T, manifest string) []*unstructured.Unstructured {
	t.Helper()

	var objects []*unstructured.Unstructured
	reader := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(manifest)))
	for {
		document, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return objects
		}
		if err != nil {
			t.Fatalf("split rendered manifest: %v", err)
		}
		content, err := yaml.YAMLToJSON(document)
		if err != nil {
			t.Fatalf("parse rendered document: %v\n%s", err, document)
		}
		if string(bytes.TrimSpace(content)) == "null" {
			continue
		}
		object := &unstructured.Unstructured{}
		if err := object.UnmarshalJSON(content); err != nil {
			t.Fatalf("decode rendered document: %v\n%s", err, document)
		}
		objects = append(objects, object)
	}
}

// findObject returns the object of the kind, namespace and name, or nil.
func findObject(objects []*unstructured.Unstructured, kind, namespace, name string) *unstructured.Unstructured {
	for _, object := range objects {
		if object.GetKind() == kind && object.GetNamespace() == namespace && object.GetName() == name {
			return object
		}
	}
	return nil
}

// mustFind returns the object of the kind, namespace and name, and fails the
// test with the list of rendered objects when there is none.
func mustFind(t *testing.T, objects []*unstructured.Unstructured, kind, namespace, name string) *unstructured.Unstructured {
	t.Helper()

	object := findObject(objects, kind, namespace, name)
	if object == nil {
		t.Fatalf("no %s %s/%s in rendered chart; rendered: %s", kind, namespace, name, describeObjects(objects))
	}
	return object
}

// countKind returns how many objects are of the kind.
func countKind(objects []*unstructured.Unstructured, kind string) int {
	count := 0
	for _, object := range objects {
		if object.GetKind() == kind {
			count++
		}
	}
	return count
}

func describeObjects(objects []*unstructured.Unstructured) string {
	names := make([]string, 0, len(objects))
	for _, object := range objects {
		names = append(names, fmt.Sprintf("%s %s/%s", object.GetKind(), object.GetNamespace(), object.GetName()))
	}
	return strings.Join(names, ", ")
}

// managerContainer returns the manager container of the chart's Deployment.
func managerContainer(t *testing.T, objects []*unstructured.Unstructured) map[string]any {
	t.Helper()

	deployment := mustFind(t, objects, "Deployment", releaseNamespace, namePrefix+"controller-manager")
	containers, _, err := unstructured.NestedSlice(deployment.Object, "spec", "template", "spec", "containers")
	if err != nil {
		t.Fatalf("read containers of the Deployment: %v", err)
	}
	for _, container := range containers {
		container, ok := container.(map[string]any)
		if ok && container["name"] == "manager" {
			return container
		}
	}
	t.Fatalf("Deployment has no container named manager: %v", containers)
	return nil
}

// containerArgs returns the args of a container as strings.
func containerArgs(t *testing.T, container map[string]any) []string {
	t.Helper()

	args, _, err := unstructured.NestedStringSlice(container, "args")
	if err != nil {
		t.Fatalf("read container args: %v", err)
	}
	return args
}

// flagValues maps each `--name=value` argument to its value; a bare `--name`
// maps to "true".
func flagValues(args []string) map[string]string {
	flags := make(map[string]string, len(args))
	for _, arg := range args {
		if !strings.HasPrefix(arg, "--") {
			continue
		}
		name, value, found := strings.Cut(strings.TrimPrefix(arg, "--"), "=")
		if !found {
			value = "true"
		}
		flags[name] = value
	}
	return flags
}
