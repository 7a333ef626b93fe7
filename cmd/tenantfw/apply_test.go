package main

import "testing"

func TestApplyBadInput(t *testing.T) {
	checkRefused(t, []refusal{
		{"apply with one bad rule", []string{"apply", "-f", yamlFile(t, "tenants:\n  - tenant: 7\n    rules:\n      - {proto: tcp, port: 443, action: allow}\n      - {proto: tcp, port: 70000, action: allow}\n")}, 1, "tenant 7 rules[1]: port 70000"},
		{"apply unknown field", []string{"apply", "-f", yamlFile(t, "tenants:\n  - tenant: 7\n    rulez: []\n")}, 1, "field rulez not found"},
		{"apply unknown tenant", []string{"apply", "-f", yamlFile(t, "tenants:\n  - tenant: 9\n    rules:\n      - {proto: tcp, port: 443, action: allow}\n")}, 1, "tenant 9: unknown tenant"},
		{"apply duplicate in file", []string{"apply", "-f", yamlFile(t, "tenants:\n  - tenant: 7\n    rules:\n      - {proto: udp, port: 53, action: allow}\n      - {proto: udp, port: 53, action: deny}\n")}, 1, "conflicts with rule"},
		{"apply without file", []string{"apply"}, 2, "-f is required"},
	})
}
