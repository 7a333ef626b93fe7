package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/pflag"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/tenantnet/tenantnet/api"
	"github.com/tenantnet/tenantnet/internal/cli"
)

func userCmd() *command {
	return &command{Name: "user", Summary: "laptops as WireGuard peers of a tenant network", Sub: []*command{
		userAddCmd(), userDelCmd(), userListCmd(),
	}}
}

func userAddCmd() *command {
	var id, network, pubkey string
	var rotate bool
	return &command{
		Name: "add", Summary: "a laptop as a peer: prints its wg-quick config",
		Usage: "--id ID --network NET [--public-key KEY] [--rotate]",
		Example: `  tenantnetd user add --id alice-laptop --network acme > alice.conf
  tenantnetd user add --id alice-laptop --network acme --public-key "$(cat alice.pub)"
  tenantnetd user add --id alice-laptop --network acme --rotate > alice.conf   # a new key; the old one stops working`,
		Flags: func(fs *pflag.FlagSet, env *Env) {
			env.clientFlags(fs)
			fs.StringVar(&id, "id", "", "user id (required)")
			fs.StringVar(&network, "network", "", "network id (required)")
			fs.StringVar(&pubkey, "public-key", "", "the user's WireGuard public key (default: generate a key pair)")
			fs.BoolVar(&rotate, "rotate", false, "replace the key of an existing user (without it, an existing user's key is never replaced)")
		},
		Run: func(env *Env, fs *pflag.FlagSet, args []string) error {
			if err := checkArgs(fs, args, "id", "network"); err != nil {
				return err
			}
			if err := checkIDs(fs, "id", "network"); err != nil {
				return err
			}
			if pubkey != "" {
				if _, err := wgtypes.ParseKey(pubkey); err != nil {
					return cli.Usagef("--public-key %q: not a WireGuard public key (wg pubkey < private.key)", pubkey)
				}
			}
			u, err := env.client().AddUser(api.UserRequest{ID: id, Network: network, PublicKey: pubkey, Rotate: rotate})
			if err != nil {
				return err
			}
			return env.print(u, func(tw *tabwriter.Writer) { fmt.Fprint(tw, u.Config) })
		},
	}
}

func userDelCmd() *command {
	return idCmd("del", "remove a user's peer", "user",
		"  tenantnetd user del --id alice-laptop", (*Env).socketFlags,
		func(env *Env, id string) error { return env.client().DeleteUser(id) })
}

func userListCmd() *command {
	return &command{
		Name: "list", Summary: "list the users of this node's networks",
		Usage:   "[-o json]",
		Example: "  tenantnetd user list",
		Flags:   func(fs *pflag.FlagSet, env *Env) { env.clientFlags(fs) },
		Run: func(env *Env, fs *pflag.FlagSet, args []string) error {
			if err := cli.NoArgs(args); err != nil {
				return err
			}
			us, err := env.client().Users()
			if err != nil {
				return err
			}
			return env.print(us, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "USER\tNETWORK\tADDRESS\tPUBLIC KEY")
				for _, u := range us {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", u.ID, u.Network, u.Addr, u.PublicKey)
				}
			})
		},
	}
}
