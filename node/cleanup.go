package node

// Cleanup: everything of ours off the node (tenantnetd cleanup), found by
// the same names reconcile owns.

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/tenantnet/tenantnet/config"
	"github.com/tenantnet/tenantnet/loader"
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
	Purged      bool // the state directory was deleted
}

// Cleanup removes everything of ours from the node: bridges and workload
// ports (the names reconcile owns, isOurs), this node's WireGuard devices
// (the embedded ones' processes stopped), the exit policy routing, the
// datapath (detached, unpinned), the API socket and leftover UAPI
// sockets; with purge, the state directory too.
// Links that cannot be deleted are skipped (not counted); any other
// failure stops it with the report so far.
func Cleanup(cfg *config.Node, purge bool) (CleanupReport, error) {
	var rep CleanupReport
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
	if rep.ExitRules, err = RemoveExitRouting(h); err != nil {
		return rep, fmt.Errorf("remove the exit routing: %w", err)
	}
	if rep.Unreachable, err = RemoveUnreachable(h); err != nil {
		return rep, fmt.Errorf("remove the fail-closed routes: %w", err)
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
