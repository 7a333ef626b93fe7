package kmatrix

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// A failed test's log lines reach the summary printed last (a CI log
// shows only its tail).
func TestParseFailLog(t *testing.T) {
	out := "TNKERNEL 6.1.0\nTNPKG test_e2e.test\n=== RUN   TestX\n    x_test.go:12: boom\n--- FAIL: TestX (0.10s)\n--- PASS: TestY (0.10s)\nTNEND test_e2e.test 1\n"
	kernel, res, _ := Parse(out)
	if kernel != "6.1.0" || len(res) != 1 {
		t.Fatalf("kernel %q, results %+v", kernel, res)
	}
	r := res[0]
	if r.Pass != 1 || r.Fail != 1 || len(r.FailLog) != 1 || !strings.Contains(r.FailLog[0], "x_test.go:12: boom") {
		t.Fatalf("result %+v", r)
	}
}

// A test that fails and then passes when run again alone is reported as
// flaky, not failed; one that fails twice is a failure.
func TestParseRerun(t *testing.T) {
	flaky := "TNKERNEL 6.1.0\nTNPKG a.test\n--- PASS: TestY (0.10s)\n    x_test.go:12: boom\n--- FAIL: TestX (0.10s)\nTNRERUN a.test\n=== RUN   TestX\n--- PASS: TestX (0.10s)\nTNEND a.test 0\n"
	_, res, _ := Parse(flaky)
	if r := res[0]; r.Pass != 2 || r.Fail != 0 || len(r.Failed) != 0 || len(r.Flaky) != 1 || !strings.Contains(r.Flaky[0], "boom") || r.Err != "" {
		t.Fatalf("flaky: %+v", r)
	}
	failed := "TNKERNEL 6.1.0\nTNPKG a.test\n    x_test.go:12: boom\n--- FAIL: TestX (0.10s)\nTNRERUN a.test\n    x_test.go:12: boom again\n--- FAIL: TestX (0.10s)\nTNEND a.test 1\n"
	_, res, _ = Parse(failed)
	if r := res[0]; r.Fail != 1 || len(r.Failed) != 1 || len(r.FailLog) != 1 || !strings.Contains(r.FailLog[0], "boom again") {
		t.Fatalf("failed twice: %+v", r)
	}
}

// The VMs' init script reruns a package's failed top-level tests once,
// alone: run its loop under busybox sh on a fake test binary that fails
// its first run.
func TestInitScriptRerun(t *testing.T) {
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Skip("busybox (Debian busybox-static) not installed")
	}
	dir := t.TempDir()
	loop := initScript[strings.Index(initScript, "for t in *.test"):strings.Index(initScript, "poweroff")]
	loop = strings.ReplaceAll(loop, "/tmp/", dir+"/")
	fake := "#!/bin/sh\necho \"ARGS $*\"\nif [ ! -e " + dir + "/ran ]; then touch " + dir + "/ran; echo '--- PASS: TestY (0.1s)'; echo '--- FAIL: TestX (0.1s)'; echo '    --- FAIL: TestX/sub (0.1s)'; exit 1; fi\necho '--- PASS: TestX (0.1s)'\n"
	if err := os.WriteFile(filepath.Join(dir, "a.test"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bb, "sh", "-c", loop)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if !strings.Contains(string(out), "TNRERUN a.test") || !strings.Contains(string(out), "-test.run=^(TestX)$") || !strings.Contains(string(out), "TNEND a.test 0") {
		t.Fatalf("no rerun of TestX alone:\n%s", out)
	}
}

// A guest that stopped in the middle of a package (a kernel panic) or
// before a package began has not passed it: the package that began is a
// failure, and the results are not complete, so the harness boots again.
func TestParseGuestStopped(t *testing.T) {
	tests := map[string]string{"./loader": "loader.test", "./test/datapath": "test_datapath.test"}
	whole := "TNKERNEL 6.12\nTNPKG loader.test\n--- PASS: TestA (0.10s)\nTNEND loader.test 0\nTNPKG test_datapath.test\n--- PASS: TestB (0.10s)\nTNEND test_datapath.test 0\n"
	_, res, _ := Parse(whole)
	if !Complete(res, tests) {
		t.Fatalf("a whole run is not complete: %+v", res)
	}
	for _, r := range res {
		if r.Err != "" {
			t.Errorf("%s: %s", r.Package, r.Err)
		}
	}
	stopped := "TNKERNEL 6.12\nTNPKG loader.test\n--- PASS: TestA (0.10s)\nTNEND loader.test 0\nTNPKG test_datapath.test\n--- PASS: TestB (0.10s)\n[    2.08] Oops: int3: 0000 [#2] PREEMPT SMP NOPTI\n[    2.09] Kernel panic - not syncing: Fatal exception in interrupt\n"
	_, res, _ = Parse(stopped)
	if Complete(res, tests) {
		t.Error("a guest that panicked in test_datapath is complete")
	}
	if len(res) != 2 || res[0].Err != "" || !strings.Contains(res[1].Err, "stopped") {
		t.Errorf("results %+v: want loader passed, test_datapath failed as stopped", res)
	}
	_, res, _ = Parse("TNKERNEL 6.12\nTNPKG loader.test\nTNEND loader.test 0\n")
	if Complete(res, tests) {
		t.Error("a run without test_datapath is complete")
	}
}
