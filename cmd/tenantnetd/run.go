package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/net/netutil"

	"github.com/tenantnet/tenantnet/api"
	"github.com/tenantnet/tenantnet/config"
	"github.com/tenantnet/tenantnet/internal/cli"
	"github.com/tenantnet/tenantnet/metrics"
	"github.com/tenantnet/tenantnet/node"
)

func runCmd() *command {
	var adopt bool
	return &command{
		Name: "run", Summary: "run the service (systemd: tenantnetd.service)",
		Usage: "[--config FILE] [--adopt]",
		Example: `  tenantnetd run --config /etc/tenantnet/node.yaml
  tenantnetd run --adopt   # once: take the state as the node's, deleting links and firewall tenants it does not know`,
		Flags: func(fs *pflag.FlagSet, env *Env) {
			env.configFlag(fs)
			fs.BoolVar(&adopt, "adopt", false, "let the first reconcile delete every link and firewall tenant the state does not know, even all of them (held back otherwise)")
		},
		Run: func(env *Env, fs *pflag.FlagSet, args []string) error {
			if err := cli.NoArgs(args); err != nil {
				return err
			}
			return serve(env.Config, adopt)
		},
	}
}

func serve(cfgPath string, adopt bool) error {
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	slog.SetDefault(log)
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	start := time.Now()
	// Bound before the node changes anything: a port in use or an
	// address the node lacks is the operator's to fix, and a node whose
	// metrics nobody can scrape is not left running as if all were well.
	mln, err := net.Listen("tcp", cfg.MetricsAddr)
	if err != nil {
		return fmt.Errorf("metrics_listen %s: %w", cfg.MetricsAddr, err)
	}
	defer mln.Close()
	// The API socket too, before the node is touched: a socket another
	// tenantnetd serves, or a directory not ours, stops this one here.
	aopts := api.Options{Path: cfg.APISocket, GID: cfg.APIGID, Log: log}
	aln, err := api.Listen(aopts)
	if err != nil {
		return err
	}
	defer aln.Close()
	note, err := cfg.PrepareStateDir()
	if err != nil {
		return err
	}
	if note != "" {
		log.Warn(note)
	}
	s, err := node.New(cfg, log)
	if err != nil {
		return err
	}
	defer s.Close()
	if adopt {
		log.Warn("--adopt: the first reconcile deletes every link and firewall tenant the state does not know", "state_dir", cfg.StateDir)
		s.SetAdopt(true)
	}
	// The IPv4 proxy (issue 17) is a process of its own that outlives
	// this one: adopted if it runs, upgraded if it is another build,
	// started if none. A proxy that cannot start is logged, not fatal:
	// the rest of the node does not wait on it.
	// Reconcile then hands it the exposures (px.Apply) every run.
	px, err := startProxy(cfg, log)
	if err != nil {
		log.Error("the IPv4 proxy is not running; exposures are not served", "err", err)
	}
	if px != nil {
		defer px.Close()     // leaves the proxy serving
		s.SetProxyRunner(px) // never a nil *Supervisor: a non-nil interface
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Converge once before serving: the API then answers from a node
	// that matches its state.
	if err := s.Reconcile(true); err != nil {
		log.Warn("first reconcile had errors; retrying in the loop", "err", err)
	}
	// BGP after the first reconcile: the peers get the whole table in
	// the first update (a restart's End-of-RIB follows every route).
	if err := s.StartBGP(ctx); err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", metrics.Handler(s, log))
	// Profiles only when asked for by the environment (a scale bench, a
	// node under investigation): the metrics listener may face a network,
	// and a profile shows far more than the metrics do.
	if os.Getenv("TENANTNETD_PPROF") == "1" {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		log.Warn("TENANTNETD_PPROF=1: serving /debug/pprof/ on the metrics listener", "metrics", cfg.MetricsAddr)
	}
	// A scrape walks every map: its time is bounded, and so are the
	// connections (and the handler serves two scrapes at once).
	msrv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: time.Minute, IdleTimeout: time.Minute, MaxHeaderBytes: 16 << 10}
	go func() {
		if err := msrv.Serve(netutil.LimitListener(mln, 16)); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server", "err", err)
		}
	}()
	go func() { <-ctx.Done(); msrv.Close() }()
	// s.Close (deferred) runs only once Run has returned: a reconcile
	// still running would use what Close closes (L8).
	ran := make(chan struct{})
	go func() { defer close(ran); s.Run(ctx) }()
	log.Info("tenantnetd ready", "node", cfg.NodeID, "startup", time.Since(start).String(), "metrics", cfg.MetricsAddr)
	err = api.ServeOn(ctx, aln, aopts, api.Handler(s))
	log.Info("tenantnetd stopping; the datapath stays attached and the WireGuard devices up")
	stop() // when the API failed rather than a signal
	<-ran
	// No Cease: the peers keep the routes for the graceful restart time
	// while the datapath forwards; `tenantnetd cleanup` withdraws them.
	s.StopBGP(context.Background())
	return err
}
