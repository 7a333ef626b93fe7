package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/pflag"

	"github.com/tenantnet/tenantnet/api"
	"github.com/tenantnet/tenantnet/internal/cli"
)

func workloadCmd() *command {
	return &command{Name: "workload", Summary: "attach network namespaces to tenant networks", Sub: []*command{
		workloadAddCmd(), workloadDelCmd(), workloadListCmd(),
	}}
}

func workloadAddCmd() *command {
	var id, network, nsPath, ifname string
	return &command{
		Name: "add", Summary: "give a namespace an address on a network, behind the firewall",
		Usage: "--id ID --network NET --netns PATH [--ifname NAME]",
		Example: `  tenantnetd netns create web-1
  tenantnetd workload add --id web-1 --network acme --netns /run/netns/web-1
  tenantnetd workload add --id db-1 --network acme --netns /proc/4242/ns/net -o json`,
		Flags: func(fs *pflag.FlagSet, env *Env) {
			env.clientFlags(fs)
			fs.StringVar(&id, "id", "", "workload id (required)")
			fs.StringVar(&network, "network", "", "network id (required)")
			fs.StringVar(&nsPath, "netns", "", "workload network namespace (/run/netns/NAME or /proc/PID/ns/net) (required)")
			fs.StringVar(&ifname, "ifname", "", "name of the workload's interface in its namespace (default eth0)")
		},
		Run: func(env *Env, fs *pflag.FlagSet, args []string) error {
			if err := checkArgs(fs, args, "id", "network", "netns"); err != nil {
				return err
			}
			if err := checkIDs(fs, "id", "network"); err != nil {
				return err
			}
			w, err := env.client().AddWorkload(api.WorkloadRequest{ID: id, Network: network, Netns: nsPath, Ifname: ifname})
			if err != nil {
				return err
			}
			return env.print(w, func(tw *tabwriter.Writer) {
				fmt.Fprintf(tw, "workload %s: address %s on network %s, port %s, gateway %s\n", w.ID, w.Addr, w.Network, w.Port, w.Gateway)
			})
		},
	}
}

func workloadDelCmd() *command {
	return idCmd("del", "detach a workload: its port goes, the namespace stays", "workload",
		"  tenantnetd workload del --id web-1", (*Env).socketFlags,
		func(env *Env, id string) error { return env.client().DeleteWorkload(id) })
}

func workloadListCmd() *command {
	return &command{
		Name: "list", Summary: "list the workloads of this node",
		Usage:   "[-o json]",
		Example: "  tenantnetd workload list\n  tenantnetd workload list -o json | jq -r '.[].address'",
		Flags:   func(fs *pflag.FlagSet, env *Env) { env.clientFlags(fs) },
		Run: func(env *Env, fs *pflag.FlagSet, args []string) error {
			if err := cli.NoArgs(args); err != nil {
				return err
			}
			ws, err := env.client().Workloads()
			if err != nil {
				return err
			}
			return env.print(ws, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "WORKLOAD\tNETWORK\tADDRESS\tPORT\tNETNS")
				for _, w := range ws {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", w.ID, w.Network, w.Addr, w.Port, w.Netns)
				}
			})
		},
	}
}
