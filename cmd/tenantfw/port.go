package main

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/spf13/pflag"
	"github.com/vishvananda/netlink"

	"github.com/tenantnet/tenantnet/bpfmaps"
	"github.com/tenantnet/tenantnet/firewall"
	"github.com/tenantnet/tenantnet/internal/cli"
	"github.com/tenantnet/tenantnet/loader"
	"github.com/tenantnet/tenantnet/policy"
)

func portCmd() *command {
	return &command{Name: "port", Summary: "attach workload ports (tenantnetd does this for its workloads)",
		Sub: []*command{portAttachCmd(), portDetachCmd(), portListCmd()}}
}

func portAttachCmd() *command {
	var ifname string
	var tenant uint32
	var addrs []string
	var legacy bool
	var mac string
	return &command{
		Name: "attach", Summary: "attach the firewall to a workload port and bind it to a tenant",
		Usage: "--ifname IF --tenant T --addr A [--addr B ...] [--mac MAC] [--legacy-tc]",
		Example: "  tenantfw port attach --ifname veth-web1 --tenant 7 --addr 2001:db8:7::10 --addr 10.7.0.10\n" +
			"  tenantfw port attach --ifname tap-vm1 --tenant 7 --addr 2001:db8:7::11 --mac 52:54:00:12:34:56",
		Flags: func(fs *pflag.FlagSet, _ *Env) {
			fs.StringVar(&ifname, "ifname", "", "host side of the workload's veth or tap (required)")
			fs.Uint32Var(&tenant, "tenant", 0, "tenant id (required)")
			fs.StringSliceVar(&addrs, "addr", nil, "address (or delegated prefix) the workload may send from (repeat)")
			fs.BoolVar(&legacy, "legacy-tc", false, "use clsact + cls_bpf even where TCX exists")
			fs.StringVar(&mac, "mac", "", "the workload side's MAC: its EUI-64 link-local is bound (default: asked of a veth's peer; or give the link-local as an --addr)")
		},
		Run: func(env *Env, fs *pflag.FlagSet, args []string) error {
			if err := cli.NoArgs(args); err != nil {
				return err
			}
			if ifname == "" || !fs.Changed("tenant") || len(addrs) == 0 {
				return cli.Usagef("--ifname, --tenant and --addr are required")
			}
			p := firewall.Port{Ifname: ifname, Tenant: tenant}
			for _, s := range addrs {
				a, err := policy.ParsePrefix(s)
				if err != nil || !a.IsValid() {
					return fmt.Errorf("--addr %s: %v", s, orMsg(err, "want an address"))
				}
				p.Addrs = append(p.Addrs, a)
			}
			link, err := netlink.LinkByName(ifname)
			if err != nil {
				return fmt.Errorf("--ifname %s: %w", ifname, err)
			}
			if err := bindLinkLocal(&p, link, mac); err != nil {
				return err
			}
			fw, err := openFirewall(env, false)
			if err != nil {
				return err
			}
			defer fw.Close()
			idx := link.Attrs().Index
			// Bind first: an attached port without a binding drops
			// everything, a bound port without programs is not enforced.
			if err := fw.BindPort(p, uint32(idx)); err != nil {
				return flagError(err)
			}
			dp, err := loader.Open(env.PinDir)
			if err != nil {
				return err
			}
			defer dp.Close()
			mode, err := dp.AttachPort(idx, loader.AttachOptions{ForceLegacyTC: legacy})
			if err != nil {
				return err
			}
			// Host routing last: packets are handed to the port only
			// once its binding and programs are there.
			hr, why := hostRoutingOn(env)
			routed, err := syncPortHostRoute(fw.Maps, link, p, mac, hr)
			if err != nil {
				return err
			}
			switch {
			case routed:
				why = "host routing on"
			case hr:
				why = "host routing off for this port: its workload's MAC is not known (give --mac)"
			default:
				why = "host routing " + why
			}
			fmt.Fprintf(env.Stdout, "port %s (ifindex %d): tenant %d, %s, attached with %s, %s\n", ifname, idx, tenant, prefixList(p.Addrs), mode, why)
			return nil
		},
	}
}

func portDetachCmd() *command {
	var ifname string
	return &command{
		Name: "detach", Summary: "detach the firewall from a port and forget its binding",
		Usage: "--ifname IF", Example: "  tenantfw port detach --ifname veth-web1",
		Flags: func(fs *pflag.FlagSet, _ *Env) { fs.StringVar(&ifname, "ifname", "", "port (required)") },
		Run: func(env *Env, fs *pflag.FlagSet, args []string) error {
			if ifname == "" {
				return cli.Usagef("--ifname is required")
			}
			fw, err := openFirewall(env, false)
			if err != nil {
				return err
			}
			defer fw.Close()
			idx := 0
			if l, err := netlink.LinkByName(ifname); err == nil {
				idx = l.Attrs().Index
				if err := loader.Detach(env.PinDir, idx); err != nil {
					return err
				}
			}
			if err := fw.UnbindPort(ifname, uint32(idx)); err != nil {
				return err
			}
			fmt.Fprintf(env.Stdout, "port %s detached\n", ifname)
			return nil
		},
	}
}

func portListCmd() *command {
	return &command{
		Name: "list", Summary: "list bound ports", Usage: "[-o json]", Example: "  tenantfw port list",
		Run: func(env *Env, fs *pflag.FlagSet, args []string) error {
			fw, err := openFirewall(env, true)
			if err != nil {
				return err
			}
			defer fw.Close()
			ports, err := fw.Ports()
			if err != nil {
				return err
			}
			type view struct {
				Ifname  string   `json:"ifname"`
				Ifindex int      `json:"ifindex"`
				Tenant  uint32   `json:"tenant"`
				Addrs   []string `json:"addrs"`
			}
			vs := []view{}
			for _, p := range ports {
				v := view{Ifname: p.Ifname, Tenant: p.Tenant, Addrs: []string{}}
				if l, err := netlink.LinkByName(p.Ifname); err == nil {
					v.Ifindex = l.Attrs().Index
				}
				for _, a := range p.Addrs {
					v.Addrs = append(v.Addrs, prefixText(a))
				}
				vs = append(vs, v)
			}
			if env.Output == "json" {
				return cli.JSON(env.Stdout, vs)
			}
			tw := cli.Table(env.Stdout)
			fmt.Fprintln(tw, "PORT\tIFINDEX\tTENANT\tADDRESSES")
			for _, v := range vs {
				fmt.Fprintf(tw, "%s\t%d\t%d\t%v\n", v.Ifname, v.Ifindex, v.Tenant, v.Addrs)
			}
			return tw.Flush()
		},
	}
}

func mapsBinding(p firewall.Port, ifindex int) bpfmaps.PortBinding {
	return bpfmaps.PortBinding{Ifindex: uint32(ifindex), Tenant: p.Tenant, Addrs: p.Addrs}
}

// bindLinkLocal adds the workload's link-local to the binding, unless an
// --addr names one: the EUI-64 of --mac, or of the veth peer's MAC. A
// port without one drops the workload's neighbour discovery (its own
// link-local is the only one it may send from).
func bindLinkLocal(p *firewall.Port, link netlink.Link, mac string) error {
	for _, a := range p.Addrs {
		if a.Addr().IsLinkLocalUnicast() {
			if mac != "" {
				return cli.Usagef("--mac and a link-local --addr: give one")
			}
			return nil
		}
	}
	var hw net.HardwareAddr
	var err error
	if mac != "" {
		if hw, err = net.ParseMAC(mac); err != nil {
			return fmt.Errorf("--mac %s: %w", mac, err)
		}
	} else if hw, err = firewall.PeerMAC(link); err != nil {
		return fmt.Errorf("the workload's link-local: %w (or give --mac, or a link-local --addr)", err)
	}
	ll, err := firewall.LinkLocal(hw)
	if err != nil {
		return fmt.Errorf("--mac: %w", err)
	}
	p.Addrs = append(p.Addrs, netip.PrefixFrom(ll, 128))
	return nil
}
