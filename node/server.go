package node

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

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
	api := func(pattern string, scope Scope, h http.HandlerFunc) {
		route := pattern[strings.Index(pattern, " ")+1:]
		mux.Handle(pattern, s.instrument(route, s.limitConcurrency(s.authorize(scope, h))))
	}

	api("GET /v1/identity", "", s.handleIdentity)
	api("PUT /v1/things/{id}", ScopeWrite, s.handlePutThing)
	api("GET /v1/things/{id}", ScopeRead, s.handleGetThing)
	api("GET /v1/things/{id}/history", ScopeRead, s.handleHistory)
	api("GET /v1/heads", ScopeExport, s.handleHeads)
	api("GET /v1/export", ScopeExport, s.handleExport)
	api("POST /v1/import", ScopeImport, s.handleImport)
	api("GET /v1/sync/status", ScopeRead, s.handleSyncStatus)

	mux.Handle("GET /healthz", s.instrument("/healthz", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})))
	mux.Handle("GET /readyz", s.instrument("/readyz", http.HandlerFunc(s.handleReady)))
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

// instrument counts and times requests and logs server errors.
func (s *Server) instrument(route string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)

		elapsed := time.Since(start)
		s.metrics.requests.WithLabelValues(route, r.Method, strconv.Itoa(rec.status)).Inc()
		s.metrics.requestDuration.WithLabelValues(route, r.Method).Observe(elapsed.Seconds())
		s.logger.Debug("request", "method", r.Method, "route", route, "status", rec.status, "duration", elapsed, "remoteAddr", r.RemoteAddr)
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

// authorize checks the bearer token: missing or unknown is 401, a known
// token without scope is 403. An empty scope lets every request through.
func (s *Server) authorize(scope Scope, next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if scope == "" {
			next(w, r)
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
		next(w, r.WithContext(contextWithToken(r.Context(), record)))
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
