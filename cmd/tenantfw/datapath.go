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
	var hostRouting, prefilter bool
	return &command{
		Name: "load", Summary: "load or upgrade the programs, restore rules and ports from the saved state",
		Usage: "[--uplink IF ...] [--prefilter=false] [--host-routing=false] [--legacy-tc] [--sample-rate N]",
		Example: `  tenantfw datapath load --uplink eth0
  # after a reboot (empty bpffs) the same command restores every tenant, rule and port binding
  tenantfw datapath load --uplink eth0 --host-routing=false   # every packet through the kernel's forwarding`,
		Flags: func(fs *pflag.FlagSet, _ *Env) {
			fs.StringSliceVar(&uplinks, "uplink", nil, "the uplink (repeat): the XDP prefilter on it and, with host routing, tn_uplink_in on its TC ingress")
			fs.BoolVar(&prefilter, "prefilter", true, "attach the XDP prefilter to the uplinks (false: detach it, keep host routing)")
			fs.BoolVar(&hostRouting, "host-routing", true, "hand packets for workloads straight into their namespace (bpf_redirect_peer) where the kernel can; false: the kernel's path. Saved: later loads and port attach follow it")
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
			if fs.Changed("host-routing") {
				if err := setHostRoutingWanted(env, hostRouting); err != nil {
					return err
				}
			}
			hr, why := hostRoutingOn(env)
			if err := fw.Reconcile(); err != nil {
				return fmt.Errorf("restore saved state: %w", err)
			}
			ports, err := fw.Ports()
			if err != nil {
				return err
			}
			attached, routed := 0, 0
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
				ok, err := syncPortHostRoute(fw.Maps, l, p, "", hr)
				if err != nil {
					return err
				}
				if ok {
					routed++
				}
			}
			for _, u := range uplinks {
				l, err := netlink.LinkByName(u)
				if err != nil {
					return fmt.Errorf("--uplink %s: %w", u, err)
				}
				idx := l.Attrs().Index
				mode := loader.Mode("no prefilter")
				if prefilter {
					if mode, err = dp.AttachUplink(idx, loader.AttachOptions{}); err != nil {
						return err
					}
				} else {
					for _, a := range loader.ListAttachmentsOf(env.PinDir, idx) {
						if a.Hook == loader.HookUplink {
							if err := a.Detach(env.PinDir); err != nil {
								return fmt.Errorf("--uplink %s: detach the prefilter: %w", u, err)
							}
						}
					}
				}
				if err := syncUplinkIn(dp, fw.Maps, l, hr, legacy); err != nil {
					return err
				}
				hrs := "host routing on"
				if !hr {
					hrs = "host routing " + why
				}
				fmt.Fprintf(env.Stdout, "uplink %s: %s, %s\n", u, mode, hrs)
			}
			if hr {
				fmt.Fprintf(env.Stdout, "host routing on: %d of %d ports\n", routed, attached)
			} else {
				fmt.Fprintf(env.Stdout, "host routing %s\n", why)
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
