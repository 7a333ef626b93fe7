package kmatrix

import (
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
