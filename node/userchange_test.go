package node

import (
	"errors"
	"strings"
	"testing"

	"github.com/tenantnet/tenantnet/ipam"
)

// An existing user's key is never replaced unless rotate says so.
func TestUserChange(t *testing.T) {
	users := []ipam.User{{ID: "alice", Network: "acme", PublicKey: "K1"}, {ID: "dec", Network: "acme", PublicKey: "K2", Declared: true}}
	cases := []struct {
		id, network, key string
		rotate           bool
		want             error // nil: allowed
		msg              string
	}{
		{"bob", "acme", "", false, nil, ""},
		{"alice", "acme", "K1", false, nil, ""},
		{"alice", "acme", "", true, nil, ""},
		{"alice", "acme", "K3", true, nil, ""},
		{"alice", "acme", "", false, ipam.ErrConflict, "user alice exists in network acme with key K1"},
		{"alice", "acme", "K3", false, ipam.ErrConflict, "with another key (K1): conflict; --rotate replaces it"},
		{"alice", "globex", "K1", false, ipam.ErrConflict, "user alice belongs to network acme"},
		{"alice", "globex", "", true, ipam.ErrConflict, "belongs to network acme"},
		{"dec", "acme", "", true, ipam.ErrConflict, "user dec is declared in the registry"},
		{"bob", "acme", "", true, ipam.ErrNotFound, "user bob: not found: nothing to rotate"},
	}
	for _, c := range cases {
		i := -1
		for j, u := range users {
			if u.ID == c.id {
				i = j
			}
		}
		err := userChange(users, i, c.id, c.network, c.key, c.rotate)
		if (c.want == nil) != (err == nil) || (c.want != nil && (!errors.Is(err, c.want) || !strings.Contains(err.Error(), c.msg))) {
			t.Errorf("%+v: %v, want %v %q", c, err, c.want, c.msg)
		}
	}
}
