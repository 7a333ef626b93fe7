package main

import (
	"fmt"
	"net/netip"
	"strconv"
	"text/tabwriter"

	"github.com/spf13/pflag"

	"github.com/tenantnet/tenantnet/api"
	"github.com/tenantnet/tenantnet/internal/cli"
)

func ipv4Cmd() *command {
	return &command{Name: "ipv4", Summary: "public IPv4 of this node's pool for tenant networks: buy, release, list", Sub: []*command{
		ipv4BuyCmd(), ipv4ReleaseCmd(), ipv4ListCmd(),
	}}
}

func ipv4BuyCmd() *command {
	var network, address, node string
	return &command{
		Name: "buy", Summary: "lease an address of this node's ipv4_pool to a network (prints the address)",
		Usage: "--network NET [--address A] [--node X]",
		Example: `  A=$(tenantnetd ipv4 buy --network acme)
  tenantnetd ipv4 buy --network acme --address 203.0.113.9`,
		Flags: func(fs *pflag.FlagSet, env *Env) {
			env.clientFlags(fs)
			fs.StringVar(&network, "network", "", "network id (required)")
			fs.StringVar(&address, "address", "", "the address to buy (default: the lowest free one)")
			fs.StringVar(&node, "node", "", "the node whose pool it comes from: only this node (another node's: buy it there, or network declare --ipv4 NODE)")
		},
		Run: func(env *Env, fs *pflag.FlagSet, args []string) error {
			if err := checkArgs(fs, args, "network"); err != nil {
				return err
			}
			if err := checkIDs(fs, "network"); err != nil {
				return err
			}
			if address != "" {
				if a, err := netip.ParseAddr(address); err != nil || !a.Is4() {
					return cli.Usagef("--address %q: want an IPv4 address", address)
				}
			}
			l, err := env.client().BuyIPv4(api.BuyIPv4Request{Network: network, Address: address, Node: node})
			if err != nil {
				return err
			}
			if env.Output == "json" {
				return cli.JSON(env.Stdout, l)
			}
			// The address alone, for A=$(tenantnetd ipv4 buy ...).
			_, err = fmt.Fprintln(env.Stdout, l.Address)
			return err
		},
	}
}

func ipv4ReleaseCmd() *command {
	var address string
	return &command{
		Name: "release", Summary: "give an address back: its exposures go, it waits in quarantine (reuse_quarantine)",
		Usage: "--address A", Example: "  tenantnetd ipv4 release --address 203.0.113.9",
		Flags: func(fs *pflag.FlagSet, env *Env) {
			env.socketFlags(fs)
			fs.StringVar(&address, "address", "", "the address (required)")
		},
		Run: func(env *Env, fs *pflag.FlagSet, args []string) error {
			if err := checkArgs(fs, args, "address"); err != nil {
				return err
			}
			a, err := netip.ParseAddr(address)
			if err != nil || !a.Is4() {
				return cli.Usagef("--address %q: want an IPv4 address", address)
			}
			return env.client().ReleaseIPv4(a)
		},
	}
}

func ipv4ListCmd() *command {
	return &command{
		Name: "list", Summary: "the addresses leased and in quarantine",
		Usage: "[-o json]", Example: "  tenantnetd ipv4 list",
		Flags: func(fs *pflag.FlagSet, env *Env) { env.clientFlags(fs) },
		Run: func(env *Env, fs *pflag.FlagSet, args []string) error {
			if err := cli.NoArgs(args); err != nil {
				return err
			}
			ls, err := env.client().IPv4()
			if err != nil {
				return err
			}
			return env.print(ls, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "ADDRESS\tNETWORK\tSTATE\tON")
				for _, l := range ls {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", l.Address, dash(l.Network), l.State, l.On)
				}
			})
		},
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func exposeCmd() *command {
	var network, ipv4, to, proto, pp string
	var maxConns int
	var port int
	return &command{
		Name: "expose", Summary: "serve a network's service on one of its bought IPv4 addresses (or: expose list)",
		Usage: "--network NET --ipv4 A --port P --to <workload[:port] | [ipv6]:port> --proto tcp|udp [--proxy-protocol none|v1|v2] [--max-conns N] | list",
		Example: `  tenantnetd expose --network acme --ipv4 $A --port 443 --to web-1 --proto tcp
  tenantnetd expose --network acme --ipv4 $A --port 80 --to web-1:8080 --proto tcp --proxy-protocol v2
  tenantnetd expose --network acme --ipv4 $A --port 53 --to '[2001:db8:102:1::53]:53' --proto udp
  tenantnetd expose list`,
		Flags: func(fs *pflag.FlagSet, env *Env) {
			env.clientFlags(fs)
			fs.StringVar(&network, "network", "", "network id (required)")
			fs.StringVar(&ipv4, "ipv4", "", "an address the network bought (required)")
			fs.IntVar(&port, "port", 0, "the port clients connect to (required)")
			fs.StringVar(&to, "to", "", "the service: a workload id (same port), workload:port, or [ipv6]:port of the network's (required)")
			fs.StringVar(&proto, "proto", "", "tcp or udp (required)")
			fs.StringVar(&pp, "proxy-protocol", "none", "PROXY protocol header to the service: none, v1 or v2 (tcp)")
			fs.IntVar(&maxConns, "max-conns", 0, "cap of open TCP connections or UDP sessions (0: the proxy's default, 1024); over it, refused and counted")
		},
		Run: func(env *Env, fs *pflag.FlagSet, args []string) error {
			if len(args) == 1 && args[0] == "list" {
				return exposeList(env)
			}
			if err := checkArgs(fs, args, "network", "ipv4", "port", "to", "proto"); err != nil {
				return err
			}
			if err := checkIDs(fs, "network"); err != nil {
				return err
			}
			if a, err := netip.ParseAddr(ipv4); err != nil || !a.Is4() {
				return cli.Usagef("--ipv4 %q: want an IPv4 address", ipv4)
			}
			if port < 1 || port > 65535 {
				return cli.Usagef("--port %d: want 1..65535", port)
			}
			if proto != "tcp" && proto != "udp" {
				return cli.Usagef("--proto %q: want tcp or udp", proto)
			}
			if pp != "none" && pp != "v1" && pp != "v2" {
				return cli.Usagef("--proxy-protocol %q: want none, v1 or v2", pp)
			}
			e, err := env.client().Expose(api.ExposeRequest{Network: network, IPv4: ipv4, Port: port, Proto: proto, To: to, ProxyProtocol: pp, MaxConns: maxConns})
			if err != nil {
				return err
			}
			return env.print(e, func(tw *tabwriter.Writer) {
				state := "served"
				if !e.Served {
					state = e.Error
				}
				fmt.Fprintf(tw, "exposed %s %s -> %s (network %s, proxy protocol %s): %s\n", e.Proto, e.Listen(), e.Target, e.Network, e.ProxyProtocol, state)
			})
		},
	}
}

func exposeList(env *Env) error {
	es, err := env.client().Exposures()
	if err != nil {
		return err
	}
	return env.print(es, func(tw *tabwriter.Writer) {
		fmt.Fprintln(tw, "NETWORK\tPROTO\tLISTEN\tTARGET\tPP\tACTIVE\tTOTAL\tREFUSED\tBYTES-IN\tBYTES-OUT\tSESSIONS\tDIAL-ERRORS")
		for _, e := range es {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t", e.Network, e.Proto, e.Listen(), e.Target, e.ProxyProtocol)
			st := e.Stats
			if !e.Served || st == nil {
				why := "not served"
				if e.Error != "" {
					why = e.Error
				}
				fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\t-\n", why)
				continue
			}
			active, sessions := strconv.FormatInt(st.Active, 10), "-"
			if e.Proto == "udp" {
				active, sessions = "-", active
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%s\t%d\n", active, st.Total, st.RefusedTotal(), st.BytesIn, st.BytesOut, sessions, st.DialErrors)
		}
	})
}

func unexposeCmd() *command {
	var ipv4, proto string
	var port int
	return &command{
		Name: "unexpose", Summary: "stop serving a port of a bought IPv4 address",
		Usage: "--ipv4 A --port P --proto tcp|udp", Example: "  tenantnetd unexpose --ipv4 $A --port 443 --proto tcp",
		Flags: func(fs *pflag.FlagSet, env *Env) {
			env.socketFlags(fs)
			fs.StringVar(&ipv4, "ipv4", "", "the address (required)")
			fs.IntVar(&port, "port", 0, "the port (required)")
			fs.StringVar(&proto, "proto", "", "tcp or udp (required)")
		},
		Run: func(env *Env, fs *pflag.FlagSet, args []string) error {
			if err := checkArgs(fs, args, "ipv4", "port", "proto"); err != nil {
				return err
			}
			a, err := netip.ParseAddr(ipv4)
			if err != nil || !a.Is4() {
				return cli.Usagef("--ipv4 %q: want an IPv4 address", ipv4)
			}
			if port < 1 || port > 65535 {
				return cli.Usagef("--port %d: want 1..65535", port)
			}
			if proto != "tcp" && proto != "udp" {
				return cli.Usagef("--proto %q: want tcp or udp", proto)
			}
			return env.client().Unexpose(proto, a, uint16(port))
		},
	}
}
