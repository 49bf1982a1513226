package node

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/thingdb/thingdb/internal/syncstatus"
)

// syncMetrics are the sync loop's Prometheus metrics, labelled by the peer's
// name in the peer file. A peer removed from the file loses its series.
type syncMetrics struct {
	rounds  *prometheus.CounterVec
	pulled  *prometheus.CounterVec
	errors  *prometheus.CounterVec
	lag     *prometheus.GaugeVec
	forks   *prometheus.GaugeVec
	reasons []string
}

func newSyncMetrics() *syncMetrics {
	return &syncMetrics{
		rounds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "thingdb_sync_rounds_total",
			Help: "Sync attempts with a peer by result: ok or error.",
		}, []string{"peer", "result"}),
		pulled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "thingdb_sync_entries_pulled_total",
			Help: "Entries pulled from a peer and appended to the ledger.",
		}, []string{"peer"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "thingdb_sync_errors_total",
			Help: "Failed sync attempts with a peer by reason, such as unreachable, tls, key_mismatch, fork or gap.",
		}, []string{"peer", "reason"}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "thingdb_sync_lag_entries",
			Help: "Entries that a peer's signed heads list and this node lacked after the last attempt.",
		}, []string{"peer"}),
		forks: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "thingdb_sync_fork_detected",
			Help: "1 while the last attempt with a peer found a fork, else 0.",
		}, []string{"peer"}),
		reasons: []string{syncstatus.ReasonUnreachable, syncstatus.ReasonTLS, syncstatus.ReasonUnauthorized, syncstatus.ReasonKeyMismatch, syncstatus.ReasonFork,
			syncstatus.ReasonGap, syncstatus.ReasonInvalidEntry, syncstatus.ReasonRollback, syncstatus.ReasonPeerError, syncstatus.ReasonConfig, syncstatus.ReasonLocal},
	}
}

func (m *syncMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.rounds, m.pulled, m.errors, m.lag, m.forks}
}

// Describe implements prometheus.Collector.
func (m *syncMetrics) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range m.collectors() {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (m *syncMetrics) Collect(ch chan<- prometheus.Metric) {
	for _, c := range m.collectors() {
		c.Collect(ch)
	}
}

func (m *syncMetrics) observe(peer string, result attemptResult) {
	m.pulled.WithLabelValues(peer).Add(float64(result.accepted))
	m.lag.WithLabelValues(peer).Set(float64(result.lag))
	fork := 0.0
	if result.err != nil {
		m.rounds.WithLabelValues(peer, "error").Inc()
		m.errors.WithLabelValues(peer, result.err.reason).Inc()
		if result.err.reason == syncstatus.ReasonFork {
			fork = 1
		}
	} else {
		m.rounds.WithLabelValues(peer, "ok").Inc()
	}
	m.forks.WithLabelValues(peer).Set(fork)
}

func (m *syncMetrics) forget(peer string) {
	m.rounds.DeleteLabelValues(peer, "ok")
	m.rounds.DeleteLabelValues(peer, "error")
	m.pulled.DeleteLabelValues(peer)
	m.lag.DeleteLabelValues(peer)
	m.forks.DeleteLabelValues(peer)
	for _, reason := range m.reasons {
		m.errors.DeleteLabelValues(peer, reason)
	}
}
