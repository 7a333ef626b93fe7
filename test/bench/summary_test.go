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
	} {
		i := strings.Index(b.String(), want)
		if i < 0 {
			t.Errorf("no row %q in:\n%s", want, b.String())
			continue
		}
		line := b.String()[i:]
		line = line[:strings.Index(line, "\n")]
		wantMet := !strings.Contains(want, "no-op reconcile")
		if strings.HasSuffix(line, "| yes |") != wantMet {
			t.Errorf("%s: met should be %v", line, wantMet)
		}
	}
}
