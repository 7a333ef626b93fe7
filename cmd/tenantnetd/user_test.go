package main

import "testing"

func TestUserUsage(t *testing.T) {
	checkCases(t, []cliCase{
		{"add without --network", []string{"user", "add", "--id", "alice"}, 2, "--network is required"},
		{"add without --id", []string{"user", "add", "--network", "acme"}, 2, "--id is required"},
		{"del without --id", []string{"user", "del"}, 2, "--id is required"},
		{"list with add's flag", []string{"user", "list", "--public-key", "k"}, 2, "unknown flag: --public-key"},
	})
}
