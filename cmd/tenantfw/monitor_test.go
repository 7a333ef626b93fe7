package main

import "testing"

func TestMonitorBadInput(t *testing.T) {
	checkRefused(t, []refusal{
		{"monitor bad reason", []string{"monitor", "--reason", "bored"}, 1, "--reason bored"},
	})
}
