package benchutil

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// ResultsEnv names the file benchmarks run by `go test -bench` (make
// bench-grid, make bench-scale) record their figures in, for the summary
// table `make bench` writes: those benchmarks take minutes to tens of
// minutes each, so make bench reports their last figures, with when and
// at which commit they were measured, instead of running them.
const ResultsEnv = "TENANTNET_BENCH_RESULTS"

// Result is one recorded figure.
type Result struct {
	Value    float64   `json:"value"`
	Unit     string    `json:"unit"`
	Measured time.Time `json:"measured"`
	Commit   string    `json:"commit,omitempty"`
}

// Key is how a figure is recorded: the benchmark's name and the unit,
// e.g. "BenchmarkNodeScale rss-MB".
func Key(bench, unit string) string { return bench + " " + unit }

// Record adds figures to the file named by $TENANTNET_BENCH_RESULTS,
// replacing earlier ones of the same key. Without the variable it does
// nothing: a benchmark run by hand leaves no file behind.
func Record(bench string, figures map[string]float64) error {
	path := os.Getenv(ResultsEnv)
	if path == "" {
		return nil
	}
	all, err := ReadResults(path)
	if err != nil {
		return err
	}
	now, commit := time.Now().UTC().Truncate(time.Second), headCommit()
	for unit, v := range figures {
		all[Key(bench, unit)] = Result{Value: v, Unit: unit, Measured: now, Commit: commit}
	}
	b, err := json.MarshalIndent(all, "", "  ")
	if err != nil {
		return err
	}
	// Write then rename: a benchmark killed half-way leaves the old file.
	tmp, err := os.CreateTemp(filepath.Dir(path), ".bench-results-*")
	if err != nil {
		return fmt.Errorf("record %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("record %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("record %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("record %s: %w", path, err)
	}
	return nil
}

// ReadResults reads a results file; a file that does not exist is no
// figures, not an error.
func ReadResults(path string) (map[string]Result, error) {
	all := map[string]Result{}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return all, nil
	}
	if err != nil {
		return nil, fmt.Errorf("bench results: %w", err)
	}
	if err := json.Unmarshal(b, &all); err != nil {
		return nil, fmt.Errorf("bench results %s: %w", path, err)
	}
	return all, nil
}

// Provenance says where a recorded figure comes from, for a report.
func (r Result) Provenance(target string) string {
	s := "`make " + target + "`, " + r.Measured.Format("2006-01-02 15:04Z")
	if r.Commit != "" {
		s += " at " + r.Commit
	}
	return s
}

func headCommit() string {
	out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}
