package main

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/pflag"

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
	s, err := node.New(cfg, log)
	if err != nil {
		return err
	}
	defer s.Close()
	if adopt {
		log.Warn("--adopt: the first reconcile deletes every link and firewall tenant the state does not know", "state_dir", cfg.StateDir)
		s.SetAdopt(true)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Converge once before serving: the API then answers from a node
	// that matches its state.
	if err := s.Reconcile(true); err != nil {
		log.Warn("first reconcile had errors; retrying in the loop", "err", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", metrics.Handler(s, log))
	msrv := &http.Server{Addr: cfg.MetricsAddr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := msrv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server", "err", err)
		}
	}()
	go func() { <-ctx.Done(); msrv.Close() }()
	go s.Run(ctx)
	log.Info("tenantnetd ready", "node", cfg.NodeID, "startup", time.Since(start).String(), "metrics", cfg.MetricsAddr)
	err = api.Serve(ctx, cfg.APISocket, api.Handler(s), log)
	log.Info("tenantnetd stopping; the datapath stays attached and the WireGuard devices up")
	return err
}
