package main

import "testing"

func TestUserUsage(t *testing.T) {
	checkCases(t, []cliCase{
		{"add without --network", []string{"user", "add", "--id", "alice"}, 2, "--network is required"},
		{"add without --id", []string{"user", "add", "--network", "acme"}, 2, "--id is required"},
		{"del without --id", []string{"user", "del"}, 2, "--id is required"},
		{"list with add's flag", []string{"user", "list", "--public-key", "k"}, 2, "unknown flag: --public-key"},
		{"add with a bad key", []string{"user", "add", "--id", "alice", "--network", "acme", "--public-key", "nope", "--socket", "$DIR/none.sock"}, 2, `--public-key "nope": not a WireGuard public key`},
		{"add with a bad id", []string{"user", "add", "--id", "a:b", "--network", "acme", "--socket", "$DIR/none.sock"}, 2, `--id: id "a:b": 1-63 characters`},
		{"add with a bad network", []string{"user", "add", "--id", "alice", "--network", "../etc", "--socket", "$DIR/none.sock"}, 2, `--network: id "../etc"`},
		{"rotate without a service", []string{"user", "add", "--id", "alice", "--network", "acme", "--rotate", "--socket", "$DIR/none.sock"}, 1, "is tenantnetd running?"},
	})
}
