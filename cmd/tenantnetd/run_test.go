package main

import "testing"

func TestRunUsage(t *testing.T) {
	checkCases(t, []cliCase{
		{"a client flag", []string{"run", "--socket", "/x"}, 2, "unknown flag: --socket"},
		{"no config", []string{"run", "--config", "$DIR/none.yaml"}, 1, "none.yaml"},
	})
}
