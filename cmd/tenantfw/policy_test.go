package main

import "testing"

func TestPolicyBadInput(t *testing.T) {
	checkRefused(t, []refusal{
		{"policy unknown tenant", []string{"policy", "set", "--tenant", "9", "--inbound", "allow"}, 1, "unknown tenant"},
		{"policy bad value", []string{"policy", "set", "--tenant", "7", "--inbound", "open"}, 1, "--inbound open"},
	})
}
