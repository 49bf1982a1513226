// Command manager runs the ThingDB operator: the ThingNode and ThingSync
// controllers with leader election, Prometheus metrics and health probes.
//
// It reads the cluster from the usual kubeconfig sources (--kubeconfig, the
// KUBECONFIG variable, ~/.kube/config or the in-cluster service account).
package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/go-logr/logr"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	thingdbv1 "github.com/thingdb/thingdb/api/v1alpha1"
	"github.com/thingdb/thingdb/controllers"
)

// options are the command-line flags of the manager.
type options struct {
	metricsAddr   string
	probeAddr     string
	leaderElect   bool
	leaderElectID string
	leaderElectNS string
	namespaces    string
	clusterDomain string
	maxConcurrent int
	logVerbosity  int
	logFormat     string
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "manager:", err)
		os.Exit(1)
	}
}

// parseFlags parses args into options. --help prints the flags and returns
// flag.ErrHelp.
func parseFlags(args []string) (*options, error) {
	opts := &options{}
	fs := flag.NewFlagSet("manager", flag.ContinueOnError)
	// --kubeconfig, read by ctrl.GetConfig.
	config.RegisterFlags(fs)
	fs.StringVar(&opts.metricsAddr, "metrics-bind-address", ":8080",
		"address of the Prometheus metrics endpoint (plain HTTP); 0 turns it off")
	fs.StringVar(&opts.probeAddr, "health-probe-bind-address", ":8081",
		"address of the /healthz and /readyz endpoints")
	fs.BoolVar(&opts.leaderElect, "leader-elect", true,
		"hold a Lease so that only one manager replica reconciles at a time")
	fs.StringVar(&opts.leaderElectID, "leader-election-id", "thingdb-operator.thingdb.io",
		"name of the leader election Lease")
	fs.StringVar(&opts.leaderElectNS, "leader-election-namespace", "",
		"namespace of the leader election Lease; empty means the manager's own namespace, which out of cluster must be given")
	fs.StringVar(&opts.namespaces, "watch-namespaces", "",
		"comma-separated namespaces whose ThingNodes the manager reconciles; empty means every namespace")
	fs.StringVar(&opts.clusterDomain, "cluster-domain", controllers.DefaultClusterDomain,
		"DNS domain of the cluster's Services, used in certificate names")
	fs.IntVar(&opts.maxConcurrent, "max-concurrent-reconciles", 4,
		"number of ThingNodes reconciled at the same time")
	fs.IntVar(&opts.logVerbosity, "v", 0,
		"log verbosity: 0 logs changes made to the cluster, 1 adds decisions and waits")
	fs.StringVar(&opts.logFormat, "log-format", "json", "log format: json or text")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: manager [flags]\n\nRuns the ThingDB operator against the cluster of the current kubeconfig.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q; the manager takes only flags (see --help)", fs.Arg(0))
	}
	if opts.maxConcurrent < 1 {
		return nil, fmt.Errorf("invalid --max-concurrent-reconciles %d; use 1 or more", opts.maxConcurrent)
	}
	if opts.logFormat != "json" && opts.logFormat != "text" {
		return nil, fmt.Errorf("invalid --log-format %q; use json or text", opts.logFormat)
	}
	if opts.logVerbosity < 0 {
		return nil, fmt.Errorf("invalid -v %d; use 0 or more", opts.logVerbosity)
	}
	return opts, nil
}

// newLogger returns a logr logger that writes to stderr through log/slog.
// Verbosity V(n) maps to the slog level -n.
func newLogger(opts *options) logr.Logger {
	handlerOpts := &slog.HandlerOptions{Level: slog.Level(-opts.logVerbosity)}
	var handler slog.Handler = slog.NewJSONHandler(os.Stderr, handlerOpts)
	if opts.logFormat == "text" {
		handler = slog.NewTextHandler(os.Stderr, handlerOpts)
	}
	return logr.FromSlogHandler(handler)
}

// run starts the manager and blocks until it stops on SIGINT or SIGTERM.
func run(args []string) error {
	opts, err := parseFlags(args)
	if err != nil {
		return err
	}
	ctrl.SetLogger(newLogger(opts))
	log := ctrl.Log.WithName("setup")

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(thingdbv1.AddToScheme(scheme))

	restConfig, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("load kubeconfig: %w", err)
	}

	mgr, err := ctrl.NewManager(restConfig, ctrl.Options{
		Scheme:                        scheme,
		Metrics:                       metricsserver.Options{BindAddress: opts.metricsAddr},
		HealthProbeBindAddress:        opts.probeAddr,
		LeaderElection:                opts.leaderElect,
		LeaderElectionID:              opts.leaderElectID,
		LeaderElectionNamespace:       opts.leaderElectNS,
		LeaderElectionReleaseOnCancel: true,
		Cache:                         controllers.CacheOptions(splitNamespaces(opts.namespaces)),
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}

	reconciler := &controllers.ThingNodeReconciler{
		Client:        mgr.GetClient(),
		Scheme:        mgr.GetScheme(),
		Recorder:      mgr.GetEventRecorder("thingnode-controller"),
		ClusterDomain: opts.clusterDomain,
	}
	if err := reconciler.SetupWithManager(mgr, opts.maxConcurrent); err != nil {
		return fmt.Errorf("set up ThingNode controller: %w", err)
	}
	syncReconciler := &controllers.ThingSyncReconciler{
		Client:   mgr.GetClient(),
		Scheme:   mgr.GetScheme(),
		Recorder: mgr.GetEventRecorder("thingsync-controller"),
	}
	if err := syncReconciler.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up ThingSync controller: %w", err)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return fmt.Errorf("add health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return fmt.Errorf("add ready check: %w", err)
	}

	log.Info("Starting manager", "metricsAddress", opts.metricsAddr, "probeAddress", opts.probeAddr,
		"leaderElection", opts.leaderElect, "watchNamespaces", opts.namespaces)
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		return fmt.Errorf("run manager: %w", err)
	}
	log.Info("Manager stopped")
	return nil
}

// splitNamespaces splits a comma-separated list and drops empty entries.
func splitNamespaces(list string) []string {
	var namespaces []string
	for _, ns := range strings.Split(list, ",") {
		if ns = strings.TrimSpace(ns); ns != "" {
			namespaces = append(namespaces, ns)
		}
	}
	return namespaces
}
