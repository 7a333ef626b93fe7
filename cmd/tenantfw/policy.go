package main

import (
	"fmt"

	"github.com/spf13/pflag"

	"github.com/tenantnet/tenantnet/internal/cli"
	"github.com/tenantnet/tenantnet/policy"
)

func policyCmd() *command {
	return &command{Name: "policy", Summary: "set or show a tenant's default policy for new flows", Sub: []*command{policySetCmd(), policyShowCmd()}}
}

func policySetCmd() *command {
	var tenant uint32
	var in, out string
	return &command{
		Name: "set", Summary: "set the default inbound and/or outbound action",
		Usage:   "--tenant T [--inbound deny|allow] [--outbound allow|deny]",
		Example: "  tenantfw policy set --tenant 7 --inbound deny --outbound deny   # egress allow-list",
		Flags: func(fs *pflag.FlagSet, _ *Env) {
			fs.Uint32Var(&tenant, "tenant", 0, "tenant id (required)")
			fs.StringVar(&in, "inbound", "", "default for new inbound flows: deny or allow")
			fs.StringVar(&out, "outbound", "", "default for new outbound flows: allow or deny")
		},
		Run: func(env *Env, fs *pflag.FlagSet, args []string) error {
			if err := cli.NoArgs(args); err != nil {
				return err
			}
			if !fs.Changed("tenant") {
				return cli.Usagef("--tenant is required")
			}
			if in == "" && out == "" {
				return cli.Usagef("give --inbound and/or --outbound")
			}
			var p policy.TenantPolicy
			var err error
			if in != "" {
				if p.Inbound, err = policy.ParseAction(in); err != nil {
					return fieldErr("inbound", in, "want deny or allow")
				}
			}
			if out != "" {
				if p.Outbound, err = policy.ParseAction(out); err != nil {
					return fieldErr("outbound", out, "want allow or deny")
				}
			}
			fw, err := openFirewall(env, false)
			if err != nil {
				return err
			}
			defer fw.Close()
			if err := fw.SetPolicy(tenant, p); err != nil {
				return err
			}
			pol, err := fw.Maps.Policy(tenant)
			if err != nil {
				return err
			}
			fmt.Fprintf(env.Stdout, "tenant %d: inbound %s, outbound %s\n", tenant, pol.Inbound, pol.Outbound)
			return nil
		},
	}
}

func policyShowCmd() *command {
	var tenant uint32
	return &command{
		Name: "show", Summary: "show default policies",
		Usage: "[--tenant T] [-o json]", Example: "  tenantfw policy show --tenant 7",
		Flags: func(fs *pflag.FlagSet, _ *Env) { fs.Uint32Var(&tenant, "tenant", 0, "only this tenant") },
		Run: func(env *Env, fs *pflag.FlagSet, args []string) error {
			fw, err := openFirewall(env, true)
			if err != nil {
				return err
			}
			defer fw.Close()
			ts, err := fw.Tenants()
			if err != nil {
				return err
			}
			type view struct {
				Tenant   uint32 `json:"tenant"`
				Inbound  string `json:"inbound"`
				Outbound string `json:"outbound"`
			}
			var vs []view
			for _, t := range ts {
				if tenant == 0 || t.ID == tenant {
					vs = append(vs, view{t.ID, t.Inbound.String(), t.Outbound.String()})
				}
			}
			if tenant != 0 && len(vs) == 0 {
				return fmt.Errorf("--tenant %d: unknown tenant", tenant)
			}
			if env.Output == "json" {
				return cli.JSON(env.Stdout, vs)
			}
			tw := cli.Table(env.Stdout)
			fmt.Fprintln(tw, "TENANT\tINBOUND\tOUTBOUND")
			for _, v := range vs {
				fmt.Fprintf(tw, "%d\t%s\t%s\n", v.Tenant, v.Inbound, v.Outbound)
			}
			return tw.Flush()
		},
	}
}
