package main

import "testing"

func TestWorkloadUsage(t *testing.T) {
	checkCases(t, []cliCase{
		{"add with cleanup's flag", []string{"workload", "add", "--purge-state"}, 2, "unknown flag: --purge-state"},
		{"add with declare's flag", []string{"workload", "add", "--id", "w", "--network", "n", "--netns", "/x", "--exit", "n1"}, 2, "unknown flag: --exit"},
		{"add without --id", []string{"workload", "add", "--network", "acme", "--netns", "/run/netns/w"}, 2, "--id is required"},
		{"add without --network", []string{"workload", "add", "--id", "w", "--netns", "/run/netns/w"}, 2, "--network is required"},
		{"add without --netns", []string{"workload", "add", "--id", "w", "--network", "acme"}, 2, "give one of --netns and --tap"},
		{"add with --netns and --tap", []string{"workload", "add", "--id", "w", "--network", "acme", "--netns", "/x", "--tap", "t"}, 2, "give one of --netns and --tap"},
		{"--mac without --tap", []string{"workload", "add", "--id", "w", "--network", "acme", "--netns", "/x", "--mac", "02:00:00:00:00:01"}, 2, "are for --tap"},
		{"--owner not numbers", []string{"workload", "add", "--id", "w", "--network", "acme", "--tap", "t", "--owner", "bob"}, 2, "want UID[:GID]"},
		{"del without --id", []string{"workload", "del"}, 2, "--id is required"},
		{"del prints nothing", []string{"workload", "del", "--id", "w", "-o", "json"}, 2, "unknown shorthand flag: 'o'"},
		{"add without a service", []string{"workload", "add", "--id", "w", "--network", "acme", "--netns", "/run/netns/w", "--socket", "$DIR/none.sock"}, 1, "is tenantnetd running?"},
	})
}
