package main

// The grid operator's commands (grid init, enroll, revoke) and the node's
// identity. They need no running service: the grid commands write the
// registry the configuration names, signed by the grid key, which stays
// with the operator (never on a node).

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/spf13/pflag"

	"github.com/tenantnet/tenantnet/config"
	"github.com/tenantnet/tenantnet/internal/cli"
	"github.com/tenantnet/tenantnet/registry"
	"github.com/tenantnet/tenantnet/trust"
)

func gridCmd() *command {
	return &command{Name: "grid", Summary: "the grid operator's key, node enrollments and revocations (needs no service)", Sub: []*command{
		gridInitCmd(), gridEnrollCmd(), gridRevokeCmd(),
	}}
}

func gridInitCmd() *command {
	var key string
	return &command{
		Name: "init", Summary: "create the grid operator's key pair (keep the private key off the nodes)",
		Usage:   "--key FILE",
		Example: "  tenantnetd grid init --key ~/grid.key   # prints the public key for the nodes' grid_public_key",
		Flags: func(fs *pflag.FlagSet, env *Env) {
			fs.StringVar(&key, "key", "", "the private key file to create (0600; refused if it exists)")
		},
		Run: func(env *Env, fs *pflag.FlagSet, args []string) error {
			if err := checkArgs(fs, args, "key"); err != nil {
				return err
			}
			pub, err := trust.GenerateKey(key)
			if errors.Is(err, os.ErrExist) {
				return fmt.Errorf("%s exists: not overwritten", key)
			}
			if err != nil {
				return err
			}
			if err := trust.WriteFileSync(key+".pub", []byte(trust.EncodePublicKey(pub)+"\n"), 0o644, true); err != nil {
				return err
			}
			fmt.Fprintln(env.Stdout, trust.EncodePublicKey(pub))
			return nil
		},
	}
}

// gridKey loads the operator's key and checks it is the one the
// configuration's grid_public_key names (a key of another grid signs
// nothing its nodes believe).
func gridKey(path string, cfg *config.Node) (ed25519.PrivateKey, error) {
	k, err := trust.LoadKey(path)
	if err != nil {
		return nil, err
	}
	pub, err := cfg.GridKey()
	if err != nil {
		return nil, err
	}
	if pub != nil && !pub.Equal(k.Public()) {
		return nil, fmt.Errorf("%s is not the key of this grid (grid_public_key %s)", path, trust.EncodePublicKey(pub))
	}
	return k, nil
}

// openGrid opens the registry of the configuration at cfgPath and loads
// the grid key at keyPath (gridKey): what the operator's commands write
// with.
func openGrid(cfgPath, keyPath string) (registry.Registry, ed25519.PrivateKey, func(), error) {
	reg, cfg, done, err := openRegistry(cfgPath)
	if err != nil {
		return nil, nil, nil, err
	}
	k, err := gridKey(keyPath, cfg)
	if err != nil {
		done()
		return nil, nil, nil, err
	}
	return reg, k, done, nil
}

func gridEnrollCmd() *command {
	var key, node, identity, class string
	var prefixes, pool []string
	var exit bool
	var expires time.Duration
	return &command{
		Name: "enroll", Summary: "sign a node's enrollment into the registry: its identity, class, prefixes, exit",
		Usage: "--key FILE --node ID --identity PUB --class CLASS [--prefix P...] [--exit] [--ipv4-pool P...] [--expires 8760h] [--config FILE]",
		Example: `  tenantnetd grid enroll --key ~/grid.key --node node1 --identity $(ssh node1 tenantnetd identity) \
      --class dual-stack --prefix 2001:db8:101::/48 --exit --ipv4-pool 203.0.113.8/29`,
		Flags: func(fs *pflag.FlagSet, env *Env) {
			env.configFlag(fs)
			fs.StringVar(&key, "key", "", "the grid operator's private key")
			fs.StringVar(&node, "node", "", "node id")
			fs.StringVar(&identity, "identity", "", "the node's identity public key (tenantnetd identity on the node)")
			fs.StringVar(&class, "class", "dual-stack", "the node's class")
			fs.StringSliceVar(&prefixes, "prefix", nil, "a prefix the node's network /64s may come from (repeatable; none for ipv4-only, home-nat, home-ipv6: their exits delegate)")
			fs.BoolVar(&exit, "exit", false, "the node may be a network's exit")
			fs.StringSliceVar(&pool, "ipv4-pool", nil, "public IPv4 the node may sell to its networks (repeatable; its ipv4_pool must lie inside; others believe its addresses only inside)")
			fs.DurationVar(&expires, "expires", 8760*time.Hour, "valid for")
		},
		Run: func(env *Env, fs *pflag.FlagSet, args []string) error {
			required := []string{"key", "node", "identity"}
			if class == "dual-stack" {
				// A node without native IPv6 needs none: its declared
				// networks' /64s come from their exits.
				required = append(required, "prefix")
			}
			if err := checkArgs(fs, args, required...); err != nil {
				return err
			}
			id, err := trust.ParsePublicKey(identity)
			if err != nil {
				return cli.Usagef("--identity: %v", err)
			}
			now := time.Now().UTC()
			en := trust.Enrollment{NodeID: node, Identity: id, Class: class, Exit: exit, Issued: now, Expires: now.Add(expires)}
			for _, p := range prefixes {
				pp, err := netip.ParsePrefix(p)
				if err != nil {
					return cli.Usagef("--prefix %s: %v", p, err)
				}
				en.Prefixes = append(en.Prefixes, pp)
			}
			for _, p := range pool {
				pp, err := netip.ParsePrefix(p)
				if err != nil {
					if a, aerr := netip.ParseAddr(p); aerr == nil && a.Is4() {
						pp = netip.PrefixFrom(a, 32)
					} else {
						return cli.Usagef("--ipv4-pool %s: %v", p, err)
					}
				}
				en.IPv4Pool = append(en.IPv4Pool, pp)
			}
			if err := en.Validate(); err != nil {
				return cli.Usagef("%v", err)
			}
			reg, k, done, err := openGrid(env.Config, key)
			if err != nil {
				return err
			}
			defer done()
			b, err := trust.SignJSON(k, trust.KindEnrollment, en)
			if err != nil {
				return err
			}
			return reg.Enroll(node, b)
		},
	}
}

func gridRevokeCmd() *command {
	var key, node string
	return &command{
		Name: "revoke", Summary: "revoke a node's identity (signed revocation list) and remove its enrollment",
		Usage:   "--key FILE --node ID [--config FILE]",
		Example: "  tenantnetd grid revoke --key ~/grid.key --node node3",
		Flags: func(fs *pflag.FlagSet, env *Env) {
			env.configFlag(fs)
			fs.StringVar(&key, "key", "", "the grid operator's private key")
			fs.StringVar(&node, "node", "", "node id")
		},
		Run: func(env *Env, fs *pflag.FlagSet, args []string) error {
			if err := checkArgs(fs, args, "key", "node"); err != nil {
				return err
			}
			reg, k, done, err := openGrid(env.Config, key)
			if err != nil {
				return err
			}
			defer done()
			pub := k.Public().(ed25519.PublicKey)
			encs, err := reg.Enrollments()
			if err != nil {
				return err
			}
			var en trust.Enrollment
			for _, e := range encs {
				if e.Name == node {
					if err := trust.OpenJSON(e.Data, trust.KindEnrollment, pub, &en); err != nil {
						return fmt.Errorf("the enrollment of %s: %w", node, err)
					}
				}
			}
			if en.NodeID != node {
				return fmt.Errorf("node %s has no enrollment", node)
			}
			var list trust.Revocations
			if b, err := reg.Revocations(); err != nil {
				return err
			} else if b != nil {
				if err := trust.OpenJSON(b, trust.KindRevocations, pub, &list); err != nil {
					return fmt.Errorf("the revocation list: %w", err)
				}
			}
			if !list.Has(en.Identity) {
				list.Revoked = append(list.Revoked, trust.Revoked{NodeID: node, Identity: en.Identity, At: time.Now().UTC()})
			}
			list.Issued = time.Now().UTC()
			b, err := trust.SignJSON(k, trust.KindRevocations, list)
			if err != nil {
				return err
			}
			if err := reg.SetRevocations(b); err != nil {
				return err
			}
			return reg.Unenroll(node)
		},
	}
}

func identityCmd() *command {
	return &command{
		Name: "identity", Summary: "print this node's identity public key (created if missing), for its enrollment",
		Usage:   "[--config FILE]",
		Example: "  tenantnetd identity",
		Flags:   func(fs *pflag.FlagSet, env *Env) { env.configFlag(fs) },
		Run: func(env *Env, fs *pflag.FlagSet, args []string) error {
			if err := cli.NoArgs(args); err != nil {
				return err
			}
			cfg, err := config.Load(env.Config)
			if err != nil {
				return err
			}
			if _, err := cfg.PrepareStateDir(); err != nil {
				return err
			}
			k, err := trust.Identity(cfg.StateDir)
			if err != nil {
				return err
			}
			fmt.Fprintln(env.Stdout, trust.EncodePublicKey(k.Public().(ed25519.PublicKey)))
			return nil
		},
	}
}

// declarationKey is the key network declarations are signed with: --key
// (required unless the grid is insecure).
func declarationKey(path string, cfg *config.Node) (ed25519.PrivateKey, error) {
	if path == "" {
		if cfg.InsecureRegistry {
			return nil, nil
		}
		return nil, cli.Usagef("--key: the grid operator's key signs declarations (required)")
	}
	return gridKey(path, cfg)
}
