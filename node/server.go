package node

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/thingdb/thingdb/ledger"
)

// Limits bound what one request may cost.
type Limits struct {
	// MaxBodyBytes bounds the body of every request except import.
	MaxBodyBytes int64
	// MaxImportBytes bounds the body of POST /v1/import and the size of an
	// export response.
	MaxImportBytes int64
	// MaxBatchEntries bounds the entries of one import or export batch.
	MaxBatchEntries int
	// MaxConcurrent bounds the API requests served at once; more get 503.
	// Probes and metrics are not counted.
	MaxConcurrent int
}

// DefaultLimits are the limits of `thingdb serve` unless flags change them.
var DefaultLimits = Limits{
	MaxBodyBytes:    2 << 20,
	MaxImportBytes:  64 << 20,
	MaxBatchEntries: 10000,
	MaxConcurrent:   256,
}

// ServerOptions configure NewServer. Ledger, Tokens and Pins are required.
type ServerOptions struct {
	Ledger *ledger.Ledger
	Tokens *TokenStore
	Pins   *PinStore
	// Sync reports per-peer sync state; nil reports no peers.
	Sync SyncStatusSource
	// SealToPeers seals puts without a recipients field to every peer with
	// a recipient key, as the peer file's sealToPeers does.
	SealToPeers bool
	Logger      *slog.Logger
	Limits      Limits
	// Now is the clock of signed heads; nil means time.Now.
	Now func() time.Time
}

// Server is the HTTP API of one node. It does not own the ledger: the caller
// closes it after the HTTP server has shut down.
type Server struct {
	ledger  *ledger.Ledger
	tokens  *TokenStore
	pins    *PinStore
	sync    SyncStatusSource
	seal    bool
	logger  *slog.Logger
	limits  Limits
	now     func() time.Time
	metrics *metrics

	inFlight chan struct{}
	ready    atomic.Bool
}

// NewServer returns a server for opts. It starts ready; SetReady(false)
// makes /readyz fail, for example during shutdown.
func NewServer(opts ServerOptions) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	limits := opts.Limits
	defaults := DefaultLimits
	if limits.MaxBodyBytes <= 0 {
		limits.MaxBodyBytes = defaults.MaxBodyBytes
	}
	if limits.MaxImportBytes <= 0 {
		limits.MaxImportBytes = defaults.MaxImportBytes
	}
	if limits.MaxBatchEntries <= 0 {
		limits.MaxBatchEntries = defaults.MaxBatchEntries
	}
	if limits.MaxConcurrent <= 0 {
		limits.MaxConcurrent = defaults.MaxConcurrent
	}
	s := &Server{
		ledger:   opts.Ledger,
		tokens:   opts.Tokens,
		pins:     opts.Pins,
		sync:     opts.Sync,
		seal:     opts.SealToPeers,
		logger:   opts.Logger,
		limits:   limits,
		now:      opts.Now,
		metrics:  newMetrics(opts.Ledger),
		inFlight: make(chan struct{}, limits.MaxConcurrent),
	}
	s.ready.Store(true)
	return s
}

// SetReady sets what /readyz reports.
func (s *Server) SetReady(ready bool) { s.ready.Store(ready) }

// Handler returns the routes of the API, probes and metrics.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	api := func(pattern string, scope Scope, h tokenHandler) {
		method, route, _ := strings.Cut(pattern, " ")
		mux.Handle(pattern, s.instrument(method, route, s.limitConcurrency(s.authorize(scope, h))))
	}

	api("GET /v1/identity", "", withoutToken(s.handleIdentity))
	api("PUT /v1/things/{id}", ScopeWrite, s.handlePutThing)
	api("GET /v1/things/{id}", ScopeRead, withoutToken(s.handleGetThing))
	api("GET /v1/things/{id}/history", ScopeRead, withoutToken(s.handleHistory))
	api("GET /v1/heads", ScopeExport, withoutToken(s.handleHeads))
	api("GET /v1/export", ScopeExport, withoutToken(s.handleExport))
	api("POST /v1/import", ScopeImport, withoutToken(s.handleImport))
	api("GET /v1/sync/status", ScopeRead, withoutToken(s.handleSyncStatus))

	mux.Handle("GET /healthz", s.instrument(http.MethodGet, "/healthz", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})))
	mux.Handle("GET /readyz", s.instrument(http.MethodGet, "/readyz", http.HandlerFunc(s.handleReady)))
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.registry, promhttp.HandlerOpts{}))
	return mux
}

func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	if !s.ready.Load() {
		writeError(w, http.StatusServiceUnavailable, "not_ready", "node is shutting down")
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// instrument counts and times requests and logs each at debug level. The
// metric children for the method of the route's pattern and status 200 are
// looked up once, at first use, so that a usual request does not hash its
// label values again.
func (s *Server) instrument(method, route string, next http.Handler) http.Handler {
	ok := sync.OnceValue(func() prometheus.Counter {
		return s.metrics.requests.WithLabelValues(route, method, "200")
	})
	duration := sync.OnceValue(func() prometheus.Observer {
		return s.metrics.requestDuration.WithLabelValues(route, method)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)

		elapsed := time.Since(start)
		if r.Method == method {
			duration().Observe(elapsed.Seconds())
		} else {
			s.metrics.requestDuration.WithLabelValues(route, r.Method).Observe(elapsed.Seconds())
		}
		if r.Method == method && rec.status == http.StatusOK {
			ok().Inc()
		} else {
			s.metrics.requests.WithLabelValues(route, r.Method, strconv.Itoa(rec.status)).Inc()
		}
		// The check keeps a request from building the arguments of a
		// line that the level drops.
		if s.logger.Enabled(r.Context(), slog.LevelDebug) {
			s.logger.Debug("request", "method", r.Method, "route", route, "status", rec.status, "duration", elapsed, "remoteAddr", r.RemoteAddr)
		}
	})
}

// limitConcurrency rejects a request with 503 when MaxConcurrent requests
// are already being served, instead of queueing it without bound.
func (s *Server) limitConcurrency(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case s.inFlight <- struct{}{}:
			defer func() { <-s.inFlight }()
			next.ServeHTTP(w, r)
		default:
			w.Header().Set("Retry-After", "1")
			writeError(w, http.StatusServiceUnavailable, "too_many_requests", "the node is serving its maximum of "+strconv.Itoa(s.limits.MaxConcurrent)+" concurrent requests; retry later")
		}
	})
}

// tokenHandler serves an API request with the record of the token that
// authorize accepted. The record is zero on routes without a scope.
type tokenHandler func(w http.ResponseWriter, r *http.Request, token TokenRecord)

// withoutToken adapts a handler that does not need the token record.
func withoutToken(h http.HandlerFunc) tokenHandler {
	return func(w http.ResponseWriter, r *http.Request, _ TokenRecord) { h(w, r) }
}

// authorize checks the bearer token: missing or unknown is 401, a known
// token without scope is 403. An empty scope lets every request through.
// The record goes to next as an argument, which spares each request a copy
// of the request with a new context.
func (s *Server) authorize(scope Scope, next tokenHandler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if scope == "" {
			next(w, r, TokenRecord{})
			return
		}
		token, ok := bearerToken(r)
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="thingdb"`)
			writeError(w, http.StatusUnauthorized, "unauthenticated", "missing bearer token: send the header \"Authorization: Bearer <token>\"")
			return
		}
		record, ok := s.tokens.Authenticate(token)
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="thingdb", error="invalid_token"`)
			writeError(w, http.StatusUnauthorized, "unauthenticated", "unknown token: check the token or ask for a new one")
			return
		}
		if !record.Allows(scope) {
			writeError(w, http.StatusForbidden, "forbidden", "token \""+record.Name+"\" lacks the \""+string(scope)+"\" scope this endpoint needs")
			return
		}
		next(w, r, record)
	})
}

func bearerToken(r *http.Request) (string, bool) {
	header := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

type statusRecorder struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
}

func (r *statusRecorder) WriteHeader(code int) {
	if !r.wroteHeader {
		r.status = code
		r.wroteHeader = true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	r.wroteHeader = true
	return r.ResponseWriter.Write(b)
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// ErrorBody is the JSON body of every error response.
type ErrorBody struct {
	// Reason is a stable machine-readable code such as "forbidden" or "gap".
	Reason string `json:"reason"`
	// Error is a sentence for humans.
	Error string `json:"error"`
}

// expectEOF returns nil when dec has nothing left but white space.
func expectEOF(dec *json.Decoder) error {
	_, err := dec.Token()
	var tooLarge *http.MaxBytesError
	switch {
	case err == io.EOF:
		return nil
	case errors.As(err, &tooLarge):
		return err
	}
	return errors.New("data after the JSON object")
}

func writeError(w http.ResponseWriter, status int, reason, message string) {
	writeJSON(w, status, ErrorBody{Reason: reason, Error: message})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v) // the client went away; nothing else to do
}

// readBody decodes a JSON request body no larger than limit into v and
// writes the error response itself when that fails.
func readBody(w http.ResponseWriter, r *http.Request, limit int64, v any) bool {
	body := http.MaxBytesReader(w, r.Body, limit)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		err = expectEOF(dec)
	}
	if err == nil {
		return true
	}
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		writeError(w, http.StatusRequestEntityTooLarge, "too_large", "request body is over the limit of "+strconv.FormatInt(limit, 10)+" bytes")
		return false
	}
	writeError(w, http.StatusBadRequest, "malformed", "invalid JSON body: "+err.Error())
	return false
}
