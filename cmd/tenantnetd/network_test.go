package main

import "testing"

func TestNetworkUsage(t *testing.T) {
	checkCases(t, []cliCase{
		{"add without --id", []string{"network", "add"}, 2, "--id is required"},
		{"add with an empty --id", []string{"network", "add", "--id", ""}, 2, "--id is required"},
		{"add with a bad mtu", []string{"network", "add", "--id", "acme", "--mtu", "big"}, 2, `invalid argument "big" for "--mtu"`},
		{"add with a bad id", []string{"network", "add", "--id", ".hidden", "--socket", "$DIR/none.sock"}, 2, `--id: id ".hidden"`},
		{"add with an mtu out of range", []string{"network", "add", "--id", "acme", "--mtu", "70000", "--socket", "$DIR/none.sock"}, 2, `--mtu 70000: must be 1280..9000`},
		{"add with a workload flag", []string{"network", "add", "--id", "acme", "--netns", "/run/netns/x"}, 2, "unknown flag: --netns"},
		{"del without --id", []string{"network", "del"}, 2, "--id is required"},
		{"rotate-key with a bad overlap", []string{"network", "rotate-key", "--id", "acme", "--overlap", "soon"}, 2, "--overlap"},
		{"declare without --id", []string{"network", "declare", "--members", "n1"}, 2, "--id is required"},
		{"declare with a bad --user", []string{"network", "declare", "--id", "acme", "--user", "alice"}, 2, `--user "alice": want ID:NODE:PUBKEY`},
		{"declare takes no --socket", []string{"network", "declare", "--id", "acme", "--socket", "/x"}, 2, "unknown flag: --socket"},
		{"undeclare without --id", []string{"network", "undeclare"}, 2, "--id is required"},
		{"declared without a config", []string{"network", "declared", "--config", "$DIR/none.yaml"}, 1, "none.yaml"},
		{"list without a service", []string{"network", "list", "--socket", "$DIR/none.sock"}, 1, "is tenantnetd running?"},
	})
}
