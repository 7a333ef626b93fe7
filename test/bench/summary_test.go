package bench

import (
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tenantnet/tenantnet/internal/benchutil"
)

// TestSummaryQuotesRecorded: the targets make bench does not measure are
// quoted from what make bench-grid and make bench-scale recorded, judged
// against their goals, and say so when nothing was recorded.
func TestSummaryQuotesRecorded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "results.json")
	o := Options{Ns: []int{10}, Results: path, Log: io.Discard}
	var none strings.Builder
	writeSummary(&none, o, results{}, nil, "")
	if got := strings.Count(none.String(), "not measured: run `make bench-"); got != 4 {
		t.Errorf("%d rows say what to run, want 4:\n%s", got, none.String())
	}
	t.Setenv(benchutil.ResultsEnv, path)
	if err := benchutil.Record("BenchmarkCrossNodeStream/fast-path", map[string]float64{"Gbit/s": 2.6}); err != nil {
		t.Fatal(err)
	}
	if err := benchutil.Record("BenchmarkCrossNodeStream/wireguard-veth", map[string]float64{"Gbit/s": 1.9}); err != nil {
		t.Fatal(err)
	}
	if err := benchutil.Record("BenchmarkNodeScale", map[string]float64{"noop-reconcile-ms": 51, "all-on-tcx-s": 59, "rss-MB": 80, "networks": 1000, "workloads": 2000}); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	writeSummary(&b, o, results{}, nil, "")
	for _, want := range []string{
		"| Cross-node TCP stream over embedded wireguard-go ≥ 2.5 Gbit/s | 2.60 Gbit/s (`make bench-grid`, ",
		"| Scale: no-op reconcile ≤ 50 ms (1,000 networks, 2,000 workloads) | 51",
		"| Scale: every port on TCX ≤ 60 s after start | 59",
		"| Scale: RSS ≤ 100 MB | 80",
		"| · the same wireguard-go device pair on a plain veth, no tenantnet (reference) | 1.90 Gbit/s (`make bench-grid`, ",
	} {
		i := strings.Index(b.String(), want)
		if i < 0 {
			t.Errorf("no row %q in:\n%s", want, b.String())
			continue
		}
		line := b.String()[i:]
		line = line[:strings.Index(line, "\n")]
		wantMet := !strings.Contains(want, "no-op reconcile")
		if strings.Contains(want, "plain veth") {
			if !strings.HasSuffix(line, "| - | - |") {
				t.Errorf("%s: a reference, not a target: want no ratio and no met", line)
			}
			continue
		}
		if strings.HasSuffix(line, "| yes |") != wantMet {
			t.Errorf("%s: met should be %v", line, wantMet)
		}
	}
}

// TestDropperOwnCost: the prefilter's summary row takes the generator's
// share out of both droppers' rates, and says when tenantnet's own cost
// is lost in the noise instead of dividing by it.
func TestDropperOwnCost(t *testing.T) {
	o := Options{Ns: []int{10}, Log: io.Discard}
	res := results{}
	for _, r0 := range []float64{600000, 666666, 700000} {
		res.add("genonly", "gen", 0, r0)
	}
	drops := func(xdp, nft float64) map[string][]genRate {
		return map[string][]genRate{
			"tenantnet XDP":           {{sunk: xdp, offered: xdp, received: xdp}},
			"nftables netdev ingress": {{sunk: nft, offered: nft, received: nft}},
		}
	}
	row := func(d map[string][]genRate) string {
		var b strings.Builder
		writeSummary(&b, o, res, d, "")
		for _, l := range strings.Split(b.String(), "\n") {
			if strings.Contains(l, "own rates (the generator's share") {
				return l
			}
		}
		return ""
	}
	// R0 1500 ns; XDP 2000 ns (own 500), nftables 3000 (own 1500): 3×.
	if l := row(drops(500000, 1e9/3000)); !strings.Contains(l, "500 ns a drop") || !strings.Contains(l, "| 3.00× (goal 3.0×) | yes |") {
		t.Errorf("own costs 500 and 1500 ns: %q", l)
	}
	// XDP as fast as the generator alone: a bound, not a division by ~0.
	if l := row(drops(666000, 400000)); !strings.Contains(l, "below the noise") || !strings.Contains(l, "> ") {
		t.Errorf("XDP within 2%% of R0: %q", l)
	}
	// nftables within the noise: nothing to compare, no row.
	if l := row(drops(666000, 660000)); l != "" {
		t.Errorf("nftables within the noise: want no row, got %q", l)
	}
}

// TestDirectQuoted: the socket-level rows against none quote the figure
// without the node.
func TestDirectQuoted(t *testing.T) {
	o := Options{Ns: []int{10, 1000}, Log: io.Discard}
	res := results{}
	res.add("rr", "none", 10, 30000)
	res.add("rr", "none", 1000, 25000)
	res.add("rr", "tenantnet", 10, 31000)
	res.add("rr", "tenantnet", 1000, 26000)
	res.add("rr", directMode, 0, 33000)
	var b strings.Builder
	writeSummary(&b, o, res, nil, "")
	want := "without the node (one veth pair): 33000, 1.10–1.32× none | 1.03× (goal 1.2×) | no |"
	if !strings.Contains(b.String(), want) {
		t.Errorf("no %q in:\n%s", want, b.String())
	}
}
