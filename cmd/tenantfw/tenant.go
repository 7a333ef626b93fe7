package main

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/spf13/pflag"

	"github.com/tenantnet/tenantnet/firewall"
	"github.com/tenantnet/tenantnet/internal/cli"
	"github.com/tenantnet/tenantnet/policy"
)

func tenantCmd() *command {
	return &command{Name: "tenant", Summary: "declare tenants on this node (tenantnetd does this for its networks)",
		Sub: []*command{tenantAddCmd(), tenantDelCmd(), tenantListCmd(), tenantSameNetworkCmd()}}
}

func tenantAddCmd() *command {
	var id uint32
	var name, in, out string
	var prefixes []string
	return &command{
		Name: "add", Summary: "add or update a tenant, its prefixes and default policy",
		Usage:   "--tenant T [--prefix P ...] [--name NAME] [--inbound deny|allow] [--outbound allow|deny]",
		Example: "  tenantfw tenant add --tenant 7 --name acme --prefix 2001:db8:7::/64 --prefix 10.7.0.0/16",
		Flags: func(fs *pflag.FlagSet, _ *Env) {
			fs.Uint32Var(&id, "tenant", 0, "tenant id (required, >= 1)")
			fs.StringVar(&name, "name", "", "a name for people")
			fs.StringSliceVar(&prefixes, "prefix", nil, "the tenant's address prefixes (repeat); other tenants can neither reach nor be reached from them")
			fs.StringVar(&in, "inbound", "deny", "default for new inbound flows")
			fs.StringVar(&out, "outbound", "allow", "default for new outbound flows")
		},
		Run: func(env *Env, fs *pflag.FlagSet, args []string) error {
			if err := cli.NoArgs(args); err != nil {
				return err
			}
			if !fs.Changed("tenant") {
				return cli.Usagef("--tenant is required")
			}
			tn := firewall.Tenant{ID: id, Name: name}
			var err error
			if tn.Inbound, err = policy.ParseAction(in); err != nil {
				return fieldErr("inbound", in, "want deny or allow")
			}
			if tn.Outbound, err = policy.ParseAction(out); err != nil {
				return fieldErr("outbound", out, "want allow or deny")
			}
			for _, s := range prefixes {
				p, err := policy.ParsePrefix(s)
				if err != nil || !p.IsValid() {
					return fmt.Errorf("--prefix %s: %v", s, orMsg(err, "want a prefix"))
				}
				tn.Prefixes = append(tn.Prefixes, p)
			}
			fw, err := openFirewall(env, false)
			if err != nil {
				return err
			}
			defer fw.Close()
			if err := fw.AddTenant(tn); err != nil {
				return flagError(err)
			}
			fmt.Fprintf(env.Stdout, "tenant %d: prefixes %s, inbound %s, outbound %s\n", id, prefixList(tn.Prefixes), tn.Inbound, tn.Outbound)
			return nil
		},
	}
}

func orMsg(err error, msg string) string {
	if err != nil {
		return err.Error()
	}
	return msg
}

func prefixList(ps []netip.Prefix) string {
	if len(ps) == 0 {
		return "none"
	}
	var s []string
	for _, p := range ps {
		s = append(s, p.String())
	}
	return strings.Join(s, ",")
}

func tenantDelCmd() *command {
	var id uint32
	return &command{
		Name: "del", Summary: "remove a tenant with its rules (its ports must be detached)",
		Usage: "--tenant T", Example: "  tenantfw tenant del --tenant 7",
		Flags: func(fs *pflag.FlagSet, _ *Env) { fs.Uint32Var(&id, "tenant", 0, "tenant id (required)") },
		Run: func(env *Env, fs *pflag.FlagSet, args []string) error {
			if !fs.Changed("tenant") {
				return cli.Usagef("--tenant is required")
			}
			fw, err := openFirewall(env, false)
			if err != nil {
				return err
			}
			defer fw.Close()
			if err := fw.DeleteTenant(id); err != nil {
				return err
			}
			fmt.Fprintf(env.Stdout, "tenant %d removed\n", id)
			return nil
		},
	}
}

func tenantSameNetworkCmd() *command {
	var id uint32
	return &command{
		Name: "same-network", Summary: "turn tenantnetd's \"same network\" rules of a tenant off (kept off across restarts) or on",
		Usage: "--tenant T on|off", Example: "  tenantfw tenant same-network --tenant 7 off   # then only the tenant's own rules let its /64s in",
		Flags: func(fs *pflag.FlagSet, _ *Env) { fs.Uint32Var(&id, "tenant", 0, "tenant id (required)") },
		Run: func(env *Env, fs *pflag.FlagSet, args []string) error {
			if !fs.Changed("tenant") {
				return cli.Usagef("--tenant is required")
			}
			if len(args) != 1 || (args[0] != "on" && args[0] != "off") {
				return cli.Usagef("want on or off")
			}
			fw, err := openFirewall(env, false)
			if err != nil {
				return err
			}
			defer fw.Close()
			ch, err := fw.SetSameNetwork(id, args[0] == "on")
			if err != nil {
				return err
			}
			fmt.Fprintf(env.Stdout, "tenant %d: same network rules %s (%s)\n", id, args[0], ch)
			return nil
		},
	}
}

func tenantListCmd() *command {
	return &command{
		Name: "list", Summary: "list tenants", Usage: "[-o json]", Example: "  tenantfw tenant list -o json",
		Run: func(env *Env, fs *pflag.FlagSet, args []string) error {
			fw, err := openFirewall(env, true)
			if err != nil {
				return err
			}
			defer fw.Close()
			counts := map[uint32]int{}
			ts, err := fw.Tenants()
			if err == nil {
				for _, t := range ts {
					rs, rerr := fw.Rules(t.ID)
					if rerr != nil {
						err = rerr
						break
					}
					counts[t.ID] = len(rs)
				}
			}
			if err != nil {
				return err
			}
			type view struct {
				Tenant   uint32   `json:"tenant"`
				Name     string   `json:"name"`
				Prefixes []string `json:"prefixes"`
				Inbound  string   `json:"inbound"`
				Outbound string   `json:"outbound"`
				Rules    int      `json:"rules"`
				// SameNetwork: tenantnetd's "same network" rules are on
				SameNetwork bool `json:"same_network"`
			}
			vs := []view{}
			for _, t := range ts {
				v := view{Tenant: t.ID, Name: t.Name, Inbound: t.Inbound.String(), Outbound: t.Outbound.String(), Rules: counts[t.ID], Prefixes: []string{}, SameNetwork: !t.NoSameNetwork}
				for _, p := range t.Prefixes {
					v.Prefixes = append(v.Prefixes, p.String())
				}
				vs = append(vs, v)
			}
			if env.Output == "json" {
				return cli.JSON(env.Stdout, vs)
			}
			tw := cli.Table(env.Stdout)
			fmt.Fprintln(tw, "TENANT\tNAME\tPREFIXES\tINBOUND\tOUTBOUND\tRULES")
			for _, v := range vs {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\n", v.Tenant, v.Name, strings.Join(v.Prefixes, ","), v.Inbound, v.Outbound, v.Rules)
			}
			return tw.Flush()
		},
	}
}
