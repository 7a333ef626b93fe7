package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/spf13/pflag"

	"github.com/tenantnet/tenantnet/config"
	"github.com/tenantnet/tenantnet/internal/cli"
	"github.com/tenantnet/tenantnet/node"
	"github.com/tenantnet/tenantnet/proxyd"
)

func cleanupCmd() *command {
	var purge, force bool
	return &command{
		Name: "cleanup", Summary: "remove everything of ours: links, exit routing, the datapath (state kept unless --purge-state)",
		Usage: "[--config FILE] [--purge-state [--force]]",
		Example: `  tenantnetd cleanup --config /etc/tenantnet/node.yaml
  tenantnetd cleanup --purge-state   # also forget networks, workloads and rules`,
		Flags: func(fs *pflag.FlagSet, env *Env) {
			env.configFlag(fs)
			fs.BoolVar(&purge, "purge-state", false, "also delete the state directory (refused while this node is the exit of a network with live members, or holds delegations)")
			fs.BoolVar(&force, "force", false, "with --purge-state: purge even while other nodes reach the outside through this one")
		},
		Run: func(env *Env, fs *pflag.FlagSet, args []string) error {
			if err := cli.NoArgs(args); err != nil {
				return err
			}
			if force && !purge {
				return cli.Usagef("--force goes with --purge-state")
			}
			return cleanup(env.Config, purge, force, env.Stdout)
		},
	}
}

// cleanup removes everything of ours (node.Cleanup says what) and
// reports what it removed.
func cleanup(cfgPath string, purge, force bool, stdout io.Writer) error {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	rep, err := node.Cleanup(cfg, purge, force)
	if err != nil {
		return err
	}
	// A node stopped for good takes its routes back: its last run left
	// them with its BGP peers (graceful restart).
	// What is local is removed already: a router not reached is said,
	// not a failure of the cleanup.
	if cfg.BGP != nil {
		if err := node.WithdrawBGP(context.Background(), cfg, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))); err != nil {
			fmt.Fprintf(stdout, "bgp: WARNING: %v\n", err)
		} else {
			fmt.Fprintln(stdout, "bgp: routes withdrawn from the neighbours")
		}
	}
	// After node.Cleanup, which removes nothing when it refuses a purge;
	// Stop finds the proxy processes by their command line even when the
	// purge took their directory.
	proxies, err := proxyd.Stop(proxyd.DirFor(cfg.StateDir))
	if err != nil {
		return fmt.Errorf("stop the IPv4 proxy: %w", err)
	}
	fmt.Fprintf(stdout, "removed %d links, %d WireGuard devices, %d exit routing rules, %d bought ipv4 addresses, %d proxy processes and the datapath at %s%s\n",
		rep.Links, rep.WireGuard, rep.ExitRules, rep.IPv4, proxies, cfg.BPFDir, map[bool]string{true: "; state purged", false: ""}[rep.Purged])
	return nil
}
