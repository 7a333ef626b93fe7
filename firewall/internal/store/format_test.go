package store

import (
	"encoding/json"
	"net/netip"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/tenantnet/tenantnet/policy"
)

// TestOnDiskFormat pins the records' encoding: a state directory written
// by an older build must open unchanged, and records written now must
// read the same in it.
func TestOnDiskFormat(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tn := Tenant{ID: 7, Name: "acme", Inbound: policy.ActionDeny, Outbound: policy.ActionAllow, Prefixes: []netip.Prefix{netip.MustParsePrefix("2001:db8:7::/48")}}
	p := Port{Ifname: "tnw1", Tenant: 7, Addrs: []netip.Prefix{netip.MustParsePrefix("2001:db8:7::5/128")}}
	r := policy.Rule{Tenant: 7, Dir: policy.DirIn, Proto: 6, PortLo: 443, PortHi: 443, Dst: netip.MustParsePrefix("2001:db8:7::5/128"), Action: policy.ActionAllow, Comment: "web"}
	err = s.Update(func(tx *Tx) error {
		if err := tx.PutTenant(tn); err != nil {
			return err
		}
		if err := tx.PutPort(p); err != nil {
			return err
		}
		r, err = tx.AddRule(r)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	raw := func(bucket, key []byte) (v string) {
		s.db.View(func(tx *bolt.Tx) error { v = string(tx.Bucket(bucket).Get(key)); return nil })
		return v
	}
	for _, c := range []struct {
		what      string
		got, want string
	}{
		{"tenant", raw(bTenants, be32(7)), `{"id":7,"name":"acme","inbound":2,"outbound":1,"prefixes":["2001:db8:7::/48"]}`},
		{"port", raw(bPorts, []byte("tnw1")), `{"ifname":"tnw1","tenant":7,"addrs":["2001:db8:7::5/128"]}`},
		{"rule", raw(bRules, dstKey(7, policy.DirIn, r.Dst, r.ID)), `{"id":1,"t":7,"d":1,"p":6,"lo":443,"hi":443,"dst":"2001:db8:7::5/128","a":1,"c":"web"}`},
	} {
		if c.got != c.want {
			t.Errorf("%s:\n got %s\nwant %s", c.what, c.got, c.want)
		}
	}
	// A tenant as an older build wrote it (by hand: json.Marshal and Put).
	old := `{"id":9,"inbound":1,"outbound":2}`
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bTenants).Put(be32(9), []byte(old)) }); err != nil {
		t.Fatal(err)
	}
	s.View(func(tx *Tx) error {
		got, err := tx.Tenant(9)
		if err != nil || got.ID != 9 || got.Inbound != policy.ActionAllow || got.Outbound != policy.ActionDeny || got.Prefixes != nil {
			t.Errorf("old tenant: %+v %v", got, err)
		}
		if ts, err := tx.Tenants(); err != nil || len(ts) != 2 || ts[0].Name != "acme" {
			t.Errorf("tenants: %+v %v", ts, err)
		}
		return nil
	})
}

// A store written before rules had owners gets tenantnetd's "same network"
// rules marked as its own on the first open, once; a tenant's rule with
// another comment stays the tenant's.
func TestOwnersMigrated(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	src := netip.MustParsePrefix("2001:db8:0:2::/64")
	var node, tenant policy.Rule
	err = s.Update(func(tx *Tx) error {
		if node, err = tx.AddRule(policy.Rule{Tenant: 7, Dir: policy.DirIn, Src: src, Action: policy.ActionAllow, Comment: legacyNodeComment}); err != nil {
			return err
		}
		tenant, err = tx.AddRule(policy.Rule{Tenant: 7, Dir: policy.DirIn, Proto: 6, PortLo: 22, PortHi: 22, Action: policy.ActionAllow, Comment: "same network? no, ssh"})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	// As the older build left it: no owner in the rules, no migration mark.
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bMeta).Delete(kOwners) }); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s, err = Open(dir); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.View(func(tx *Tx) error {
		if r, err := tx.Rule(node.ID); err != nil || r.Owner != policy.OwnerNode {
			t.Errorf("tenantnetd's legacy rule: %+v %v, want owner %s", r, err, policy.OwnerNode)
		}
		if r, err := tx.Rule(tenant.ID); err != nil || r.Owner != "" {
			t.Errorf("the tenant's rule: %+v %v, want no owner", r, err)
		}
		return nil
	})
}

// appendStoredRule must write what json.Marshal writes, byte for byte, or
// decline.
func FuzzEncodeRule(f *testing.F) {
	f.Add(uint32(1), uint32(7), uint8(1), uint8(6), uint16(443), uint16(443), "2001:db8:7::5/128", "", uint8(1), "web", "")
	f.Add(uint32(0xffffffff), uint32(1), uint8(2), uint8(0), uint16(0), uint16(0), "", "203.0.113.0/24", uint8(2), "a<b & \"c\"\n", "node")
	f.Add(uint32(5), uint32(3), uint8(1), uint8(17), uint16(0), uint16(9), "x", "y", uint8(0), "é\u2028", "\x7f")
	f.Fuzz(func(t *testing.T, id, tenant uint32, dir, proto uint8, lo, hi uint16, dst, src string, action uint8, comment, owner string) {
		s := storedRule{ID: id, Tenant: tenant, Dir: dir, Proto: proto, PortLo: lo, PortHi: hi, Dst: dst, Src: src,
			Action: policy.Action(action), Comment: comment, Owner: owner}
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got, ok := appendStoredRule(nil, &s); ok && string(got) != string(want) {
			t.Fatalf("appendStoredRule %s, json.Marshal %s", got, want)
		}
	})
}
