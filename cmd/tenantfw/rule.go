package main

import (
	"fmt"
	"net/netip"
	"strconv"

	"github.com/spf13/pflag"

	"github.com/tenantnet/tenantnet/firewall"
	"github.com/tenantnet/tenantnet/internal/cli"
	"github.com/tenantnet/tenantnet/policy"
)

// RuleView is the JSON shape of a rule (docs/tenantfw.md).
type RuleView struct {
	ID      uint32 `json:"id"`
	Tenant  uint32 `json:"tenant"`
	Dir     string `json:"dir"`
	Proto   string `json:"proto"`
	Port    string `json:"port"`
	Dst     string `json:"dst"`
	Src     string `json:"src"`
	Action  string `json:"action"`
	Comment string `json:"comment"`
	// Owner is set on rules tenantnetd keeps: the tenant cannot change them.
	Owner string `json:"owner,omitempty"`
}

func viewRule(r policy.Rule) RuleView {
	return RuleView{ID: r.ID, Tenant: r.Tenant, Dir: r.Dir.String(), Proto: policy.ProtoName(r.Proto), Port: r.Ports(),
		Dst: prefixText(r.Dst), Src: prefixText(r.Src), Action: r.Action.String(), Comment: r.Comment, Owner: r.Owner}
}

func prefixText(p netip.Prefix) string {
	if !p.IsValid() {
		return "any"
	}
	if p.Bits() == p.Addr().BitLen() {
		return p.Addr().String()
	}
	return p.String()
}

// ruleFlags are the selector and action flags shared by add and del.
type ruleFlags struct {
	tenant                          uint32
	dir, proto, port, dst, src, act string
	comment                         string
}

func (f *ruleFlags) register(fs *pflag.FlagSet, withAction bool) {
	fs.Uint32Var(&f.tenant, "tenant", 0, "tenant id (required)")
	fs.StringVar(&f.dir, "dir", "in", "direction: in (to the workload) or out (from it)")
	fs.StringVar(&f.proto, "proto", "any", "protocol: tcp, udp, icmp, icmpv6 or any")
	fs.StringVar(&f.port, "port", "any", "destination port or range (tcp/udp): 80, 8000-8080 or any")
	fs.StringVar(&f.dst, "dst", "any", "destination address or prefix (inbound: the workload side)")
	fs.StringVar(&f.src, "src", "any", "source address or prefix")
	if withAction {
		fs.StringVar(&f.act, "action", "", "allow or deny (required)")
		fs.StringVar(&f.comment, "comment", "", "free text kept with the rule")
	}
}

// rule builds the rule; errors name the flag and its value.
func (f *ruleFlags) rule(fs *pflag.FlagSet, withAction bool) (policy.Rule, error) {
	var r policy.Rule
	if !fs.Changed("tenant") {
		return r, cli.Usagef("--tenant is required")
	}
	if withAction && !fs.Changed("action") {
		return r, cli.Usagef("--action is required (allow or deny)")
	}
	r.Tenant = f.tenant
	var err error
	if r.Dir, err = policy.ParseDirection(f.dir); err != nil {
		return r, fieldErr("dir", f.dir, "want in or out")
	}
	if r.Proto, err = policy.ParseProto(f.proto); err != nil {
		return r, fieldErr("proto", f.proto, "want tcp, udp, icmp, icmpv6 or any")
	}
	if r.PortLo, r.PortHi, err = policy.ParsePorts(f.port); err != nil {
		return r, fmt.Errorf("--port %s: %v", f.port, err)
	}
	if r.Dst, err = policy.ParsePrefix(f.dst); err != nil {
		return r, fmt.Errorf("--dst %s: %v", f.dst, err)
	}
	if r.Src, err = policy.ParsePrefix(f.src); err != nil {
		return r, fmt.Errorf("--src %s: %v", f.src, err)
	}
	if withAction {
		if r.Action, err = policy.ParseAction(f.act); err != nil {
			return r, fieldErr("action", f.act, "want allow or deny")
		}
		r.Comment = f.comment
	} else {
		r.Action = policy.ActionAllow // for validation of the selector
	}
	if err := r.Validate(); err != nil {
		return r, flagError(err)
	}
	return r, nil
}

func fieldErr(flag, val, msg string) error { return fmt.Errorf("--%s %s: %s", flag, val, msg) }

// flagError renders a FieldError as "--field value: msg".
func flagError(err error) error {
	if fe, ok := err.(*policy.FieldError); ok {
		return fieldErr(fe.Field, fe.Value, fe.Msg)
	}
	return err
}

func ruleCmd() *command {
	return &command{Name: "rule", Summary: "add, delete, list and flush firewall rules", Sub: []*command{
		ruleAddCmd(), ruleDelCmd(), ruleListCmd(), ruleFlushCmd(),
	}}
}

func ruleAddCmd() *command {
	f := &ruleFlags{}
	return &command{
		Name: "add", Summary: "add a rule (acts at once)",
		Usage: "--tenant T --action allow|deny [--dir in|out] [--proto P] [--port N|A-B] [--dst PREFIX] [--src PREFIX] [--comment TEXT]",
		Example: `  # open tcp/8080 on one workload of tenant 7
  tenantfw rule add --tenant 7 --dir in --proto tcp --port 8080 --dst 2001:db8:7::10 --action allow
  # let only the office reach ssh on every workload of the tenant
  tenantfw rule add --tenant 7 --proto tcp --port 22 --src 203.0.113.0/24 --action allow
  # block outbound SMTP
  tenantfw rule add --tenant 7 --dir out --proto tcp --port 25 --action deny --comment "no spam"`,
		Flags: func(fs *pflag.FlagSet, _ *Env) { f.register(fs, true) },
		Run: func(env *Env, fs *pflag.FlagSet, args []string) error {
			if err := cli.NoArgs(args); err != nil {
				return err
			}
			r, err := f.rule(fs, true)
			if err != nil {
				return err
			}
			fw, err := openRuleFirewall(env)
			if err != nil {
				return err
			}
			defer fw.Close()
			added, ch, err := fw.AddRule(r)
			if err != nil {
				if ce, ok := err.(*firewall.RuleConflictError); ok {
					return fmt.Errorf("rule %s: %v", r, ce)
				}
				return err
			}
			if env.Output == "json" {
				return cli.JSON(env.Stdout, viewRule(added))
			}
			fmt.Fprintf(env.Stdout, "added rule %d: %s (%s)\n", added.ID, added, ch)
			return nil
		},
	}
}

func ruleDelCmd() *command {
	f := &ruleFlags{}
	var id uint32
	return &command{
		Name: "del", Summary: "delete a rule by id, or by its selector",
		Usage: "--id N | --tenant T [--dir] [--proto] [--port] [--dst] [--src]",
		Example: `  tenantfw rule del --id 12
  tenantfw rule del --tenant 7 --dir out --proto tcp --port 25`,
		Flags: func(fs *pflag.FlagSet, _ *Env) {
			fs.Uint32Var(&id, "id", 0, "rule id (see rule list)")
			f.register(fs, false)
		},
		Run: func(env *Env, fs *pflag.FlagSet, args []string) error {
			if err := cli.NoArgs(args); err != nil {
				return err
			}
			if fs.Changed("id") == fs.Changed("tenant") {
				return cli.Usagef("give either --id or the rule's selector (--tenant ...)")
			}
			fw, err := openRuleFirewall(env)
			if err != nil {
				return err
			}
			defer fw.Close()
			if !fs.Changed("id") {
				sel, err := f.rule(fs, false)
				if err != nil {
					return err
				}
				r, err := fw.FindRule(sel.Match())
				if err != nil {
					return fmt.Errorf("tenant %d: no rule %s port %s dst %s src %s", sel.Tenant, policy.ProtoName(sel.Proto), sel.Ports(), prefixText(sel.Dst), prefixText(sel.Src))
				}
				id = r.ID
			}
			r, ch, err := fw.DeleteRule(id)
			if err != nil {
				return fmt.Errorf("--id %d: %w", id, err)
			}
			if env.Output == "json" {
				return cli.JSON(env.Stdout, viewRule(r))
			}
			fmt.Fprintf(env.Stdout, "deleted rule %d: %s (%s)\n", r.ID, r, ch)
			return nil
		},
	}
}

func ruleListCmd() *command {
	var tenant uint32
	return &command{
		Name: "list", Summary: "list rules (from the saved state the maps are built from)",
		Usage:   "[--tenant T] [-o json]",
		Example: "  tenantfw rule list --tenant 7\n  tenantfw rule list -o json | jq '.[] | select(.action==\"deny\")'",
		Flags:   func(fs *pflag.FlagSet, _ *Env) { fs.Uint32Var(&tenant, "tenant", 0, "only this tenant") },
		Run: func(env *Env, fs *pflag.FlagSet, args []string) error {
			if err := cli.NoArgs(args); err != nil {
				return err
			}
			fw, err := openFirewall(env, true)
			if err != nil {
				return err
			}
			defer fw.Close()
			if tenant != 0 {
				if _, err := fw.Tenant(tenant); err != nil {
					return fmt.Errorf("--tenant %d: unknown tenant", tenant)
				}
			}
			rules, err := fw.Rules(tenant)
			if err != nil {
				return err
			}
			views := make([]RuleView, 0, len(rules))
			for _, r := range rules {
				views = append(views, viewRule(r))
			}
			if env.Output == "json" {
				return cli.JSON(env.Stdout, views)
			}
			tw := cli.Table(env.Stdout)
			fmt.Fprintln(tw, "ID\tTENANT\tDIR\tPROTO\tPORT\tDST\tSRC\tACTION\tOWNER\tCOMMENT")
			for _, v := range views {
				owner := v.Owner
				if owner == "" {
					owner = "-"
				}
				fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", v.ID, v.Tenant, v.Dir, v.Proto, v.Port, v.Dst, v.Src, v.Action, owner, v.Comment)
			}
			return tw.Flush()
		},
	}
}

func ruleFlushCmd() *command {
	var tenant uint32
	return &command{
		Name: "flush", Summary: "delete every rule of a tenant",
		Usage:   "--tenant T",
		Example: "  tenantfw rule flush --tenant 7",
		Flags:   func(fs *pflag.FlagSet, _ *Env) { fs.Uint32Var(&tenant, "tenant", 0, "tenant id (required)") },
		Run: func(env *Env, fs *pflag.FlagSet, args []string) error {
			if err := cli.NoArgs(args); err != nil {
				return err
			}
			if !fs.Changed("tenant") {
				return cli.Usagef("--tenant is required")
			}
			fw, err := openFirewall(env, false)
			if err != nil {
				return err
			}
			defer fw.Close()
			res, err := fw.Flush(tenant)
			if err != nil {
				return err
			}
			fmt.Fprintf(env.Stdout, "tenant %d: %s rules deleted (%s)\n", tenant, strconv.Itoa(res.Gone), res.Maps)
			return nil
		},
	}
}
