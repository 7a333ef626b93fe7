package main

import (
	"errors"
	"fmt"

	"github.com/spf13/pflag"
	"github.com/vishvananda/netlink"

	"github.com/tenantnet/tenantnet/firewall"
	"github.com/tenantnet/tenantnet/internal/cli"
	"github.com/tenantnet/tenantnet/loader"
)

func datapathCmd() *command {
	return &command{Name: "datapath", Summary: "load (or upgrade) and unload the datapath (tenantnetd does this at boot)",
		Sub: []*command{datapathLoadCmd(), datapathUnloadCmd()}}
}

func datapathLoadCmd() *command {
	var uplinks []string
	var legacy bool
	var sample uint32
	return &command{
		Name: "load", Summary: "load or upgrade the programs, restore rules and ports from the saved state",
		Usage: "[--uplink IF ...] [--legacy-tc] [--sample-rate N]",
		Example: `  tenantfw datapath load --uplink eth0
  # after a reboot (empty bpffs) the same command restores every tenant, rule and port binding`,
		Flags: func(fs *pflag.FlagSet, _ *Env) {
			fs.StringSliceVar(&uplinks, "uplink", nil, "attach the XDP prefilter to this interface (repeat)")
			fs.BoolVar(&legacy, "legacy-tc", false, "attach ports with clsact + cls_bpf even where TCX exists")
			fs.Uint32Var(&sample, "sample-rate", 1, "emit a drop event for about 1 in N drops (0: none) when the maps are created")
		},
		Run: func(env *Env, fs *pflag.FlagSet, args []string) error {
			if err := cli.NoArgs(args); err != nil {
				return err
			}
			if err := requireRoot(); err != nil {
				return err
			}
			lock, err := firewall.Lock(env.StateDir, env.Wait)
			if err != nil {
				return err
			}
			dp, err := loader.Load(loader.Options{PinDir: env.PinDir, Logger: env.Log, SampleRate: sample})
			lock.Close()
			if err != nil {
				return err
			}
			defer dp.Close()
			fw, err := openFirewall(env, false)
			if err != nil {
				return err
			}
			defer fw.Close()
			if err := fw.Reconcile(); err != nil {
				return fmt.Errorf("restore saved state: %w", err)
			}
			ports, err := fw.Ports()
			if err != nil {
				return err
			}
			attached := 0
			for _, p := range ports {
				l, err := netlink.LinkByName(p.Ifname)
				if err != nil {
					env.Log.Warn("saved port has no interface; keeping its binding for later", "port", p.Ifname)
					continue
				}
				idx := l.Attrs().Index
				if err := fw.Maps.BindPort(mapsBinding(p, idx)); err != nil {
					return err
				}
				if _, err := dp.AttachPort(idx, loader.AttachOptions{ForceLegacyTC: legacy}); err != nil {
					return fmt.Errorf("port %s: %w", p.Ifname, err)
				}
				attached++
			}
			for _, u := range uplinks {
				l, err := netlink.LinkByName(u)
				if err != nil {
					return fmt.Errorf("--uplink %s: %w", u, err)
				}
				mode, err := dp.AttachUplink(l.Attrs().Index, loader.AttachOptions{})
				if err != nil {
					return err
				}
				fmt.Fprintf(env.Stdout, "uplink %s: %s\n", u, mode)
			}
			n, err := fw.CountRules()
			if err != nil {
				return err
			}
			fmt.Fprintf(env.Stdout, "datapath loaded at %s: %d rules restored, %d ports attached\n", env.PinDir, n, attached)
			return nil
		},
	}
}

func datapathUnloadCmd() *command {
	return &command{
		Name: "unload", Summary: "detach everything and remove the pins (the saved state stays)",
		Usage: "", Example: "  tenantfw datapath unload     # then: tenantfw datapath load  restores it all",
		Run: func(env *Env, fs *pflag.FlagSet, args []string) error {
			if err := requireRoot(); err != nil {
				return err
			}
			lock, err := firewall.Lock(env.StateDir, env.Wait)
			if err != nil {
				return err
			}
			defer lock.Close()
			if _, err := loader.OpenMaps(env.PinDir); errors.Is(err, loader.ErrNotLoaded) {
				return err
			}
			if err := loader.Remove(env.PinDir); err != nil {
				return err
			}
			fmt.Fprintf(env.Stdout, "datapath at %s unloaded; rules stay saved in %s\n", env.PinDir, env.StateDir)
			return nil
		},
	}
}
