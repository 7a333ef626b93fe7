package main

import "testing"

func TestCheckBadInput(t *testing.T) {
	checkRefused(t, []refusal{
		{"check unknown tenant", []string{"check", "--tenant", "9", "--src", "::1", "--dst", "::2", "--dport", "1"}, 1, "unknown tenant"},
		{"check missing dport", []string{"check", "--tenant", "7", "--src", "::1", "--dst", "::2"}, 2, "--dport is required"},
	})
}
