package main

import "testing"

func TestCleanupUsage(t *testing.T) {
	checkCases(t, []cliCase{
		{"a client flag", []string{"cleanup", "--socket", "/x"}, 2, "unknown flag: --socket"},
		{"an argument", []string{"cleanup", "all"}, 2, `unexpected argument "all"`},
		{"no config", []string{"cleanup", "--config", "$DIR/none.yaml", "--purge-state"}, 1, "none.yaml"},
	})
}
