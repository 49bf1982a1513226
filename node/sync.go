package node

import (
	"context"
	"crypto/tls"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/thingdb/thingdb/internal/syncstatus"
	"github.com/thingdb/thingdb/ledger"
)

// Backoff after failed attempts: the delay doubles from the peer file's
// interval up to maxBackoff(interval).
const (
	backoffCapFactor = 32
	backoffCapLimit  = 5 * time.Minute
)

// SyncOptions configure NewSyncer. Ledger and Pins are required.
type SyncOptions struct {
	Ledger *ledger.Ledger
	Pins   *PinStore
	// Resolve overrides the addresses that peer connections dial.
	Resolve ResolveMap
	// ClientCertificate, when set, is presented to peers that request a
	// client certificate; serve passes the node's own TLS certificate.
	ClientCertificate func(*tls.CertificateRequestInfo) (*tls.Certificate, error)
	Logger            *slog.Logger
	// Registerer receives the sync metrics. Nil registers nothing.
	Registerer prometheus.Registerer
}

// Syncer is the node's sync loop: one worker per peer of the peer file
// pulls what the peer holds and this node lacks, at the file's interval,
// with exponential backoff after failures. It never pushes. It implements
// SyncStatusSource.
type Syncer struct {
	ledger  *ledger.Ledger
	nodeID  string
	pins    *PinStore
	clients *peerClients
	logger  *slog.Logger
	metrics *syncMetrics

	// importMu serialises the imports of all workers; see importLines.
	importMu sync.Mutex

	mu     sync.Mutex
	status map[string]*PeerStatus // by peer name
}

// NewSyncer returns a sync loop for opts. Run starts it.
func NewSyncer(opts SyncOptions) *Syncer {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Syncer{
		ledger:  opts.Ledger,
		nodeID:  opts.Ledger.Identity().NodeID,
		pins:    opts.Pins,
		clients: &peerClients{resolve: opts.Resolve, clientCert: opts.ClientCertificate},
		logger:  opts.Logger,
		metrics: newSyncMetrics(),
		status:  map[string]*PeerStatus{},
	}
	if opts.Registerer != nil {
		opts.Registerer.MustRegister(s.metrics)
	}
	return s
}

// SyncStatus returns a copy of every peer's state, sorted by name.
func (s *Syncer) SyncStatus() []PeerStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	list := make([]PeerStatus, 0, len(s.status))
	for _, st := range s.status {
		list = append(list, *st)
	}
	sortPeerStatus(list)
	return list
}

// Run runs a worker per peer until ctx is cancelled and then waits for
// them: an import in progress finishes or is cancelled with its request.
// A change of the peer file starts workers for new peers and stops those of
// removed peers; changed peers apply at their next round.
func (s *Syncer) Run(ctx context.Context) {
	type worker struct {
		cancel context.CancelFunc
		done   chan struct{}
	}
	workers := map[string]*worker{}
	stop := func(name string) {
		w := workers[name]
		w.cancel()
		<-w.done
		delete(workers, name)
	}
	defer s.clients.closeAll()

	for {
		changed := s.pins.Changed()
		file := s.pins.File()
		names := map[string]bool{}
		for _, peer := range file.Peers {
			if peer.NodeID == s.nodeID {
				// One peer file serves every replica of a ThingNode, so
				// it lists this node too.
				continue
			}
			names[peer.Name] = true
			if workers[peer.Name] != nil {
				continue
			}
			workerCtx, cancel := context.WithCancel(ctx)
			w := &worker{cancel: cancel, done: make(chan struct{})}
			workers[peer.Name] = w
			s.addPeer(peer)
			s.logger.Info("sync with peer started", "peer", peer.Name, "nodeID", peer.NodeID, "url", peer.URL)
			go func() {
				defer close(w.done)
				s.runPeer(workerCtx, peer.Name)
			}()
		}
		for name := range workers {
			if !names[name] {
				stop(name)
				s.forgetPeer(name)
				s.logger.Info("sync with peer stopped: removed from the peer file", "peer", name)
			}
		}
		s.clients.forget(names)

		select {
		case <-ctx.Done():
			for name := range workers {
				stop(name)
			}
			s.logger.Info("sync loop stopped")
			return
		case <-changed:
		}
	}
}

// runPeer is the worker of one peer: an attempt at once, then one per
// interval, or later after failures.
func (s *Syncer) runPeer(ctx context.Context, name string) {
	failures := 0
	var current Peer
	var lastAttempt time.Time
	next := time.Now()

	for {
		changed := s.pins.Changed()
		timer := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-changed:
			// Apply a new interval to the wait, and give a changed peer a
			// fresh backoff: the change may be the fix.
			timer.Stop()
			file := s.pins.File()
			if peer, ok := findPeer(file, name); ok && !samePeer(peer, current) && !lastAttempt.IsZero() {
				failures = 0
			}
			if !lastAttempt.IsZero() {
				next = lastAttempt.Add(retryDelay(file.Interval, failures, rand.Float64()))
				s.setNextAttempt(name, next)
			}
			continue
		case <-timer.C:
		}

		file := s.pins.File()
		peer, ok := findPeer(file, name)
		if !ok {
			// Removed: Run stops this worker.
			next = time.Now().Add(file.Interval)
			continue
		}
		current = peer
		start := time.Now()
		result := s.syncPeer(ctx, peer, file.BatchSize)
		if ctx.Err() != nil && result.err != nil {
			return // shutdown or removal cut the attempt short
		}
		lastAttempt = time.Now()
		if result.err != nil {
			failures++
		} else {
			failures = 0
		}
		next = lastAttempt.Add(retryDelay(file.Interval, failures, rand.Float64()))
		s.record(peer, start, next, failures, result)
	}
}

func findPeer(file *PeerFile, name string) (Peer, bool) {
	for _, p := range file.Peers {
		if p.Name == name {
			return p, true
		}
	}
	return Peer{}, false
}

func samePeer(a, b Peer) bool {
	return a.Name == b.Name && a.URL == b.URL && a.NodeID == b.NodeID && a.SigningKey.Equal(b.SigningKey) &&
		a.CAFile == b.CAFile && a.TokenFile == b.TokenFile
}

// retryDelay is the wait before the next attempt. Without failures it is
// the interval within ±10 %, so nodes do not pull in lockstep. After n
// failures it is interval × 2^(n-1), capped at maxBackoff, times a random
// factor between 0.5 and 1. random is in [0, 1).
func retryDelay(interval time.Duration, failures int, random float64) time.Duration {
	if failures == 0 {
		return time.Duration(float64(interval) * (0.9 + 0.2*random))
	}
	limit := maxBackoff(interval)
	delay := interval
	for i := 1; i < failures && delay < limit; i++ {
		delay *= 2
	}
	delay = min(delay, limit)
	return time.Duration(float64(delay) * (0.5 + 0.5*random))
}

// maxBackoff is 32 intervals, but at most 5 minutes, and never less than
// one interval.
func maxBackoff(interval time.Duration) time.Duration {
	return max(interval, min(backoffCapFactor*interval, backoffCapLimit))
}

// record stores the outcome of an attempt in the status and the metrics,
// and logs it: failures at warn when the error changed, else at debug.
func (s *Syncer) record(peer Peer, start, next time.Time, failures int, result attemptResult) {
	s.mu.Lock()
	st := s.status[peer.Name]
	if st == nil || st.NodeID != peer.NodeID {
		st = &PeerStatus{Name: peer.Name}
		s.status[peer.Name] = st
	}
	previousError := st.LastError
	st.NodeID, st.URL = peer.NodeID, peer.URL
	attempt, nextAttempt := start.UTC(), next.UTC()
	st.LastAttempt, st.NextAttempt = &attempt, &nextAttempt
	st.EntriesTransferred += result.accepted
	st.LagEntries = result.lag
	st.ConsecutiveFailures = failures
	if result.err == nil {
		done := time.Now().UTC()
		st.LastSuccess = &done
		st.LastError, st.LastErrorReason = "", ""
		st.ForkDetected, st.Fork = false, nil
	} else {
		st.LastError, st.LastErrorReason = result.err.Error(), result.err.reason
		st.ForkDetected = result.err.reason == syncstatus.ReasonFork
		st.Fork = nil
		if st.ForkDetected {
			st.Fork = result.err.fork
		}
	}
	s.mu.Unlock()

	s.metrics.observe(peer.Name, result)
	log := s.logger.With("peer", peer.Name, "nodeID", peer.NodeID)
	switch {
	case result.err != nil && result.err.Error() != previousError:
		log.Warn("sync with peer failed", "reason", result.err.reason, "error", result.err, "failures", failures, "nextAttempt", next.UTC(), "imported", result.accepted)
	case result.err != nil:
		log.Debug("sync with peer failed again", "reason", result.err.reason, "failures", failures, "nextAttempt", next.UTC())
	case previousError != "":
		log.Info("sync with peer recovered", "imported", result.accepted, "lag", result.lag)
	case result.accepted > 0:
		log.Info("imported entries from peer", "imported", result.accepted, "duplicates", result.duplicates, "lag", result.lag)
	default:
		log.Debug("peer has nothing new", "lag", result.lag)
	}
}

func (s *Syncer) setNextAttempt(name string, next time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.status[name]; st != nil {
		at := next.UTC()
		st.NextAttempt = &at
	}
}

// addPeer lists a new peer in the status before its first attempt.
func (s *Syncer) addPeer(peer Peer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.status[peer.Name] == nil {
		s.status[peer.Name] = &PeerStatus{Name: peer.Name, NodeID: peer.NodeID, URL: peer.URL}
	}
}

func (s *Syncer) forgetPeer(name string) {
	s.mu.Lock()
	delete(s.status, name)
	s.mu.Unlock()
	s.metrics.forget(name)
}
