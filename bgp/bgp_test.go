package bgp

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/tenantnet/tenantnet/config"
)

// TestSync: routes of both families are added (Family set, IPv6 in
// MP_REACH), a changed next hop replaces, a missing route is withdrawn.
func TestSync(t *testing.T) {
	ctx := context.Background()
	s, err := Start(ctx, config.BGP{LocalASN: 65001, RouterID: netip.MustParseAddr("192.0.2.1"), GracefulRestart: 120e9}, Options{GracefulRestart: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop(ctx)
	r6 := Route{Prefix: netip.MustParsePrefix("2001:db8:1:2::/64"), NextHop: netip.MustParseAddr("2001:db8::1")}
	r4 := Route{Prefix: netip.MustParsePrefix("198.51.100.8/30"), NextHop: netip.MustParseAddr("192.0.2.1")}
	if a, w, err := s.Sync(ctx, []Route{r6, r4}); err != nil || a != 2 || w != 0 {
		t.Fatalf("sync: %d added, %d withdrawn, %v", a, w, err)
	}
	if got := s.Status(ctx).Announced; len(got) != 2 {
		t.Fatalf("announced %v", got)
	}
	if n := s.globalPaths(t); n != 2 {
		t.Fatalf("%d paths in the global table, want 2", n)
	}
	r6.NextHop = netip.MustParseAddr("2001:db8::2")
	if a, w, err := s.Sync(ctx, []Route{r6}); err != nil || a != 1 || w != 2 {
		t.Fatalf("sync: %d added, %d withdrawn, %v", a, w, err)
	}
	if n := s.globalPaths(t); n != 1 {
		t.Fatalf("%d paths in the global table, want 1", n)
	}
	if _, _, err := s.Sync(ctx, []Route{{Prefix: r4.Prefix, NextHop: r6.NextHop}}); err == nil {
		t.Fatal("a next hop of the other family was accepted")
	}
}

func (s *Speaker) globalPaths(t *testing.T) int {
	n := 0
	for _, f := range []bgp.Family{bgp.RF_IPv6_UC, bgp.RF_IPv4_UC} {
		err := s.srv.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL, Family: f}, func(_ bgp.NLRI, ps []*apiutil.Path) { n += len(ps) })
		if err != nil {
			t.Fatal(err)
		}
	}
	return n
}

// TestGoBGPLogsWarnings: GoBGP's per-peer info (it logs "Add a peer
// configuration" and the like at INFO for every neighbour) is not in
// tenantnetd's log; its warnings would be, and ours are.
func TestGoBGPLogsWarnings(t *testing.T) {
	ctx := context.Background()
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg := config.BGP{LocalASN: 65001, RouterID: netip.MustParseAddr("192.0.2.1"),
		Neighbors: []config.BGPNeighbor{{Address: netip.MustParseAddr("192.0.2.99"), PeerASN: 65000}}}
	s, err := Start(ctx, cfg, Options{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Sync(ctx, []Route{{Prefix: netip.MustParsePrefix("2001:db8:1:2::/64"), NextHop: netip.MustParseAddr("2001:db8::1")}}); err != nil {
		t.Fatal(err)
	}
	s.Stop(ctx)
	for _, l := range strings.Split(buf.String(), "\n") {
		if strings.Contains(l, "part=gobgp") && (strings.Contains(l, "level=INFO") || strings.Contains(l, "level=DEBUG")) {
			t.Errorf("GoBGP below WARN in our log: %s", l)
		}
	}
}
