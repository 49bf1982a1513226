package node

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/thingdb/thingdb/ledger"
)

// metrics are the node's Prometheus metrics, on a registry of their own so
// that tests and several servers in one process do not collide.
type metrics struct {
	registry *prometheus.Registry

	requests        *prometheus.CounterVec
	requestDuration *prometheus.HistogramVec
	appends         prometheus.Counter
	importBatches   *prometheus.CounterVec
	importEntries   *prometheus.CounterVec
	rejectedEntries *prometheus.CounterVec
	reloads         *prometheus.CounterVec
}

func newMetrics(l *ledger.Ledger) *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "thingdb_http_requests_total",
			Help: "HTTP requests by route, method and status code.",
		}, []string{"route", "method", "code"}),
		requestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "thingdb_http_request_duration_seconds",
			Help:    "HTTP request latency by route and method.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"route", "method"}),
		appends: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "thingdb_appends_total",
			Help: "Entries appended through PUT /v1/things.",
		}),
		importBatches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "thingdb_import_batches_total",
			Help: "Import batches by result: ok or rejected.",
		}, []string{"result"}),
		importEntries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "thingdb_import_entries_total",
			Help: "Imported entries by result: accepted or duplicate.",
		}, []string{"result"}),
		rejectedEntries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "thingdb_import_rejected_total",
			Help: "Rejected import batches by reason, such as fork, gap, invalid_entry or batch_signature_invalid.",
		}, []string{"reason"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "thingdb_reloads_total",
			Help: "Reloads of tokens, TLS files and the peer file by result: changed or failed.",
		}, []string{"what", "result"}),
	}
	m.registry.MustRegister(
		m.requests, m.requestDuration, m.appends, m.importBatches, m.importEntries, m.rejectedEntries, m.reloads,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&ledgerCollector{ledger: l},
	)
	return m
}

// ledgerCollector reads the ledger size and heads at scrape time.
type ledgerCollector struct {
	ledger *ledger.Ledger
}

var (
	ledgerSizeDesc = prometheus.NewDesc("thingdb_ledger_size_bytes", "Size of ledger.ndjson in bytes.", nil, nil)
	headDesc       = prometheus.NewDesc("thingdb_head_sequence", "Head sequence number of each origin in the ledger.", []string{"origin"}, nil)
)

func (c *ledgerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- ledgerSizeDesc
	ch <- headDesc
}

func (c *ledgerCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(ledgerSizeDesc, prometheus.GaugeValue, float64(c.ledger.Size()))
	for _, h := range c.ledger.Heads() {
		ch <- prometheus.MustNewConstMetric(headDesc, prometheus.GaugeValue, float64(h.Sequence), h.Origin)
	}
}
