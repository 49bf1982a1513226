// Package charts contains the Helm chart of the ThingDB operator, in
// thingdb-operator/, and the tests of that chart. The tests lint and render
// the chart through the Helm Go module (helm.sh/helm/v4) and check each value
// and each rejected value. They also compare the chart's CRDs, RBAC rules and
// manager flags with what config/ generates. `make chart-sync` copies the
// generated files into the chart, and the tests name that target when a copy
// differs.
package charts
