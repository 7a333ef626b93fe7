package benchutil

import (
	"os"
	"path/filepath"
	"testing"
)

func TestRecordMerges(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.json")
	t.Setenv(ResultsEnv, path)
	if err := Record("BenchmarkA", map[string]float64{"ms": 1, "MB": 2}); err != nil {
		t.Fatal(err)
	}
	if err := Record("BenchmarkA", map[string]float64{"ms": 3}); err != nil {
		t.Fatal(err)
	}
	if err := Record("BenchmarkB/x", map[string]float64{"Gbit/s": 4}); err != nil {
		t.Fatal(err)
	}
	r, err := ReadResults(path)
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]float64{"BenchmarkA ms": 3, "BenchmarkA MB": 2, "BenchmarkB/x Gbit/s": 4} {
		if r[k].Value != want || r[k].Measured.IsZero() {
			t.Errorf("%s = %+v, want value %v with a time", k, r[k], want)
		}
	}
	if len(r) != 3 {
		t.Errorf("%d figures, want 3: %v", len(r), r)
	}
}

func TestRecordWithoutFileIsNoop(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(ResultsEnv, "")
	t.Chdir(dir)
	if err := Record("BenchmarkA", map[string]float64{"ms": 1}); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("wrote %v without %s", ents, ResultsEnv)
	}
	if r, err := ReadResults(filepath.Join(dir, "missing.json")); err != nil || len(r) != 0 {
		t.Errorf("missing file: %v, %v; want no figures, no error", r, err)
	}
	os.WriteFile(filepath.Join(dir, "bad.json"), []byte("{"), 0o644)
	if _, err := ReadResults(filepath.Join(dir, "bad.json")); err == nil {
		t.Error("a corrupt file read without an error")
	}
}
