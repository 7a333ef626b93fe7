package main

import (
	"fmt"
	"io"

	"github.com/spf13/pflag"
	"github.com/vishvananda/netns"

	"github.com/tenantnet/tenantnet/internal/cli"
	"github.com/tenantnet/tenantnet/internal/netnsutil"
	"github.com/tenantnet/tenantnet/ipam"
)

func netnsCmd() *command {
	return &command{Name: "netns", Summary: "pause-style network namespaces under /run/netns, for workloads", Sub: []*command{
		{
			Name: "create", Summary: "create a named namespace; prints its path for workload add --netns",
			Usage:   "NAME",
			Example: "  tenantnetd netns create web-1   # /run/netns/web-1",
			Run: func(env *Env, fs *pflag.FlagSet, args []string) error {
				if len(args) != 1 {
					return cli.Usagef("netns create NAME")
				}
				return createNetns(args[0], env.Stdout)
			},
		},
		{
			Name: "del", Summary: "delete a named namespace",
			Usage:   "NAME",
			Example: "  tenantnetd netns del web-1",
			Run: func(env *Env, fs *pflag.FlagSet, args []string) error {
				if len(args) != 1 {
					return cli.Usagef("netns del NAME")
				}
				return netns.DeleteNamed(args[0])
			},
		},
	}}
}

// createNetns makes a named namespace, like a pause container's.
func createNetns(name string, stdout io.Writer) error {
	if err := ipam.ValidID(name); err != nil {
		return err
	}
	if err := netnsutil.CreateNamed(name); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "/run/netns/%s\n", name)
	return nil
}
