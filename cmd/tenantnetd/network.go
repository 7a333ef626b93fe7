package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/tenantnet/tenantnet/api"
	"github.com/tenantnet/tenantnet/config"
	"github.com/tenantnet/tenantnet/internal/cli"
	"github.com/tenantnet/tenantnet/registry"
	"github.com/tenantnet/tenantnet/trust"
)

func networkCmd() *command {
	return &command{Name: "network", Summary: "tenant networks on this node; declared networks in the grid registry", Sub: []*command{
		networkAddCmd(), networkDelCmd(), networkRotateKeyCmd(), networkListCmd(),
		networkDeclareCmd(), networkUndeclareCmd(), networkDeclaredCmd(),
	}}
}

func networkAddCmd() *command {
	var id string
	var mtu int
	return &command{
		Name: "add", Summary: "create a tenant network on this node: a /64, a bridge, a tenant number",
		Usage:   "--id ID [--mtu N]",
		Example: "  tenantnetd network add --id acme\n  tenantnetd network add --id acme --mtu 1380 -o json",
		Flags: func(fs *pflag.FlagSet, env *Env) {
			env.clientFlags(fs)
			fs.StringVar(&id, "id", "", "network id (required)")
			fs.IntVar(&mtu, "mtu", 0, "network MTU (default: the node's mtu)")
		},
		Run: func(env *Env, fs *pflag.FlagSet, args []string) error {
			if err := checkArgs(fs, args, "id"); err != nil {
				return err
			}
			if err := checkIDs(fs, "id"); err != nil {
				return err
			}
			if mtu != 0 && (mtu < 1280 || mtu > 9000) {
				return cli.Usagef("--mtu %d: must be 1280..9000 (0: the node's)", mtu)
			}
			n, err := env.client().AddNetwork(api.NetworkRequest{ID: id, MTU: mtu})
			if err != nil {
				return err
			}
			return env.print(n, func(tw *tabwriter.Writer) {
				fmt.Fprintf(tw, "network %s: prefix %s, gateway %s, bridge %s, tenant %d, wireguard port %d, mtu %d\n",
					n.ID, n.Prefix, n.Gateway, n.Bridge, n.Tenant, n.WGPort, n.MTU)
			})
		},
	}
}

func networkDelCmd() *command {
	return idCmd("del", "delete a tenant network of this node (it must have no workloads)", "network",
		"  tenantnetd network del --id acme", (*Env).socketFlags,
		func(env *Env, id string) error { return env.client().DeleteNetwork(id) })
}

func networkRotateKeyCmd() *command {
	var id string
	var overlap time.Duration
	return &command{
		Name: "rotate-key", Summary: "new WireGuard key, announced before it takes over",
		Usage:   "--id ID [--overlap 30s]",
		Example: "  tenantnetd network rotate-key --id acme --overlap 30s",
		Flags: func(fs *pflag.FlagSet, env *Env) {
			env.clientFlags(fs)
			fs.StringVar(&id, "id", "", "network id (required)")
			fs.DurationVar(&overlap, "overlap", 0, "announce the next key this long before it takes over (default: the registry lease)")
		},
		Run: func(env *Env, fs *pflag.FlagSet, args []string) error {
			if err := checkArgs(fs, args, "id"); err != nil {
				return err
			}
			req := api.RotateKeyRequest{}
			if overlap != 0 {
				req.Overlap = overlap.String()
			}
			r, err := env.client().RotateKey(id, req)
			if err != nil {
				return err
			}
			return env.print(r, func(tw *tabwriter.Writer) {
				fmt.Fprintf(tw, "network %s: next public key %s takes over at %s\n", r.Network, r.NextPublicKey, r.At.Format(time.RFC3339))
			})
		},
	}
}

func networkListCmd() *command {
	return &command{
		Name: "list", Summary: "list the tenant networks of this node",
		Usage:   "[-o json]",
		Example: "  tenantnetd network list\n  tenantnetd network list -o json | jq -r '.[].prefix'",
		Flags:   func(fs *pflag.FlagSet, env *Env) { env.clientFlags(fs) },
		Run: func(env *Env, fs *pflag.FlagSet, args []string) error {
			if err := cli.NoArgs(args); err != nil {
				return err
			}
			ns, err := env.client().Networks()
			if err != nil {
				return err
			}
			return env.print(ns, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "NETWORK\tTENANT\tPREFIX\tBRIDGE\tWG PORT\tMTU\tOUTSIDE\tDELEGATED\tIPV4 CLIENTS FROM")
				for _, n := range ns {
					fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", n.ID, n.Tenant, n.Prefix, n.Bridge, n.WGPort, n.MTU, n.Outside, delegated(n), ipv4Clients(n))
				}
			})
		},
	}
}

// ipv4Clients names the network's IPv4 proxies' /96s, as a tenant's
// inbound rules need them ("2001:db8:101:7fff:0:2a::/96 (via node1)": a
// rule from that /96 lets in every IPv4 client of node1's proxy, from
// <96>::a.b.c.d/128 the client a.b.c.d).
func ipv4Clients(n api.NetworkInfo) string {
	var out []string
	for _, c := range n.IPv4Clients {
		out = append(out, c.Prefix.String()+" (via "+c.Node+")")
	}
	if len(out) == 0 {
		return "-"
	}
	return strings.Join(out, ", ")
}

// delegated says what a network's /64 comes from (a member's: "from
// <exit>") or, on its exit, what it delegated ("node3 <p>, node4 <p> (left
// <time>)").
func delegated(n api.NetworkInfo) string {
	if n.DelegatedBy != "" {
		return "from " + n.DelegatedBy
	}
	var ds []string
	for _, d := range n.Delegations {
		s := d.Member + " " + d.Prefix.String()
		if !d.Live() {
			s += " (left " + d.Left.Format(time.RFC3339) + ")"
		}
		ds = append(ds, s)
	}
	if len(ds) == 0 {
		return "-"
	}
	return strings.Join(ds, ", ")
}

// The registry commands read --config and talk to the grid registry
// itself: they need no running service.

func networkDeclareCmd() *command {
	var id, exit, key string
	var mtu int
	var members, users, ipv4 []string
	return &command{
		Name: "declare", Summary: "declare a network in the grid registry: its members create it (needs no service)",
		Usage: "--key FILE --id ID --members N1,N2 [--exit N1] [--mtu N] [--user ID:NODE:PUBKEY]... [--ipv4 NODE[:COUNT]]... [--config FILE]",
		Example: `  tenantnetd network declare --key ~/grid.key --id acme --members node1,node2 --exit node1
  tenantnetd network declare --key ~/grid.key --id acme --members node1,node2 --user alice:node1:$(cat alice.pub)
  tenantnetd network declare --key ~/grid.key --id acme --members node1,node2 --exit node1 --ipv4 node1:2`,
		Flags: func(fs *pflag.FlagSet, env *Env) {
			env.configFlag(fs)
			fs.StringVar(&key, "key", "", "the grid operator's private key (signs the declaration)")
			fs.StringVar(&id, "id", "", "network id (required)")
			fs.StringSliceVar(&members, "members", nil, "member node ids")
			fs.StringVar(&exit, "exit", "", "the member node that is the network's exit (dual-stack; members without native IPv6 reach the outside through it)")
			fs.IntVar(&mtu, "mtu", 0, "network MTU (default: each node's mtu)")
			fs.StringArrayVar(&users, "user", nil, "a user-access peer ID:NODE:PUBKEY (repeatable)")
			fs.StringArrayVar(&ipv4, "ipv4", nil, "public IPv4 the network buys from a member's ipv4_pool: NODE or NODE:COUNT (repeatable; the node allocates and publishes them)")
		},
		Run: func(env *Env, fs *pflag.FlagSet, args []string) error {
			if err := checkArgs(fs, args, "id"); err != nil {
				return err
			}
			spec := registry.NetworkSpec{ID: id, Members: members, Exit: exit, MTU: mtu}
			for _, u := range users {
				parts := strings.SplitN(u, ":", 3)
				if len(parts) != 3 {
					return cli.Usagef("--user %q: want ID:NODE:PUBKEY", u)
				}
				spec.Users = append(spec.Users, registry.UserSpec{ID: parts[0], Node: parts[1], PublicKey: parts[2]})
			}
			for _, c := range ipv4 {
				node, count, found := strings.Cut(c, ":")
				n := 1
				if found {
					var err error
					if n, err = strconv.Atoi(count); err != nil || n < 1 || n > registry.MaxIPv4PerClaim {
						return cli.Usagef("--ipv4 %q: want NODE or NODE:COUNT, COUNT 1..%d", c, registry.MaxIPv4PerClaim)
					}
				}
				spec.IPv4 = append(spec.IPv4, registry.IPv4Claim{Node: node, Count: n})
			}
			if err := spec.Validate(); err != nil {
				return cli.Usagef("%v", err)
			}
			reg, cfg, done, err := openRegistry(env.Config)
			if err != nil {
				return err
			}
			defer done()
			k, err := declarationKey(key, cfg)
			if err != nil {
				return err
			}
			// An exit forwards the members' IPv6 out of its own uplink:
			// refuse one the registry knows has none (a node not yet
			// announced is checked by itself: it logs and does not forward).
			if spec.Exit != "" {
				if encs, err := reg.Enrollments(); err == nil {
					for _, e := range encs {
						var en trust.Enrollment
						if e.Name != spec.Exit || trust.OpenJSON(e.Data, trust.KindEnrollment, nil, &en) != nil {
							continue
						}
						if en.Class != string(config.DualStack) {
							return cli.Usagef("--exit %s: the node is %s; an exit needs native IPv6 (dual-stack)", spec.Exit, en.Class)
						}
						if !en.Exit && !cfg.InsecureRegistry {
							return cli.Usagef("--exit %s: the node is not enrolled as an exit (grid enroll --exit)", spec.Exit)
						}
					}
				}
			}
			b, err := registry.SignSpec(spec, k)
			if err != nil {
				return err
			}
			warnRenumbering(reg, cfg, spec, os.Stderr)
			return reg.Declare(spec.ID, b)
		},
	}
}

func networkUndeclareCmd() *command {
	var key string
	return idCmd("undeclare", "remove a network from the grid registry: its members remove it (needs no service)", "network",
		"  tenantnetd network undeclare --key ~/grid.key --id acme", func(env *Env, fs *pflag.FlagSet) {
			env.configFlag(fs)
			fs.StringVar(&key, "key", "", "the grid operator's private key")
		},
		func(env *Env, id string) error {
			reg, cfg, done, err := openRegistry(env.Config)
			if err != nil {
				return err
			}
			defer done()
			if _, err := declarationKey(key, cfg); err != nil {
				return err
			}
			return reg.Undeclare(id)
		})
}

func networkDeclaredCmd() *command {
	return &command{
		Name: "declared", Summary: "list the networks declared in the grid registry (needs no service)",
		Usage:   "[--config FILE] [-o json]",
		Example: "  tenantnetd network declared",
		Flags: func(fs *pflag.FlagSet, env *Env) {
			env.configFlag(fs)
			cli.OutputFlag(fs, &env.Output)
		},
		Run: func(env *Env, fs *pflag.FlagSet, args []string) error {
			if err := cli.NoArgs(args); err != nil {
				return err
			}
			reg, cfg, done, err := openRegistry(env.Config)
			if err != nil {
				return err
			}
			defer done()
			entries, err := reg.Declared()
			if err != nil {
				return err
			}
			pub, err := cfg.GridKey()
			if err != nil {
				return err
			}
			specs := []registry.NetworkSpec{}
			for _, e := range entries {
				sp, err := registry.OpenSpec(e, pub)
				if err != nil {
					fmt.Fprintf(os.Stderr, "tenantnetd: not believed: %v\n", err)
					continue
				}
				specs = append(specs, sp)
			}
			return env.print(specs, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "NETWORK\tMEMBERS\tEXIT\tUSERS")
				for _, sp := range specs {
					var us []string
					for _, u := range sp.Users {
						us = append(us, u.ID+"@"+u.Node)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", sp.ID, strings.Join(sp.Members, ","), sp.Exit, strings.Join(us, ","))
				}
			})
		},
	}
}

// warnRenumbering says, before a declaration replaces another, which
// members without native IPv6 it renumbers: their /64 is their exit's
// delegation, so a new exit means a new /64 (and new addresses for their
// workloads).
func warnRenumbering(reg registry.Registry, cfg *config.Node, spec registry.NetworkSpec, w io.Writer) {
	entries, _ := reg.Declared()
	pub, _ := cfg.GridKey()
	var old registry.NetworkSpec
	found := false
	for _, e := range entries {
		if e.Name == spec.ID {
			if sp, err := registry.OpenSpec(e, pub); err == nil {
				old, found = sp, true
			}
		}
	}
	if !found || old.Exit == "" || old.Exit == spec.Exit {
		return
	}
	classes := map[string]string{}
	if encs, err := reg.Enrollments(); err == nil {
		for _, e := range encs {
			var en trust.Enrollment
			if trust.OpenJSON(e.Data, trust.KindEnrollment, pub, &en) == nil {
				classes[en.NodeID] = en.Class
			}
		}
	}
	var affected []string
	for _, m := range old.Members {
		if m == old.Exit || m == spec.Exit || classes[m] == string(config.DualStack) {
			continue
		}
		c := classes[m]
		if c == "" {
			c = "class unknown"
		}
		affected = append(affected, m+" ("+c+")")
	}
	to := spec.Exit
	if to == "" {
		to = "no exit"
	}
	if len(affected) == 0 {
		fmt.Fprintf(w, "tenantnetd: network %s: the exit changes from %s to %s; no member without native IPv6 is affected\n", spec.ID, old.Exit, to)
		return
	}
	fmt.Fprintf(w, "tenantnetd: WARNING: network %s: the exit changes from %s to %s: this RENUMBERS its members without native IPv6, %s: "+
		"their /64 in %s was delegated by %s and moves to a delegation of %s; every workload of theirs in %s gets a new address\n",
		spec.ID, old.Exit, to, strings.Join(affected, ", "), spec.ID, old.Exit, to, spec.ID)
}

// openRegistry opens the grid registry the node configuration names.
func openRegistry(cfgPath string) (registry.Registry, *config.Node, func(), error) {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return nil, nil, nil, err
	}
	// The file registry lies in state_dir by default: state_dir is made
	// 0700 here, not 0755 by the registry's MkdirAll, when declare or
	// enroll runs before the node's first start.
	if cfg.Registry.Type == "file" && strings.HasPrefix(cfg.Registry.Dir, cfg.StateDir+"/") {
		if _, err := cfg.PrepareStateDir(); err != nil {
			return nil, nil, nil, err
		}
	}
	reg, err := cfg.Registry.Open()
	if err != nil {
		return nil, nil, nil, err
	}
	return reg, cfg, func() {
		if c, ok := reg.(io.Closer); ok {
			c.Close()
		}
	}, nil
}
