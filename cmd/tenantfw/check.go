package main

import (
	"fmt"
	"net/netip"

	"github.com/spf13/pflag"

	"github.com/tenantnet/tenantnet/bpfmaps"
	"github.com/tenantnet/tenantnet/internal/cli"
	"github.com/tenantnet/tenantnet/policy"
)

// CheckView is the JSON shape of `tenantfw check`.
type CheckView struct {
	Verdict string    `json:"verdict"`
	Reason  string    `json:"reason"`
	Stage   string    `json:"stage"`
	Rule    *RuleView `json:"rule,omitempty"`
}

func checkCmd() *command {
	var tenant uint32
	var src, dst, proto, dir string
	var dport uint16
	var icmpType uint8
	return &command{
		Name: "check", Summary: "the verdict a new flow would get, and the rule that decides it",
		Usage: "--tenant T --src A --dst B [--proto P] [--dport N] [--dir in|out] [--icmp-type N]",
		Example: `  tenantfw check --tenant 7 --src 198.51.100.7 --dst 10.7.0.10 --proto tcp --dport 80
  tenantfw check --tenant 7 --dir out --src 2001:db8:7::10 --dst 2001:db8:ffff::1 --proto tcp --dport 25`,
		Flags: func(fs *pflag.FlagSet, _ *Env) {
			fs.Uint32Var(&tenant, "tenant", 0, "tenant id (required)")
			fs.StringVar(&src, "src", "", "source address (required)")
			fs.StringVar(&dst, "dst", "", "destination address (required)")
			fs.StringVar(&proto, "proto", "tcp", "tcp, udp, icmp, icmpv6, or a protocol number")
			fs.Uint16Var(&dport, "dport", 0, "destination port (tcp/udp)")
			fs.StringVar(&dir, "dir", "in", "in (to the workload) or out (from it)")
			fs.Uint8Var(&icmpType, "icmp-type", 8, "ICMP type (icmp/icmpv6; echo request by default)")
		},
		Run: func(env *Env, fs *pflag.FlagSet, args []string) error {
			if err := cli.NoArgs(args); err != nil {
				return err
			}
			if !fs.Changed("tenant") || src == "" || dst == "" {
				return cli.Usagef("--tenant, --src and --dst are required")
			}
			q := bpfmaps.Query{Tenant: tenant, Dport: dport, ICMPType: icmpType}
			var err error
			if q.Dir, err = policy.ParseDirection(dir); err != nil {
				return fieldErr("dir", dir, "want in or out")
			}
			if q.Proto, err = policy.ParseProto(proto); err != nil {
				return fieldErr("proto", proto, "want tcp, udp, icmp or icmpv6")
			}
			if q.Src, err = netip.ParseAddr(src); err != nil {
				return fieldErr("src", src, "not an address")
			}
			if q.Dst, err = netip.ParseAddr(dst); err != nil {
				return fieldErr("dst", dst, "not an address")
			}
			q.Src, q.Dst = q.Src.Unmap(), q.Dst.Unmap()
			if q.Src.Is4() != q.Dst.Is4() {
				return fieldErr("dst", dst, "address family differs from --src")
			}
			if q.Proto == policy.ProtoICMP && q.Dst.Is6() {
				q.Proto = policy.ProtoICMPv6
			}
			if (q.Proto == policy.ProtoTCP || q.Proto == policy.ProtoUDP) && dport == 0 {
				return cli.Usagef("--dport is required for tcp and udp")
			}
			fw, err := openFirewall(env, false)
			if err != nil {
				return err
			}
			defer fw.Close()
			if _, err := fw.Tenant(tenant); err != nil {
				return fmt.Errorf("--tenant %d: unknown tenant", tenant)
			}
			ex, err := fw.Maps.Check(q)
			if err != nil {
				return err
			}
			v := CheckView{Verdict: "pass", Reason: ex.Reason.String(), Stage: ex.Stage}
			if ex.Reason.IsDrop() {
				v.Verdict = "drop"
			}
			if ex.RuleID != 0 {
				if r, err := fw.Rule(ex.RuleID); err == nil {
					rv := viewRule(r)
					v.Rule = &rv
				}
			}
			if env.Output == "json" {
				return cli.JSON(env.Stdout, v)
			}
			fmt.Fprintf(env.Stdout, "%s (%s)", v.Verdict, v.Reason)
			switch {
			case v.Rule != nil:
				fmt.Fprintf(env.Stdout, ": rule %d: %s %s %s port %s dst %s src %s", v.Rule.ID, v.Rule.Action, v.Rule.Dir, v.Rule.Proto, v.Rule.Port, v.Rule.Dst, v.Rule.Src)
				if v.Rule.Comment != "" {
					fmt.Fprintf(env.Stdout, " (%s)", v.Rule.Comment)
				}
			case ex.Stage == "default":
				fmt.Fprintf(env.Stdout, ": no rule matches; tenant %d's default %s policy", tenant, dir+"bound")
			case ex.Stage == "isolation":
				fmt.Fprintf(env.Stdout, ": the peer belongs to another tenant")
			case ex.Stage == "control":
				fmt.Fprintf(env.Stdout, ": ICMP control traffic is never filtered by rules")
			}
			fmt.Fprintln(env.Stdout)
			return nil
		},
	}
}
