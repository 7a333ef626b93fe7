package main

import (
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/pflag"

	"github.com/tenantnet/tenantnet/api"
	"github.com/tenantnet/tenantnet/internal/cli"
	"github.com/tenantnet/tenantnet/ipam"
)

func workloadCmd() *command {
	return &command{Name: "workload", Summary: "attach network namespaces and VMs (taps) to tenant networks", Sub: []*command{
		workloadAddCmd(), workloadDelCmd(), workloadListCmd(),
	}}
}

func workloadAddCmd() *command {
	var id, network, nsPath, ifname, tap, mac, owner string
	var multiQueue bool
	return &command{
		Name: "add", Summary: "give a namespace or a VM (a tap) an address on a network, behind the firewall",
		Usage: "--id ID --network NET (--netns PATH [--ifname NAME] | --tap NAME [--mac MAC] [--owner UID[:GID]] [--multi-queue])",
		Example: `  tenantnetd netns create web-1
  tenantnetd workload add --id web-1 --network acme --netns /run/netns/web-1
  tenantnetd workload add --id db-1 --network acme --netns /proc/4242/ns/net -o json
  tenantnetd workload add --id vm1 --network acme --tap vm1tap --owner 1000:1000
  qemu-system-x86_64 ... -netdev tap,id=n0,ifname=vm1tap,script=no,downscript=no \
      -device virtio-net-pci,netdev=n0,mac=$(tenantnetd workload list -o json | jq -r '.[]|select(.id=="vm1").tap.mac')`,
		Flags: func(fs *pflag.FlagSet, env *Env) {
			env.clientFlags(fs)
			fs.StringVar(&id, "id", "", "workload id (required)")
			fs.StringVar(&network, "network", "", "network id (required)")
			fs.StringVar(&nsPath, "netns", "", "workload network namespace (/run/netns/NAME or /proc/PID/ns/net) (this or --tap)")
			fs.StringVar(&ifname, "ifname", "", "with --netns: name of the workload's interface in its namespace (default eth0)")
			fs.StringVar(&tap, "tap", "", "a VM: the persistent tap to make for its VMM to open (this or --netns)")
			fs.StringVar(&mac, "mac", "", "with --tap: the guest's MAC (default: chosen by the node); its address is the MAC's EUI-64 SLAAC address")
			fs.StringVar(&owner, "owner", "", "with --tap: UID[:GID] who may open the tap besides root")
			fs.BoolVar(&multiQueue, "multi-queue", false, "with --tap: a multi-queue tap (the VMM must open it with IFF_MULTI_QUEUE)")
		},
		Run: func(env *Env, fs *pflag.FlagSet, args []string) error {
			if err := checkArgs(fs, args, "id", "network"); err != nil {
				return err
			}
			if err := checkIDs(fs, "id", "network"); err != nil {
				return err
			}
			req := api.WorkloadRequest{ID: id, Network: network, Netns: nsPath, Ifname: ifname}
			switch {
			case (nsPath == "") == (tap == ""):
				return cli.Usagef("give one of --netns and --tap")
			case tap != "" && ifname != "":
				return cli.Usagef("--ifname is for --netns (a tap is named by --tap)")
			case tap == "" && (mac != "" || owner != "" || multiQueue):
				return cli.Usagef("--mac, --owner and --multi-queue are for --tap")
			case tap != "":
				t := ipam.Tap{Name: tap, MAC: mac, MultiQueue: multiQueue}
				if owner != "" {
					var err error
					if t.UID, t.GID, err = parseOwner(owner); err != nil {
						return err
					}
				}
				req.Tap = &t
			}
			w, err := env.client().AddWorkload(req)
			if err != nil {
				return err
			}
			return env.print(w, func(tw *tabwriter.Writer) {
				if w.Tap != nil {
					fmt.Fprintf(tw, "workload %s: tap %s, guest MAC %s, address %s (SLAAC from the node's RA) on network %s, gateway %s\n",
						w.ID, w.Tap.Name, w.Tap.MAC, w.Addr, w.Network, w.Gateway)
					return
				}
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
				fmt.Fprintln(tw, "WORKLOAD\tNETWORK\tADDRESS\tPORT\tNETNS/MAC")
				for _, w := range ws {
					where := w.Netns
					if w.Tap != nil {
						where = "tap, guest MAC " + w.Tap.MAC
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", w.ID, w.Network, w.Addr, w.Port, where)
				}
			})
		},
	}
}

// parseOwner reads UID[:GID].
func parseOwner(s string) (uid, gid *int, err error) {
	us, gs, hasG := strings.Cut(s, ":")
	u, err := strconv.Atoi(us)
	if err != nil || u < 0 {
		return nil, nil, cli.Usagef("--owner %q: want UID[:GID], numbers", s)
	}
	uid = &u
	if hasG {
		g, err := strconv.Atoi(gs)
		if err != nil || g < 0 {
			return nil, nil, cli.Usagef("--owner %q: want UID[:GID], numbers", s)
		}
		gid = &g
	}
	return uid, gid, nil
}
