package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/notify-worker/notify-worker/admin"
	"github.com/notify-worker/notify-worker/api"
	"github.com/notify-worker/notify-worker/demo"
)

// readiness is what /readyz asks of the NATS side.
type readiness interface{ Ready() bool }

// routes is the worker's HTTP surface: the WebSocket endpoint at / and
// /ws, liveness, readiness (503 while NATS is down or once shutdown has
// begun), when reg is not nil /metrics (nil: the metrics listener serves
// it, and here it is 404), when page is not nil the demo page under
// /demo/, and, when ops is not nil, the HTTP API under /api/ and the
// admin page under /admin/.
func routes(ws http.Handler, nats readiness, reg *prometheus.Registry, draining *atomic.Bool, page http.Handler, ops *apiSide) http.Handler {
	mux := http.NewServeMux()
	if ops != nil {
		// Both answer every method and path under theirs themselves, in
		// JSON, after authentication.
		mux.Handle("/api/", ops.api)
		mux.Handle(admin.Path, ops.admin)
		mux.Handle(strings.TrimSuffix(admin.Path, "/"), ops.admin)
	}
	mux.Handle("GET /{$}", ws)
	mux.Handle("GET /ws", ws)
	if page != nil {
		// The page answers every method under its path itself (405 for
		// all but GET and HEAD), with its security headers.
		mux.Handle(demo.Path, page)
		mux.Handle(strings.TrimSuffix(demo.Path, "/"), page)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if why := notReady(nats, draining); why != "" {
			http.Error(w, why, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	if reg != nil {
		mux.Handle("GET /metrics", metricsHandler(reg))
	}
	return mux
}

// notReady says why /readyz answers 503, or "" when it answers 200.
func notReady(nats readiness, draining *atomic.Bool) string {
	switch {
	case draining.Load():
		return "shutting down"
	case !nats.Ready():
		return "nats not connected"
	default:
		return ""
	}
}

// readyGauge is notify_ready: what /readyz answers, for alerting on a
// fleet with no ready worker (a draining one included, which
// notify_nats_connected does not show).
func readyGauge(nats readiness, draining *atomic.Bool) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "notify_ready",
		Help: "1 while /readyz answers 200 (NATS connected and not shutting down), else 0.",
	}, func() float64 {
		if notReady(nats, draining) != "" {
			return 0
		}
		return 1
	})
}

func metricsHandler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}

// metricsServer is the private listener of NOTIFY_METRICS_ADDR: /metrics
// only, for Prometheus, on an address the public never reaches.
type metricsServer struct {
	srv  *http.Server
	addr string
	done chan struct{} // closed when Serve has returned
}

// serveMetrics listens on addr and serves reg at /metrics (everything
// else: 404) until shutdown; an empty addr serves nothing and returns nil.
func serveMetrics(addr string, reg *prometheus.Registry, log *slog.Logger) (*metricsServer, error) {
	if addr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: listen on %s: %w", envName("MetricsAddr"), addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metricsHandler(reg))
	m := &metricsServer{
		srv: &http.Server{
			Handler: mux,
			// A scrape is one short request; bound what a client that
			// never finishes one can hold.
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       10 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       60 * time.Second,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		},
		addr: ln.Addr().String(),
		done: make(chan struct{}),
	}
	go func() {
		defer close(m.done)
		if err := m.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics listener stopped", "err", err)
		}
	}()
	return m, nil
}

// shutdown stops the listener and waits for scrapes in flight; a nil
// metricsServer is off.
func (m *metricsServer) shutdown(ctx context.Context) error {
	if m == nil {
		return nil
	}
	err := m.srv.Shutdown(ctx)
	<-m.done
	return err
}

// demoPage returns the demo page's handler, or nil when p turns it off.
// natsURL is the NATS server the worker uses; the page shows it in its
// nats commands only when it is the embedded server's, never one of
// NOTIFY_NATS_URL's (they may carry credentials).
func demoPage(p *plan, natsURL string) (http.Handler, error) {
	if !p.demo {
		return nil, nil
	}
	cfg := demo.Config{
		SubjectPrefix: p.scheme.Prefix(),
		Auth:          p.cfg.Auth,
		AppPing:       p.cfg.AppPing,
		Durable:       p.streamName() != "",
	}
	if len(p.cfg.NATSURLs) == 0 {
		cfg.NATSURL = natsURL
	}
	h, err := demo.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", envName("Demo"), err)
	}
	return h, nil
}

// demoURL is where a browser on this machine finds the demo page of a
// worker listening on addr.
func demoURL(addr string, tls bool) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return demo.Path
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "localhost"
	}
	scheme := "http"
	if tls {
		scheme = "https"
	}
	return scheme + "://" + net.JoinHostPort(host, port) + demo.Path
}

// newRegistry holds every metric the worker exports: its own parts
// register theirs, next to Go's, the process's and the build's.
func newRegistry(build buildInfo) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), build.collector())
	return reg
}

// httpServer is the worker's listener, served on a goroutine that ends
// when shutdown returns.
type httpServer struct {
	srv    *http.Server
	addr   string
	failed chan error // receives the error if serving stops on its own
}

func serveHTTP(p *plan, h http.Handler, log *slog.Logger) (*httpServer, error) {
	ln, err := net.Listen("tcp", p.cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("%s: listen on %s: %w", envName("Addr"), p.cfg.Addr, err)
	}
	s := &httpServer{
		srv: &http.Server{
			Handler: h,
			// Bound what a client that never finishes its request can hold
			// (slow-loris). A WebSocket connection is hijacked before these
			// matter to it; its own limits live in the hub.
			ReadHeaderTimeout: p.cfg.HandshakeTimeout,
			ReadTimeout:       p.cfg.HandshakeTimeout,
			WriteTimeout:      p.cfg.HandshakeTimeout,
			IdleTimeout:       60 * time.Second,
			MaxHeaderBytes:    p.cfg.MaxHeaderBytes,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		},
		addr:   ln.Addr().String(),
		failed: make(chan error, 1),
	}
	go func() {
		var err error
		if p.tlsCert != "" {
			err = s.srv.ServeTLS(ln, p.tlsCert, p.tlsKey)
		} else {
			err = s.srv.Serve(ln)
		}
		if !errors.Is(err, http.ErrServerClosed) {
			s.failed <- err
		}
		close(s.failed)
	}()
	return s, nil
}

// shutdown stops accepting and waits for plain HTTP requests in flight;
// WebSocket sessions were hijacked and are the hub's to close.
func (s *httpServer) shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	for range s.failed {
	}
	return err
}

// apiSide is the HTTP API and the admin page, with the NATS connection
// they publish, request and hear events on: their own, so that their
// traffic shares neither the feed's read loop nor its counts.
type apiSide struct {
	api   http.Handler
	admin http.Handler
	nc    *nats.Conn
	stop  context.CancelFunc
	wg    sync.WaitGroup // the roll call and the events goroutines
}

// openAPI builds the API and the admin page when p turns them on (nil,
// nil otherwise); ready is the worker's NATS readiness, and side says
// where NATS is. Close ends its goroutines and its connection.
func openAPI(p *plan, side natsSide, ready readiness, reg *prometheus.Registry, log *slog.Logger) (*apiSide, error) {
	if p.api == nil {
		return nil, nil
	}
	nc, err := nats.Connect(strings.Join(side.conn.URLs, ","), apiConnOptions(p, side, log)...)
	if err != nil {
		return nil, fmt.Errorf("%s: connect to nats for the api: %w", envName("APIKey"), err)
	}
	cfg := *p.api
	cfg.Conn = nc
	cfg.Scheme = p.scheme
	cfg.Log = log
	cfg.Ready = func() bool { return ready.Ready() && nc.IsConnected() }
	if p.streamName() != "" {
		if cfg.JetStream, err = jetstream.New(nc); err != nil {
			nc.Close()
			return nil, fmt.Errorf("jetstream for the api: %w", err)
		}
	}
	pres := api.NewNATSPresence(nc, p.scheme)
	cfg.Presence = pres
	srv, err := api.New(cfg)
	if err != nil {
		nc.Close()
		return nil, inTermsOfVariables(err, apiFields)
	}
	events, err := admin.SubscribeEvents(nc, p.scheme.EventPrefix())
	if err != nil {
		nc.Close()
		return nil, err
	}
	page, err := admin.New(admin.Config{
		Check: srv.KeyMatches, Actions: srv.Actions(), Metrics: reg, Events: events,
		Worker: p.workerID, SubjectPrefix: p.scheme.Prefix(),
	})
	if err != nil {
		nc.Close()
		return nil, err
	}
	ctx, stop := context.WithCancel(context.Background())
	a := &apiSide{api: srv, admin: page, nc: nc, stop: stop}
	a.wg.Add(2)
	go func() { defer a.wg.Done(); pres.Run(ctx) }()
	go func() { defer a.wg.Done(); events.Run(ctx) }()
	return a, nil
}

// close ends the goroutines, then the connection; a nil apiSide is off.
func (a *apiSide) close(context.Context) error {
	if a == nil {
		return nil
	}
	a.stop()
	a.wg.Wait()
	a.nc.Close()
	return nil
}

// apiConnOptions are the worker's NATS settings for the API's connection,
// with the API's own credentials when it has them.
func apiConnOptions(p *plan, side natsSide, log *slog.Logger) []nats.Option {
	c := side.conn
	opts := []nats.Option{
		nats.Name(c.Name + " api"),
		// A publish the server refuses (permissions) is reported only
		// here, after the API has answered: say so in the log.
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			log.Error("the HTTP API's NATS connection: the server reported an error; publishes it refused were not delivered", "err", err)
		}),
		nats.MaxReconnects(c.MaxReconnects),
		nats.ReconnectWait(c.ReconnectWait),
		nats.ReconnectJitter(c.ReconnectWait/4, c.ReconnectWait/4),
		nats.PingInterval(c.PingInterval),
		nats.MaxPingsOutstanding(c.MaxPingsOut),
		nats.Timeout(c.ConnectTimeout),
		// Start even when no server is up yet: the API says 503 until
		// the connection is made.
		nats.RetryOnFailedConnect(true),
	}
	if c.InProcess != nil {
		opts = append(opts, nats.InProcessServer(c.InProcess))
	}
	switch {
	case p.cfg.APINATSUser != "" || p.cfg.APINATSPassword != "":
		// Credentials of its own: the API publishes to users' subjects,
		// which a NATS setup may refuse the worker (deploy/nats.conf does).
		opts = append(opts, nats.UserInfo(p.cfg.APINATSUser, p.cfg.APINATSPassword))
	case p.cfg.APINATSCreds != "":
		opts = append(opts, nats.UserCredentials(p.cfg.APINATSCreds))
	default:
		if c.User != "" || c.Password != "" {
			opts = append(opts, nats.UserInfo(c.User, c.Password))
		}
		if c.Token != "" {
			opts = append(opts, nats.Token(c.Token))
		}
		if c.CredsFile != "" {
			opts = append(opts, nats.UserCredentials(c.CredsFile))
		}
		if c.NKeySeedFile != "" {
			// worker.New has read the same seed already and failed on a bad one.
			if opt, err := nats.NkeyOptionFromSeed(c.NKeySeedFile); err == nil {
				opts = append(opts, opt)
			}
		}
	}
	if c.TLSCAFile != "" {
		opts = append(opts, nats.RootCAs(c.TLSCAFile))
	}
	if c.TLSCertFile != "" {
		opts = append(opts, nats.ClientCert(c.TLSCertFile, c.TLSKeyFile))
	}
	return opts
}
