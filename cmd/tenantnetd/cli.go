package main

// The tenantnetd command line: `run` (the service) and the client
// subcommands that talk to a running service over its socket.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/tenantnet/tenantnet/internal/defaults"

	"github.com/spf13/pflag"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/tenantnet/tenantnet/api"
	"github.com/tenantnet/tenantnet/config"
	"github.com/tenantnet/tenantnet/internal/netnsutil"
	"github.com/tenantnet/tenantnet/ipam"
	"github.com/tenantnet/tenantnet/loader"
	"github.com/tenantnet/tenantnet/metrics"
	"github.com/tenantnet/tenantnet/node"
	"github.com/tenantnet/tenantnet/registry"
	"github.com/tenantnet/tenantnet/wg"
)

const usage = `tenantnetd: the tenantnet node service.

Usage:
  tenantnetd run [--config /etc/tenantnet/node.yaml]    run the service (systemd: tenantnetd.service)
  tenantnetd network add --id ID [--mtu N]              create a tenant network on this node
  tenantnetd network del --id ID
  tenantnetd network rotate-key --id ID [--overlap 30s]  new WireGuard key, announced before it takes over
  tenantnetd network list
  tenantnetd network declare --id ID --members N1,N2 [--exit N1] [--mtu N] [--user ID:NODE:PUBKEY]...
                                                        declare a network in the grid registry: its members create it
  tenantnetd network undeclare --id ID | network declared   (registry commands: read --config, need no service)
  tenantnetd workload add --id ID --network NET --netns PATH
  tenantnetd workload del --id ID
  tenantnetd workload list
  tenantnetd user add --id ID --network NET [--public-key KEY]   a laptop as a peer: prints its wg-quick config
  tenantnetd user del --id ID | user list
  tenantnetd status
  tenantnetd netns create NAME | netns del NAME         pause-style namespaces under /run/netns
  tenantnetd cleanup [--config FILE] [--purge-state]    remove everything of ours (links, datapath)

Client commands take --socket (default from the config: /run/tenantnet/tenantnetd.sock)
and -o json. Exit codes: 0 ok, 1 failed, 2 usage.
`

type usageErr struct{ error }

// Main runs tenantnetd and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	err := run(args, stdout, stderr)
	if err == nil || errors.Is(err, pflag.ErrHelp) {
		return 0
	}
	fmt.Fprintf(stderr, "tenantnetd: %v\n", err)
	var ue usageErr
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stdout, usage)
		if len(args) == 0 {
			return usageErr{errors.New("missing command")}
		}
		return nil
	}
	cmd, rest := args[0], args[1:]
	if (cmd == "network" || cmd == "workload" || cmd == "netns" || cmd == "user") && len(rest) > 0 {
		cmd, rest = cmd+" "+rest[0], rest[1:]
	}
	fs := pflag.NewFlagSet("tenantnetd "+cmd, pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfgPath := fs.String("config", defaults.ConfigPath, "node configuration")
	socket := fs.String("socket", "", "API socket (default: api_socket of the config, else "+defaults.APISocket+")")
	output := fs.StringP("output", "o", "table", "table or json")
	id := fs.String("id", "", "network or workload id")
	network := fs.String("network", "", "network id")
	nsPath := fs.String("netns", "", "workload network namespace (/run/netns/NAME or /proc/PID/ns/net)")
	mtu := fs.Int("mtu", 0, "network MTU (default: the node's mtu)")
	purge := fs.Bool("purge-state", false, "cleanup: also delete the state directory")
	members := fs.StringSlice("members", nil, "network declare: member node ids")
	exit := fs.String("exit", "", "network declare: the member node that is the network's exit (dual-stack; members without native IPv6 reach the outside through it)")
	users := fs.StringArray("user", nil, "network declare: a user-access peer ID:NODE:PUBKEY (repeatable)")
	overlap := fs.Duration("overlap", 0, "network rotate-key: announce the next key this long before it takes over (default: the registry lease)")
	pubkey := fs.String("public-key", "", "user add: the user's WireGuard public key (default: generate a key pair)")
	if err := fs.Parse(rest); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fmt.Fprint(stdout, usage)
			return err
		}
		return usageErr{err}
	}
	client := func() *api.Client {
		path := *socket
		if path == "" {
			path = defaults.APISocket
			if c, err := config.Load(*cfgPath); err == nil {
				path = c.APISocket
			}
		}
		return api.NewClient(path)
	}
	need := func(v *string, flag string) error {
		if *v == "" {
			return usageErr{fmt.Errorf("--%s is required", flag)}
		}
		return nil
	}
	out := func(v any, table func(*tabwriter.Writer)) error {
		if *output == "json" {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(v)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		table(tw)
		return tw.Flush()
	}
	switch cmd {
	case "run":
		return serve(*cfgPath)
	case "network add":
		if err := need(id, "id"); err != nil {
			return err
		}
		n, err := client().AddNetwork(api.NetworkRequest{ID: *id, MTU: *mtu})
		if err != nil {
			return err
		}
		return out(n, func(tw *tabwriter.Writer) {
			fmt.Fprintf(tw, "network %s: prefix %s, gateway %s, bridge %s, tenant %d, wireguard port %d, mtu %d\n",
				n.ID, n.Prefix, n.Gateway, n.Bridge, n.Tenant, n.WGPort, n.MTU)
		})
	case "network del":
		if err := need(id, "id"); err != nil {
			return err
		}
		return client().DeleteNetwork(*id)
	case "network rotate-key":
		if err := need(id, "id"); err != nil {
			return err
		}
		req := api.RotateKeyRequest{}
		if *overlap != 0 {
			req.Overlap = overlap.String()
		}
		r, err := client().RotateKey(*id, req)
		if err != nil {
			return err
		}
		return out(r, func(tw *tabwriter.Writer) {
			fmt.Fprintf(tw, "network %s: next public key %s takes over at %s\n", r.Network, r.NextPublicKey, r.At.Format(time.RFC3339))
		})
	case "network declare", "network undeclare", "network declared":
		cfg, err := config.Load(*cfgPath)
		if err != nil {
			return err
		}
		reg, err := registry.Open(cfg.Registry.Type, cfg.Registry.Dir, cfg.Registry.Endpoints, cfg.Registry.Prefix)
		if err != nil {
			return err
		}
		if c, ok := reg.(io.Closer); ok {
			defer c.Close()
		}
		switch cmd {
		case "network declare":
			if err := need(id, "id"); err != nil {
				return err
			}
			spec := registry.NetworkSpec{ID: *id, Members: *members, Exit: *exit, MTU: *mtu}
			for _, u := range *users {
				parts := strings.SplitN(u, ":", 3)
				if len(parts) != 3 {
					return usageErr{fmt.Errorf("--user %q: want ID:NODE:PUBKEY", u)}
				}
				spec.Users = append(spec.Users, registry.UserSpec{ID: parts[0], Node: parts[1], PublicKey: parts[2]})
			}
			// An exit forwards the members' IPv6 out of its own uplink:
			// refuse one the registry knows has none (a node not yet
			// announced is checked by itself: it logs and does not forward).
			if spec.Exit != "" {
				if nodes, err := reg.Nodes(); err == nil {
					for _, n := range nodes {
						if n.NodeID == spec.Exit && n.Class != string(config.DualStack) {
							return usageErr{fmt.Errorf("--exit %s: the node is %s; an exit needs native IPv6 (dual-stack)", spec.Exit, n.Class)}
						}
					}
				}
			}
			return reg.Declare(spec)
		case "network undeclare":
			if err := need(id, "id"); err != nil {
				return err
			}
			return reg.Undeclare(*id)
		}
		specs, err := reg.Declared()
		if err != nil {
			return err
		}
		return out(specs, func(tw *tabwriter.Writer) {
			fmt.Fprintln(tw, "NETWORK\tMEMBERS\tEXIT\tUSERS")
			for _, sp := range specs {
				var us []string
				for _, u := range sp.Users {
					us = append(us, u.ID+"@"+u.Node)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", sp.ID, strings.Join(sp.Members, ","), sp.Exit, strings.Join(us, ","))
			}
		})
	case "network list":
		ns, err := client().Networks()
		if err != nil {
			return err
		}
		return out(ns, func(tw *tabwriter.Writer) {
			fmt.Fprintln(tw, "NETWORK\tTENANT\tPREFIX\tBRIDGE\tWG PORT\tMTU\tOUTSIDE")
			for _, n := range ns {
				fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\t%d\t%s\n", n.ID, n.Tenant, n.Prefix, n.Bridge, n.WGPort, n.MTU, n.Outside)
			}
		})
	case "workload add":
		for _, f := range []struct {
			v    *string
			name string
		}{{id, "id"}, {network, "network"}, {nsPath, "netns"}} {
			if err := need(f.v, f.name); err != nil {
				return err
			}
		}
		w, err := client().AddWorkload(api.WorkloadRequest{ID: *id, Network: *network, Netns: *nsPath})
		if err != nil {
			return err
		}
		return out(w, func(tw *tabwriter.Writer) {
			fmt.Fprintf(tw, "workload %s: address %s on network %s, port %s, gateway %s\n", w.ID, w.Addr, w.Network, w.Port, w.Gateway)
		})
	case "workload del":
		if err := need(id, "id"); err != nil {
			return err
		}
		return client().DeleteWorkload(*id)
	case "workload list":
		ws, err := client().Workloads()
		if err != nil {
			return err
		}
		return out(ws, func(tw *tabwriter.Writer) {
			fmt.Fprintln(tw, "WORKLOAD\tNETWORK\tADDRESS\tPORT\tNETNS")
			for _, w := range ws {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", w.ID, w.Network, w.Addr, w.Port, w.Netns)
			}
		})
	case "user add":
		for _, f := range []struct {
			v    *string
			name string
		}{{id, "id"}, {network, "network"}} {
			if err := need(f.v, f.name); err != nil {
				return err
			}
		}
		u, err := client().AddUser(api.UserRequest{ID: *id, Network: *network, PublicKey: *pubkey})
		if err != nil {
			return err
		}
		return out(u, func(tw *tabwriter.Writer) { fmt.Fprint(tw, u.Config) })
	case "user del":
		if err := need(id, "id"); err != nil {
			return err
		}
		return client().DeleteUser(*id)
	case "user list":
		us, err := client().Users()
		if err != nil {
			return err
		}
		return out(us, func(tw *tabwriter.Writer) {
			fmt.Fprintln(tw, "USER\tNETWORK\tADDRESS\tPUBLIC KEY")
			for _, u := range us {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", u.ID, u.Network, u.Addr, u.PublicKey)
			}
		})
	case "status":
		st, err := client().Status()
		if err != nil {
			return err
		}
		return out(st, func(tw *tabwriter.Writer) {
			fmt.Fprintf(tw, "node %s (%s): %d networks, %d workloads, %d free /64s\n", st.NodeID, st.Class, st.Networks, st.Workloads, st.FreeNets)
			fmt.Fprintf(tw, "ports attached with %s; uplinks %v\n", st.AttachMode, st.Uplinks)
			if st.PortsOnLegacyTC > 0 {
				fmt.Fprintf(tw, "%d ports attached with legacy tc in bulk, moving to %s\n", st.PortsOnLegacyTC, st.AttachMode)
			}
			fmt.Fprintf(tw, "reconcile: %d runs, %d errors, %d repairs, last took %s %s\n", st.Reconcile.Runs, st.Reconcile.Errors,
				st.Reconcile.Repairs, st.Reconcile.LastDuration, st.Reconcile.LastError)
		})
	case "netns create":
		if fs.NArg() != 1 {
			return usageErr{errors.New("netns create NAME")}
		}
		return createNetns(fs.Arg(0), stdout)
	case "netns del":
		if fs.NArg() != 1 {
			return usageErr{errors.New("netns del NAME")}
		}
		return netns.DeleteNamed(fs.Arg(0))
	case "cleanup":
		return cleanup(*cfgPath, *purge, stdout)
	}
	return usageErr{fmt.Errorf("unknown command %q (see tenantnetd --help)", cmd)}
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

func serve(cfgPath string) error {
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	slog.SetDefault(log)
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	start := time.Now()
	s, err := node.New(cfg, log)
	if err != nil {
		return err
	}
	defer s.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Converge once before serving: the API then answers from a node
	// that matches its state.
	if err := s.Reconcile(true); err != nil {
		log.Warn("first reconcile had errors; retrying in the loop", "err", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", metrics.Handler(s, log))
	msrv := &http.Server{Addr: cfg.MetricsAddr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := msrv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server", "err", err)
		}
	}()
	go func() { <-ctx.Done(); msrv.Close() }()
	go s.Run(ctx)
	log.Info("tenantnetd ready", "node", cfg.NodeID, "startup", time.Since(start).String(), "metrics", cfg.MetricsAddr)
	err = api.Serve(ctx, cfg.APISocket, api.Handler(s), log)
	log.Info("tenantnetd stopping; the datapath stays attached")
	return err
}

// cleanup removes everything of ours: workload ports and bridges, the
// datapath (detached, unpinned) and, with purge, the state.
func cleanup(cfgPath string, purge bool, stdout io.Writer) error {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	links, err := netlink.LinkList()
	if err != nil {
		return err
	}
	n := 0
	for _, l := range links {
		name := l.Attrs().Name
		if len(name) > 3 && (name[:3] == "tnb" || name[:3] == "tnw") {
			if err := netlink.LinkDel(l); err == nil {
				n++
			}
		}
	}
	h, err := netlink.NewHandle()
	if err != nil {
		return err
	}
	defer h.Close()
	if _, err := node.RemoveExitRouting(h); err != nil {
		return fmt.Errorf("remove the exit routing: %w", err)
	}
	if err := loader.Remove(cfg.BPFDir); err != nil {
		return err
	}
	os.Remove(cfg.APISocket)
	// Sockets of embedded WireGuard devices of this node, left by a kill.
	socks, _ := filepath.Glob("/var/run/wireguard/tg*" + wg.Name(0, cfg.NodeID)[3:] + ".sock")
	for _, s := range socks {
		os.Remove(s)
	}
	if purge {
		if err := os.RemoveAll(cfg.StateDir); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "removed %d links and the datapath at %s%s\n", n, cfg.BPFDir, map[bool]string{true: "; state purged", false: ""}[purge])
	return nil
}
