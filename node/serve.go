package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/thingdb/thingdb/internal/atomicfile"
	"github.com/thingdb/thingdb/ledger"
)

// ServeConfig is the configuration of `thingdb serve`; docs/architecture.md
// lists the flags.
type ServeConfig struct {
	Listen         string
	AddressFile    string
	DataDir        string
	PassphraseFile string
	TokenDir       string
	TLSDir         string
	ClientAuth     string
	PeersFile      string
	Resolve        ResolveMap
	SealToPeers    bool
	Durability     string
	Insecure       bool
	ReloadInterval time.Duration
	MaxClockSkew   time.Duration
	LogLevel       string

	Limits            Limits
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	ShutdownTimeout   time.Duration
	MaxHeaderBytes    int

	// Sync, when set, reports per-peer state on GET /v1/sync/status in
	// place of the sync loop that serve starts for --peers-file.
	Sync SyncStatusSource
}

func (c *command) serveFlags(cfg *ServeConfig) {
	f := c.flags
	f.StringVar(&cfg.Listen, "listen", ":8443", "address of the HTTPS API, host:port")
	f.StringVar(&cfg.AddressFile, "address-file", "", "file to write the listening address to once the API is up, for scripts that listen on port 0")
	f.StringVar(&cfg.DataDir, "data-dir", "", "ledger directory; serve creates the ledger there when none exists")
	f.StringVar(&cfg.PassphraseFile, "passphrase-file", "", "file whose content, without a trailing newline, is the ledger passphrase")
	f.StringVar(&cfg.TokenDir, "token-dir", "", "directory of token records, reloaded on change (default DATA-DIR/tokens)")
	f.StringVar(&cfg.TLSDir, "tls-dir", "", "directory with tls.crt, tls.key and optional ca.crt, reloaded on change")
	f.StringVar(&cfg.ClientAuth, "client-auth", "none", "client certificates: none, request or require, verified against ca.crt")
	f.StringVar(&cfg.PeersFile, "peers-file", "", "peer file, reloaded on change: the sync loop pulls from its peers and import accepts only their pinned keys; empty means no sync and rejects every import")
	f.Var(&cfg.Resolve, "resolve", "HOST:PORT=ADDR: peer connections to HOST:PORT dial ADDR (host, or host:port) while TLS still verifies HOST, like curl --resolve; repeat or separate with commas. For tests and laptops that run pods' peer files against local processes")
	f.BoolVar(&cfg.SealToPeers, "seal-to-peers", false, "seal every put without a recipients field to all peers of the peer file that have a recipientKey (envelope mode); the peer file's sealToPeers does the same")
	f.StringVar(&cfg.Durability, "durability", "batch", "when a write is acknowledged: always (fsync each), batch (group fsync) or none")
	f.BoolVar(&cfg.Insecure, "insecure", false, "serve plain HTTP without TLS; tokens cross the network in clear text")
	f.DurationVar(&cfg.ReloadInterval, "reload-interval", 5*time.Second, "how often token, TLS and peer files are checked for changes")
	f.DurationVar(&cfg.MaxClockSkew, "max-clock-skew", ledger.DefaultMaxClockSkew, "import rejects entries dated further than this ahead of the local clock")
	f.StringVar(&cfg.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	f.Int64Var(&cfg.Limits.MaxBodyBytes, "max-body-bytes", DefaultLimits.MaxBodyBytes, "maximum request body in bytes, except import")
	f.Int64Var(&cfg.Limits.MaxImportBytes, "max-import-bytes", DefaultLimits.MaxImportBytes, "maximum import request body in bytes; export responses stay under half of it")
	f.IntVar(&cfg.Limits.MaxBatchEntries, "max-batch-entries", DefaultLimits.MaxBatchEntries, "maximum entries in one import or export batch")
	f.IntVar(&cfg.Limits.MaxConcurrent, "max-concurrent-requests", DefaultLimits.MaxConcurrent, "API requests served at once; more get 503")
	f.DurationVar(&cfg.ReadHeaderTimeout, "read-header-timeout", 10*time.Second, "time allowed to read request headers")
	f.DurationVar(&cfg.ReadTimeout, "read-timeout", 2*time.Minute, "time allowed to read a whole request")
	f.DurationVar(&cfg.WriteTimeout, "write-timeout", 2*time.Minute, "time allowed to write a response")
	f.DurationVar(&cfg.IdleTimeout, "idle-timeout", 2*time.Minute, "how long an idle keep-alive connection stays open")
	f.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", 30*time.Second, "how long shutdown waits for requests in flight")
	f.IntVar(&cfg.MaxHeaderBytes, "max-header-bytes", 64<<10, "maximum size of request headers in bytes")
}

func (cfg *ServeConfig) check() error {
	if cfg.DataDir == "" {
		return fmt.Errorf("missing data directory: pass --data-dir or set %s", EnvName("data-dir"))
	}
	if !cfg.Insecure && cfg.TLSDir == "" {
		return fmt.Errorf("missing TLS directory: pass --tls-dir (tls.crt, tls.key) or set %s; --insecure serves plain HTTP instead", EnvName("tls-dir"))
	}
	if cfg.ReloadInterval <= 0 {
		return fmt.Errorf("invalid --reload-interval %s: use a positive duration such as 5s", cfg.ReloadInterval)
	}
	if cfg.Limits.MaxBodyBytes <= 0 || cfg.Limits.MaxImportBytes <= 0 || cfg.Limits.MaxBatchEntries <= 0 || cfg.Limits.MaxConcurrent <= 0 {
		return errors.New("invalid limits: --max-body-bytes, --max-import-bytes, --max-batch-entries and --max-concurrent-requests must be positive")
	}
	if cfg.Limits.MaxImportBytes < 2*int64(ledger.MaxLineSize)+4096 {
		return fmt.Errorf("invalid --max-import-bytes %d: use at least %d so that one entry of the maximum size fits", cfg.Limits.MaxImportBytes, 2*ledger.MaxLineSize+4096)
	}
	if cfg.TokenDir == "" {
		cfg.TokenDir = filepath.Join(cfg.DataDir, "tokens")
	}
	return nil
}

func parseLogLevel(s string) (slog.Level, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("invalid log level %q: use debug, info, warn or error", s)
	}
	return level, nil
}

// openOrCreate opens the ledger in dir, or creates one when none exists.
func openOrCreate(dir string, passphrase []byte, opts ledger.Options, logger *slog.Logger) (*ledger.Ledger, error) {
	exists, err := ledger.Exists(dir)
	if err != nil {
		return nil, fmt.Errorf("check data directory %s: %w", dir, err)
	}
	if !exists {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create data directory %s: %w", dir, err)
		}
		l, err := ledger.Create(dir, passphrase, opts)
		if err != nil {
			return nil, fmt.Errorf("create ledger in %s: %w", dir, err)
		}
		logger.Info("created ledger", "dataDir", dir, "nodeID", l.Identity().NodeID)
		return l, nil
	}
	l, err := ledger.Open(dir, passphrase, opts)
	if errors.Is(err, ledger.ErrWrongPassphrase) {
		// The ledger's error already names dir.
		return nil, fmt.Errorf("%w; check --passphrase-file", err)
	}
	if err != nil {
		return nil, fmt.Errorf("open ledger in %s: %w", dir, err)
	}
	if repair := l.TailRepair(); repair != nil {
		logger.Warn("cut a torn last line from the ledger", "offset", repair.Offset, "bytes", repair.Bytes)
	}
	return l, nil
}

// Serve runs the node until ctx is cancelled, then shuts down: it stops
// accepting connections, waits for requests in flight (appends return only
// after their fsync), and closes the ledger, which flushes and fsyncs what
// is pending.
func Serve(ctx context.Context, cfg ServeConfig, logger *slog.Logger) (err error) {
	if err := cfg.check(); err != nil {
		return err
	}
	clientAuth, err := ParseClientAuth(cfg.ClientAuth)
	if err != nil {
		return err
	}
	durability, err := ledger.ParseDurability(cfg.Durability)
	if err != nil {
		return err
	}

	// Open the ledger, then everything that reads files beside it.
	passphrase, err := readSecretFile("passphrase", cfg.PassphraseFile)
	if err != nil {
		return err
	}
	l, err := openOrCreate(cfg.DataDir, passphrase, ledger.Options{Durability: durability, MaxClockSkew: cfg.MaxClockSkew}, logger)
	clear(passphrase)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := l.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close ledger: %w", cerr)
		}
	}()
	tokens, err := NewTokenStore(cfg.TokenDir)
	if err != nil {
		return err
	}
	pins, err := NewPinStore(cfg.PeersFile)
	if err != nil {
		return err
	}
	var certs *CertReloader
	if !cfg.Insecure {
		certs, err = NewCertReloader(cfg.TLSDir, clientAuth)
		if err != nil {
			return err
		}
	}

	// The sync loop runs only with a peer file, and stops before the
	// deferred Close of the ledger.
	var syncer *Syncer
	if cfg.PeersFile != "" {
		syncOpts := SyncOptions{Ledger: l, Pins: pins, Resolve: cfg.Resolve, Logger: logger.With("component", "sync")}
		if certs != nil {
			syncOpts.ClientCertificate = certs.ClientCertificate
		}
		syncer = NewSyncer(syncOpts)
		if cfg.Sync == nil {
			cfg.Sync = syncer
		}
	}

	server := NewServer(ServerOptions{Ledger: l, Tokens: tokens, Pins: pins, Sync: cfg.Sync, SealToPeers: cfg.SealToPeers, Logger: logger, Limits: cfg.Limits})
	if syncer != nil {
		server.metrics.registry.MustRegister(syncer.metrics)
	}
	listener, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	if certs != nil {
		listener = tls.NewListener(listener, certs.TLSConfig())
	} else {
		logger.Warn("serving plain HTTP because of --insecure: tokens and data cross the network unencrypted")
	}
	httpServer := &http.Server{
		Handler:           server.Handler(),
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}

	reloadCtx, stopReload := context.WithCancel(ctx)
	defer stopReload()
	go reloadLoop(reloadCtx, cfg.ReloadInterval, logger, server.metrics, tokens, pins, certs)
	if syncer != nil {
		syncCtx, stopSync := context.WithCancel(ctx)
		syncDone := make(chan struct{})
		go func() {
			defer close(syncDone)
			syncer.Run(syncCtx)
		}()
		defer func() {
			stopSync()
			<-syncDone
		}()
	}

	served := make(chan error, 1)
	go func() { served <- httpServer.Serve(listener) }()
	addr := listener.Addr().String()
	if cfg.AddressFile != "" {
		if err := atomicfile.Write(cfg.AddressFile, []byte(addr+"\n"), 0o644); err != nil {
			_ = httpServer.Close()
			return fmt.Errorf("write address file: %w", err)
		}
	}
	logger.Info("serving", "address", addr, "tls", certs != nil, "clientAuth", clientAuth, "nodeID", l.Identity().NodeID,
		"tokens", tokens.Len(), "peers", len(pins.File().Peers), "sync", syncer != nil, "resolve", cfg.Resolve.String(), "durability", durability)

	select {
	case err := <-served:
		return fmt.Errorf("serve on %s: %w", addr, err)
	case <-ctx.Done():
	}

	// Fail readiness, then let requests in flight finish within the timeout.
	logger.Info("shutting down", "timeout", cfg.ShutdownTimeout)
	server.SetReady(false)
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := httpServer.Shutdown(shutdownCtx); err != nil {
		_ = httpServer.Close()
		logger.Error("requests still in flight at the shutdown timeout were cut off", "error", err)
	}
	logger.Info("stopped")
	return nil
}

// reloadLoop checks the token directory, the peer file and the TLS files
// every interval and swaps in what changed. A failed reload keeps the old
// state and is logged once per distinct error.
func reloadLoop(ctx context.Context, interval time.Duration, logger *slog.Logger, m *metrics, tokens *TokenStore, pins *PinStore, certs *CertReloader) {
	type reloader struct {
		what   string
		reload func() (bool, error)
	}
	reloaders := []reloader{{"tokens", tokens.Reload}, {"peers", pins.Reload}}
	if certs != nil {
		reloaders = append(reloaders, reloader{"tls", certs.Reload})
	}
	lastErr := map[string]string{}

	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		for _, r := range reloaders {
			changed, err := r.reload()
			if err != nil {
				m.reloads.WithLabelValues(r.what, "failed").Inc()
				if lastErr[r.what] != err.Error() {
					logger.Error("reload failed; keeping the previous state", "what", r.what, "error", err)
					lastErr[r.what] = err.Error()
				}
				continue
			}
			delete(lastErr, r.what)
			if changed {
				m.reloads.WithLabelValues(r.what, "changed").Inc()
				logger.Info("reloaded", "what", r.what)
			}
		}
	}
}
