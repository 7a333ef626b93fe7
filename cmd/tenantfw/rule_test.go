package main

import "testing"

func TestRuleBadInput(t *testing.T) {
	checkRefused(t, []refusal{
		{"unknown tenant", []string{"rule", "add", "--tenant", "9", "--action", "allow"}, 1, "tenant 9: unknown tenant"},
		{"invalid prefix", []string{"rule", "add", "--tenant", "7", "--dst", "2001:db8::zz", "--action", "allow"}, 1, "--dst 2001:db8::zz"},
		{"host bits", []string{"rule", "add", "--tenant", "7", "--dst", "10.7.0.1/16", "--action", "allow"}, 1, "did you mean 10.7.0.0/16"},
		{"port 0", []string{"rule", "add", "--tenant", "7", "--proto", "tcp", "--port", "0", "--action", "allow"}, 1, "--port 0: port 0 is out of range"},
		{"port too big", []string{"rule", "add", "--tenant", "7", "--proto", "tcp", "--port", "65536", "--action", "allow"}, 1, "--port 65536"},
		{"inverted range", []string{"rule", "add", "--tenant", "7", "--proto", "tcp", "--port", "90-80", "--action", "allow"}, 1, "inverted"},
		{"port without tcp/udp", []string{"rule", "add", "--tenant", "7", "--port", "80", "--action", "allow"}, 1, "--port 80: ports need proto tcp or udp"},
		{"bad proto", []string{"rule", "add", "--tenant", "7", "--proto", "gre", "--action", "allow"}, 1, "--proto gre"},
		{"bad action", []string{"rule", "add", "--tenant", "7", "--action", "maybe"}, 1, "--action maybe"},
		{"duplicate", []string{"rule", "add", "--tenant", "7", "--proto", "tcp", "--port", "8080", "--dst", "2001:db8:7::10", "--action", "allow"}, 1, "duplicate of rule 1"},
		{"conflict", []string{"rule", "add", "--tenant", "7", "--proto", "tcp", "--port", "8080", "--dst", "2001:db8:7::10", "--action", "deny"}, 1, "conflicts with rule 1"},
		{"family mix", []string{"rule", "add", "--tenant", "7", "--dst", "10.7.0.0/16", "--src", "2001:db8::/32", "--action", "deny"}, 1, "--src 2001:db8::/32: address family"},
		{"del unknown id", []string{"rule", "del", "--id", "999"}, 1, "--id 999"},
		// Usage errors: exit 2.
		{"unknown flag", []string{"rule", "add", "--tenant", "7", "--action", "allow", "--bogus"}, 2, "unknown flag: --bogus"},
		{"missing tenant", []string{"rule", "add", "--action", "allow"}, 2, "--tenant is required"},
		{"missing action", []string{"rule", "add", "--tenant", "7"}, 2, "--action is required"},
		{"not a number", []string{"rule", "add", "--tenant", "seven", "--action", "allow"}, 2, "invalid argument"},
		{"bad output", []string{"rule", "list", "-o", "xml"}, 2, "--output"},
	})
}
