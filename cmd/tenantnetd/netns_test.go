package main

import "testing"

func TestNetnsUsage(t *testing.T) {
	checkCases(t, []cliCase{
		{"create without a name", []string{"netns", "create"}, 2, "netns create NAME"},
		{"create with two names", []string{"netns", "create", "a", "b"}, 2, "netns create NAME"},
		{"create takes no flags", []string{"netns", "create", "a", "--config", "/x"}, 2, "unknown flag: --config"},
		{"create a bad name", []string{"netns", "create", "../etc"}, 1, "../etc"},
		{"del without a name", []string{"netns", "del"}, 2, "netns del NAME"},
	})
}
