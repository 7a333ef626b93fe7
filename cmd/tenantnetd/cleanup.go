package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/pflag"
	"github.com/vishvananda/netlink"

	"github.com/tenantnet/tenantnet/config"
	"github.com/tenantnet/tenantnet/internal/cli"
	"github.com/tenantnet/tenantnet/loader"
	"github.com/tenantnet/tenantnet/node"
	"github.com/tenantnet/tenantnet/wg"
)

func cleanupCmd() *command {
	var purge bool
	return &command{
		Name: "cleanup", Summary: "remove everything of ours: links, exit routing, the datapath (state kept unless --purge-state)",
		Usage: "[--config FILE] [--purge-state]",
		Example: `  tenantnetd cleanup --config /etc/tenantnet/node.yaml
  tenantnetd cleanup --purge-state   # also forget networks, workloads and rules`,
		Flags: func(fs *pflag.FlagSet, env *Env) {
			env.configFlag(fs)
			fs.BoolVar(&purge, "purge-state", false, "also delete the state directory")
		},
		Run: func(env *Env, fs *pflag.FlagSet, args []string) error {
			if err := cli.NoArgs(args); err != nil {
				return err
			}
			return cleanup(env.Config, purge, env.Stdout)
		},
	}
}

// cleanup removes everything of ours: workload ports and bridges, the
// datapath (detached, unpinned) and, with purge, the state.
func cleanup(cfgPath string, purge bool, stdout io.Writer) error {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	links, err := netlink.LinkList()
	if err != nil {
		return err
	}
	n := 0
	for _, l := range links {
		name := l.Attrs().Name
		if len(name) > 3 && (name[:3] == "tnb" || name[:3] == "tnw") {
			if err := netlink.LinkDel(l); err == nil {
				n++
			}
		}
	}
	h, err := netlink.NewHandle()
	if err != nil {
		return err
	}
	defer h.Close()
	if _, err := node.RemoveExitRouting(h); err != nil {
		return fmt.Errorf("remove the exit routing: %w", err)
	}
	if err := loader.Remove(cfg.BPFDir); err != nil {
		return err
	}
	os.Remove(cfg.APISocket)
	// Sockets of embedded WireGuard devices of this node, left by a kill.
	socks, _ := filepath.Glob("/var/run/wireguard/tg*" + wg.Name(0, cfg.NodeID)[3:] + ".sock")
	for _, s := range socks {
		os.Remove(s)
	}
	if purge {
		if err := os.RemoveAll(cfg.StateDir); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "removed %d links and the datapath at %s%s\n", n, cfg.BPFDir, map[bool]string{true: "; state purged", false: ""}[purge])
	return nil
}
