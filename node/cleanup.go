package node

// Cleanup: everything of ours off the node (tenantnetd cleanup), found by
// the same names reconcile owns.

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/tenantnet/tenantnet/config"
	"github.com/tenantnet/tenantnet/ipam"
	"github.com/tenantnet/tenantnet/loader"
	"github.com/tenantnet/tenantnet/sixin4"
	"github.com/tenantnet/tenantnet/wg"
)

// isOurWG reports whether name is a WireGuard device of node (wg.Name of
// some network number): other nodes on the same machine (the demo, the
// tests) have devices with another tag, which are not touched.
func isOurWG(name, node string) bool {
	const tag = 4 // hex digits of the node's tag at the end (wg.Name)
	if !strings.HasPrefix(name, "tg") || len(name) <= 2+tag {
		return false
	}
	num, err := strconv.ParseUint(name[2:len(name)-tag], 16, 32)
	return err == nil && wg.Name(uint32(num), node) == name
}

// CleanupReport says what Cleanup removed.
type CleanupReport struct {
	Links       int  // bridges and workload ports deleted
	WireGuard   int  // WireGuard devices of this node deleted (embedded ones: their processes stopped)
	ExitRules   int  // exit policy-routing rules removed (their tables flushed)
	Unreachable int  // fail-closed unreachable routes removed from the main table
	Sockets     int  // UAPI sockets of embedded WireGuard devices removed (left by a kill)
	IPv4        int  // bought IPv4 addresses taken out of the kernel (uplink /32s, local routes)
	Purged      bool // the state directory was deleted
}

// Cleanup removes everything of ours from the node: bridges and workload
// ports (the names reconcile owns, isOurs), this node's WireGuard devices
// (the embedded ones' processes stopped), the exit policy routing, the
// datapath (detached, unpinned), the API socket and leftover UAPI
// sockets; with purge, the state directory too, unless other nodes still
// reach the outside through this one (ExitDependents) or it holds
// delegations, live or in quarantine (HeldDelegations; force purges
// anyway): then nothing at all is removed.
// Links that cannot be deleted are skipped (not counted); any other
// failure stops it with the report so far.
func Cleanup(cfg *config.Node, purge, force bool) (CleanupReport, error) {
	var rep CleanupReport
	if purge && !force {
		deps, err := ExitDependents(cfg)
		if err != nil {
			return rep, fmt.Errorf("--purge-state: cannot tell whether other nodes use this one as their exit (--force purges anyway): %w", err)
		}
		if len(deps) > 0 {
			var s []string
			for _, id := range sortedKeys(deps) {
				s = append(s, fmt.Sprintf("%s (members %s)", id, strings.Join(deps[id], ", ")))
			}
			return rep, fmt.Errorf("--purge-state refused: this node is the exit of %s, whose members are live in the registry: "+
				"purging forgets the networks' /64s, keys and rules while their traffic still comes here; move the exit first, or --force", strings.Join(s, "; "))
		}
		ds, err := HeldDelegations(cfg)
		if err != nil {
			return rep, fmt.Errorf("--purge-state: cannot tell whether this node holds delegations (--force purges anyway): %w", err)
		}
		if len(ds) > 0 {
			var live, held []string
			for _, d := range ds {
				s := fmt.Sprintf("%s to %s for %s", d.Prefix, d.Member, d.Network)
				if d.Live() {
					live = append(live, s)
				} else {
					held = append(held, s+fmt.Sprintf(" (left %s)", d.Left.Format(time.RFC3339)))
				}
			}
			return rep, fmt.Errorf("--purge-state refused: this node delegated %d /64s (live: %s; in quarantine: %s): "+
				"purging forgets its delegation pool, and the /64s would be handed out again while members and the internet still use them; "+
				"move the networks' exit first, or --force", len(ds), orNone(live), orNone(held))
		}
	}
	// A move to TCX that a kill interrupted left the host's switch on
	// (rcuexpedite.go); cleanup puts it back as a start would.
	if err := newRCUExpedite(cfg.StateDir, slog.Default()).restore(); err != nil {
		return rep, err
	}
	h, err := netlink.NewHandle()
	if err != nil {
		return rep, err
	}
	defer h.Close()
	links, err := dump(h.LinkList)
	if err != nil {
		return rep, fmt.Errorf("list links: %w", err)
	}
	for _, l := range links {
		name := l.Attrs().Name
		switch {
		case isOurs(name):
			if h.LinkDel(l) == nil {
				rep.Links++
			}
		case isOurWG(name, cfg.NodeID):
			// Kernel devices and the embedded devices' processes outlive
			// tenantnetd: both go here (and with their network).
			if wg.Remove(name) == nil {
				rep.WireGuard++
			}
		}
	}
	// VMs' taps have the names their operator gave them, not ours: those
	// IPAM records go too (if they are still taps).
	// (Read-only: a tenantnetd still running keeps them, and this says so.)
	taps, err := ipam.TapNames(cfg.StateDir)
	if err != nil {
		fmt.Fprintf(os.Stderr, "cleanup: the taps of VM workloads stay (their names are in ipam, which cannot be read now: %v)\n", err)
	}
	for _, name := range taps {
		if l, err := h.LinkByName(name); err == nil {
			if _, isTun := l.(*netlink.Tuntap); isTun && h.LinkDel(l) == nil {
				rep.Links++
			}
		}
	}
	if l, err := h.LinkByName(sixin4.DefaultName); err == nil && l.Type() == "veth" {
		if sixin4.Remove(h, sixin4.DefaultName) == nil {
			rep.Links++
		}
	}
	if rep.ExitRules, err = RemoveExitRouting(h); err != nil {
		return rep, fmt.Errorf("remove the exit routing: %w", err)
	}
	if rep.Unreachable, err = RemoveUnreachable(h); err != nil {
		return rep, fmt.Errorf("remove the fail-closed routes: %w", err)
	}
	if rep.IPv4, err = RemoveIPv4(h, cfg); err != nil {
		return rep, fmt.Errorf("remove the bought ipv4: %w", err)
	}
	if _, err := RemoveProxyRoutes(h); err != nil {
		return rep, fmt.Errorf("remove the proxy's local routes: %w", err)
	}
	if _, err := RemoveHostGuard(); err != nil {
		return rep, fmt.Errorf("remove the nftables table %s: %w", hostGuardTable, err)
	}
	if err := loader.Remove(cfg.BPFDir); err != nil {
		return rep, err
	}
	os.Remove(cfg.APISocket) // best effort, as the sockets below
	socks, _ := filepath.Glob(filepath.Join(wg.UAPIDir, "tg*.sock"))
	for _, s := range socks {
		if isOurWG(strings.TrimSuffix(filepath.Base(s), ".sock"), cfg.NodeID) && os.Remove(s) == nil {
			rep.Sockets++
		}
	}
	if purge {
		if err := os.RemoveAll(cfg.StateDir); err != nil {
			return rep, err
		}
		rep.Purged = true
	}
	return rep, nil
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// HeldDelegations lists the delegations this node (an exit) holds: live
// ones and those in quarantine.
func HeldDelegations(cfg *config.Node) ([]ipam.Delegation, error) {
	st, err := ipam.Open(cfg.StateDir, ipam.Pool{Prefixes: cfg.Prefixes})
	if err != nil {
		return nil, fmt.Errorf("%w (is tenantnetd still running? stop it first)", err)
	}
	defer st.Close()
	return st.ReadDelegations()
}

func sortedKeys(m map[string][]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// ExitDependents lists the declared networks of this node's state whose
// exit this node is, with their other members that have a live, believed
// record in the registry: they send their outside traffic here. (Prefix
// delegations, once they exist, depend on the exit the same way.)
func ExitDependents(cfg *config.Node) (map[string][]string, error) {
	st, err := ipam.Open(cfg.StateDir, ipam.Pool{Prefixes: cfg.Prefixes})
	if err != nil {
		return nil, fmt.Errorf("%w (is tenantnetd still running? stop it first)", err)
	}
	defer st.Close()
	nets, err := st.Networks()
	if err != nil {
		return nil, err
	}
	local, joined := map[string]bool{}, map[string]bool{}
	for _, n := range nets {
		local[n.ID], joined[n.ID] = !n.Declared, n.Declared
	}
	if len(joined) == 0 {
		return nil, nil
	}
	gridKey, err := cfg.GridKey()
	if err != nil {
		return nil, err
	}
	reg, err := cfg.Registry.Open()
	if err != nil {
		return nil, err
	}
	defer reg.Close()
	// The same checks as the running service: only what the grid key
	// verifies counts.
	s := &Service{cfg: cfg, log: slog.New(slog.NewTextHandler(io.Discard, nil)), ipam: st, registry: regState{reg: reg}, trust: newTrustState(gridKey, nil), live: newLiveState()}
	if err := s.loadGrid(time.Now()); err != nil {
		return nil, err
	}
	entries, err := reg.Declared()
	if err != nil {
		return nil, err
	}
	all, mine, _, _ := checkDeclared(entries, declaredCheck{grid: s.trust.grid, self: cfg.NodeID, local: local, joined: joined, max: len(joined)})
	s.trust.specs = all // members on this node's delegations are believed as the service believes them
	// A fresh liveness state counts every listed file record as just
	// renewed: a member's stale record makes purge refuse (--force).
	nodes, _, err := s.believedNodes(time.Now())
	if err != nil {
		return nil, err
	}
	deps := map[string][]string{}
	for id, sp := range mine {
		if sp.Exit != cfg.NodeID || !joined[id] {
			continue
		}
		for _, rec := range nodes {
			if nr, ok := rec.Networks[id]; ok && nr.Declared && rec.NodeID != cfg.NodeID {
				deps[id] = append(deps[id], rec.NodeID)
			}
		}
	}
	return deps, nil
}
