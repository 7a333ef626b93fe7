package node

import (
	"reflect"
	"testing"

	"github.com/tenantnet/tenantnet/config"
	"github.com/tenantnet/tenantnet/ipam"
	"github.com/tenantnet/tenantnet/registry"
)

func TestPlanDeclared(t *testing.T) {
	alice := registry.UserSpec{ID: "alice", Node: "self", PublicKey: "KA"}
	bob := registry.UserSpec{ID: "bob", Node: "other", PublicKey: "KB"}
	specs := []registry.NetworkSpec{
		{ID: "acme", Members: []string{"self", "other"}, MTU: 1380, Users: []registry.UserSpec{alice, bob}},
		{ID: "globex", Members: []string{"self"}},
		{ID: "initech", Members: []string{"other"}},
	}
	mine := map[string]registry.NetworkSpec{}
	for _, sp := range specs {
		if sp.HasMember("self") {
			mine[sp.ID] = sp
		}
	}
	tests := []struct {
		name     string
		complete bool
		nets     []ipam.Network
		users    []ipam.User
		want     declaredPlan
	}{{
		name:     "join both, write the user declared here",
		complete: true,
		want: declaredPlan{nets: []declaredNet{
			{id: "acme", join: true, mtu: 1380, users: []registry.UserSpec{alice}},
			{id: "globex", join: true, mtu: 1420},
		}},
	}, {
		name:     "joined already, the user up to date: nothing",
		complete: true,
		nets:     []ipam.Network{{ID: "acme", Declared: true}, {ID: "globex", Declared: true}},
		users:    []ipam.User{{ID: "alice", Network: "acme", PublicKey: "KA", Declared: true}},
		want:     declaredPlan{nets: []declaredNet{{id: "acme"}, {id: "globex"}}},
	}, {
		name:     "a user with another key, or not marked declared, is written again",
		complete: true,
		nets:     []ipam.Network{{ID: "acme", Declared: true}, {ID: "globex"}},
		users:    []ipam.User{{ID: "alice", Network: "acme", PublicKey: "old", Declared: true}},
		want:     declaredPlan{nets: []declaredNet{{id: "acme", users: []registry.UserSpec{alice}}, {id: "globex"}}},
	}, {
		name:     "leave what is no longer declared here; local networks and users stay",
		complete: true,
		nets: []ipam.Network{{ID: "acme", Declared: true}, {ID: "globex", Declared: true},
			{ID: "initech", Declared: true}, {ID: "hooli", Declared: true}, {ID: "local"}},
		users: []ipam.User{{ID: "alice", Network: "acme", PublicKey: "KA", Declared: true},
			{ID: "carol", Network: "acme", Declared: true}, {ID: "dave", Network: "acme"},
			{ID: "erin", Network: "initech", Declared: true}},
		want: declaredPlan{
			nets:      []declaredNet{{id: "acme"}, {id: "globex"}},
			dropUsers: []ipam.User{{ID: "carol", Network: "acme", Declared: true}, {ID: "erin", Network: "initech", Declared: true}},
			leave:     []string{"hooli", "initech"},
		},
	}, {
		name:     "an incomplete listing joins but leaves nothing",
		complete: false,
		nets:     []ipam.Network{{ID: "acme", Declared: true}, {ID: "initech", Declared: true}},
		users:    []ipam.User{{ID: "erin", Network: "initech", Declared: true}},
		want: declaredPlan{nets: []declaredNet{
			{id: "acme", users: []registry.UserSpec{alice}},
			{id: "globex", join: true, mtu: 1420},
		}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := planDeclared(mine, tt.complete, tt.nets, tt.users, "self", 1420)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("planDeclared:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestExitState(t *testing.T) {
	e := newExitState()
	e.learn(map[string]registry.NetworkSpec{"a": {ID: "a", Exit: "self"}, "b": {ID: "b", Exit: "n2"}, "c": {ID: "c"}}, true)
	dual, v4, home := selfAs(config.DualStack), selfAs(config.IPv4Only), selfAs(config.HomeNAT)
	v4.ExitTunnel = config.ExitTunnelWireGuard
	sit := selfAs(config.IPv4Only)
	sit.ExitTunnel = config.ExitTunnel6in4
	tests := []struct {
		id      string
		self    *config.Node
		role    exitRole
		outside string
	}{
		{"a", dual, exitHere, "exit"},
		{"a", v4, exitBadClass, "none: declared exit, but ipv4-only has no native IPv6"},
		{"b", dual, exitNone, "native"},
		{"b", v4, exitViaPeer, "none: exit n2 not reachable yet"},
		{"b", home, exitViaPeer, "none: exit n2 not reachable yet"},
		{"b", sit, exitVia6in4, "none: exit n2 not reachable yet"},
		{"a", sit, exitBadClass, "none: declared exit, but ipv4-only has no native IPv6"},
		{"c", dual, exitNone, "native"},
		{"c", v4, exitNone, "none: no exit declared"},
		{"unknown", v4, exitNone, "none: no exit declared"},
	}
	for _, tt := range tests {
		if got := e.role(tt.id, tt.self); got != tt.role {
			t.Errorf("role(%s, %s) = %v, want %v", tt.id, tt.self.Class, got, tt.role)
		}
		if got := e.outside(tt.id, tt.self); got != tt.outside {
			t.Errorf("outside(%s, %s) = %q, want %q", tt.id, tt.self.Class, got, tt.outside)
		}
	}
	e.via["b"] = "tg1abcd"
	if got := e.outside("b", v4); got != "via n2 over WireGuard" {
		t.Errorf("outside once routed = %q, want via n2 over WireGuard", got)
	}
	e.via["b"] = "tn6in4"
	if got := e.outside("b", sit); got != "via n2 over 6in4" {
		t.Errorf("outside once routed = %q, want via n2 over 6in4", got)
	}

	// An incomplete listing only adds; a complete one also forgets.
	e.learn(map[string]registry.NetworkSpec{"d": {ID: "d", Exit: "n3"}}, false)
	if len(e.exits) != 4 || e.exits["d"] != "n3" {
		t.Errorf("after an incomplete listing: %v", e.exits)
	}
	e.learn(map[string]registry.NetworkSpec{"d": {ID: "d", Exit: "n4"}}, true)
	if !reflect.DeepEqual(e.exits, map[string]string{"d": "n4"}) {
		t.Errorf("after a complete listing: %v", e.exits)
	}
}
