package registry

import (
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tenantnet/tenantnet/internal/testutil"
)

func TestEtcd(t *testing.T) {
	url := testutil.StartEtcd(t)
	e, err := NewEtcd(EtcdConfig{Endpoints: []string{url}, Prefix: "/test"})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	store(t, e)
	if err := e.Publish("a", []byte("a"), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := e.Publish("b", []byte("b"), time.Second); err != nil {
		t.Fatal(err)
	}
	// b withdraws: its record and lease go.
	if err := e.Withdraw("b"); err != nil {
		t.Fatal(err)
	}
	ns, _ := e.Nodes()
	if len(ns) != 1 || ns[0].Name != "a" {
		t.Fatalf("after b withdrew: %+v", ns)
	}
}

func bg() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 10*time.Second)
}

func revision(t *testing.T, cli *clientv3.Client) int64 {
	t.Helper()
	c, cancel := bg()
	defer cancel()
	resp, err := cli.Get(c, "/nothing")
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}

// TestEtcdLease: one lease per node kept alive, a Put only when the
// record changes, and a lost lease (revoked, expired) or a record deleted
// behind the node's back is made again by the next Publish.
func TestEtcdLease(t *testing.T) {
	url := testutil.StartEtcd(t)
	e, err := NewEtcd(EtcdConfig{Endpoints: []string{url}, Prefix: "/lease"})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	cli := e.Client()
	get := func() (string, int64) {
		t.Helper()
		c, cancel := bg()
		defer cancel()
		resp, err := cli.Get(c, "/lease/nodes/n1")
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) == 0 {
			return "", 0
		}
		return string(resp.Kvs[0].Value), resp.Kvs[0].Lease
	}
	if err := e.Publish("n1", []byte("one"), 2*time.Second); err != nil {
		t.Fatal(err)
	}
	_, lease := get()
	rev := revision(t, cli)
	// Renewals of an unchanged record, and time past the lease's TTL
	// with no Publish at all: KeepAlive holds it, no revision is made.
	for range 5 {
		if err := e.Publish("n1", []byte("one"), 2*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(5 * time.Second)
	if v, l := get(); v != "one" || l != lease {
		t.Fatalf("after 5 s of keepalive: %q lease %x, want one, lease %x", v, l, lease)
	}
	if r := revision(t, cli); r != rev {
		t.Fatalf("unchanged record: revision %d -> %d", rev, r)
	}
	// A change is one Put, under the same lease.
	if err := e.Publish("n1", []byte("two"), 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if v, l := get(); v != "two" || l != lease || revision(t, cli) != rev+1 {
		t.Fatalf("changed record: %q lease %x revision %d, want two, lease %x, revision %d", v, l, revision(t, cli), lease, rev+1)
	}
	// The lease is lost (revoked here; an expiry during a partition is
	// the same to the node): the record goes with it, the next Publish
	// grants a new lease and puts it again.
	c, cancel := bg()
	defer cancel()
	if _, err := cli.Revoke(c, clientv3.LeaseID(lease)); err != nil {
		t.Fatal(err)
	}
	if v, _ := get(); v != "" {
		t.Fatalf("revoked lease: record still there (%q)", v)
	}
	if err := e.Publish("n1", []byte("two"), 2*time.Second); err != nil {
		t.Fatal(err)
	}
	v, l := get()
	if v != "two" || l == lease || l == 0 {
		t.Fatalf("after the lease loss: %q lease %x (old %x)", v, l, lease)
	}
	// Deleted (or replaced) behind its back: put again.
	if _, err := cli.Delete(c, "/lease/nodes/n1"); err != nil {
		t.Fatal(err)
	}
	if err := e.Publish("n1", []byte("two"), 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if v, l2 := get(); v != "two" || l2 != l {
		t.Fatalf("after a delete: %q lease %x, want two under %x", v, l2, l)
	}
	// Close: the keepalive ends, the record goes with its lease.
	e.Close()
	time.Sleep(4 * time.Second)
	cli2, err := clientv3.New(clientv3.Config{Endpoints: []string{url}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli2.Close()
	if resp, err := cli2.Get(c, "/lease/nodes/n1"); err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("after Close and the lease's TTL: %v %v", resp, err)
	}
}

// TestEtcdTLSRBAC: etcd with TLS, client certificates and RBAC as
// docs/operations.md sets it up. A node writes its own record and reads
// the whole prefix; its credentials write no other node's record (not
// even node10's, whose key node1's is a prefix of), no declaration,
// enrollment or revocation, and revoke no other node's lease. The
// operator writes declarations. A client without a certificate, or with
// one of another CA, gets nothing.
func TestEtcdTLSRBAC(t *testing.T) {
	g := testutil.StartEtcdGrid(t, "/tenantnet")
	n1, n2, n10 := g.Node("node1"), g.Node("node2"), g.Node("node10")
	open := func(tc *tls.Config) *Etcd {
		t.Helper()
		e, err := NewEtcd(EtcdConfig{Endpoints: []string{g.URL}, Prefix: g.Prefix, TLS: tc})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.Close() })
		return e
	}
	node1, node2, node10 := open(g.PKI.TLS(n1)), open(g.PKI.TLS(n2)), open(g.PKI.TLS(n10))
	op := open(g.PKI.TLS(g.Operator))
	if err := op.Declare("acme", []byte("spec")); err != nil {
		t.Fatalf("operator declares: %v", err)
	}
	if err := op.Enroll("node1", []byte("en")); err != nil {
		t.Fatalf("operator enrolls: %v", err)
	}
	if err := op.SetRevocations([]byte("rev")); err != nil {
		t.Fatalf("operator revokes: %v", err)
	}
	for _, e := range []*Etcd{node2, node10} {
		id := map[*Etcd]string{node2: "node2", node10: "node10"}[e]
		if err := e.Publish(id, []byte(id), 30*time.Second); err != nil {
			t.Fatalf("%s publishes its own record: %v", id, err)
		}
	}
	if err := node1.Publish("node1", []byte("node1"), 30*time.Second); err != nil {
		t.Fatalf("node1 publishes its own record: %v", err)
	}
	ns, err := node1.Nodes()
	if err != nil || len(ns) != 3 {
		t.Fatalf("node1 reads the records: %v %v", ns, err)
	}
	if ds, err := node1.Declared(); err != nil || len(ds) != 1 {
		t.Fatalf("node1 reads the declarations: %v %v", ds, err)
	}
	if es, err := node1.Enrollments(); err != nil || len(es) != 1 {
		t.Fatalf("node1 reads the enrollments: %v %v", es, err)
	}
	if r, err := node1.Revocations(); err != nil || string(r) != "rev" {
		t.Fatalf("node1 reads the revocations: %q %v", r, err)
	}
	denied := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, rpctypes.ErrPermissionDenied) {
			t.Errorf("node1's credentials: %s: %v, want permission denied", what, err)
		}
	}
	denied("publish node2's record", node1.Publish("node2", []byte("forged"), 30*time.Second))
	denied("publish node10's record", node1.Publish("node10", []byte("forged"), 30*time.Second))
	denied("publish node1x's record", node1.Publish("node1x", []byte("forged"), 30*time.Second))
	denied("withdraw node2", node1.Withdraw("node2"))
	denied("declare", node1.Declare("acme", []byte("forged")))
	denied("declare another network", node1.Declare("evil", []byte("forged")))
	denied("undeclare", node1.Undeclare("acme"))
	denied("enroll", node1.Enroll("node9", []byte("forged")))
	denied("unenroll", node1.Unenroll("node1"))
	denied("revocations", node1.SetRevocations([]byte("forged")))
	c, cancel := bg()
	defer cancel()
	cli := g.Client(n1)
	denied("put outside the prefix", func() error { _, err := cli.Put(c, "/elsewhere", "x"); return err }())
	// node2's lease is in its record's metadata, readable by all:
	// revoking it would delete node2's record.
	resp, err := cli.Get(c, g.Prefix+"/nodes/node2")
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatal(resp, err)
	}
	_, err = cli.Revoke(c, clientv3.LeaseID(resp.Kvs[0].Lease))
	denied("revoke node2's lease", err)
	if ns, _ := node2.Nodes(); len(ns) != 3 {
		t.Fatalf("records after node1's attempts: %v", ns)
	}
	for _, e := range []trustEntryCheck{{node1, "node2", "node2"}, {node1, "node10", "node10"}} {
		e.check(t)
	}
	if ds, _ := node2.Declared(); len(ds) != 1 || string(ds[0].Data) != "spec" {
		t.Fatalf("declarations after node1's attempts: %v", ds)
	}

	// No certificate, another CA's certificate, plaintext: nothing.
	other := testutil.NewPKI(t)
	for name, tc := range map[string]*tls.Config{
		"no client certificate": g.PKI.TLS(testutil.Cert{}),
		"another CA's certificate": func() *tls.Config {
			c := g.PKI.TLS(testutil.Cert{})
			c.Certificates = other.TLS(other.Issue("node1", false)).Certificates
			return c
		}(),
		"a server it does not know":     other.TLS(other.Issue("node1", false)),
		"plaintext to the TLS endpoint": nil,
	} {
		url := g.URL
		if tc == nil {
			url = strings.Replace(url, "https://", "http://", 1)
		}
		e, err := NewEtcd(EtcdConfig{Endpoints: []string{url}, Prefix: g.Prefix, TLS: tc})
		if err != nil {
			continue // refused at once: as good
		}
		if ns, err := e.Nodes(); err == nil {
			t.Errorf("%s: read %d records", name, len(ns))
		}
		if err := e.Publish("node1", []byte("forged"), 30*time.Second); err == nil {
			t.Errorf("%s: wrote node1's record", name)
		}
		e.Close()
	}
	ns, _ = node2.Nodes()
	for _, n := range ns {
		if n.Name == "node1" && string(n.Data) != "node1" {
			t.Fatalf("node1's record: %q", n.Data)
		}
	}
}

type trustEntryCheck struct {
	e          *Etcd
	name, want string
}

func (c trustEntryCheck) check(t *testing.T) {
	t.Helper()
	ns, err := c.e.Nodes()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range ns {
		if n.Name == c.name {
			if string(n.Data) != c.want {
				t.Errorf("%s's record: %q, want %q", c.name, n.Data, c.want)
			}
			return
		}
	}
	t.Errorf("%s's record is gone", c.name)
}

// TestEtcdPassword: user name and password over TLS (no client
// certificate); a wrong password gets nothing.
func TestEtcdPassword(t *testing.T) {
	pki := testutil.NewPKI(t)
	// Client certificates are not asked for here: the password is the
	// credential.
	url := testutil.StartEtcdWith(t, testutil.EtcdOptions{PKI: pki, PasswordOnly: true})
	admin, err := clientv3.New(clientv3.Config{Endpoints: []string{url}, TLS: pki.TLS(testutil.Cert{}), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	c, cancel := bg()
	defer cancel()
	for _, step := range []func() error{
		func() error { _, err := admin.UserAdd(c, "root", "rootpw"); return err },
		func() error { _, err := admin.UserGrantRole(c, "root", "root"); return err },
		func() error { _, err := admin.RoleAdd(c, "tenantnet-node-node1"); return err },
		func() error {
			_, err := admin.RoleGrantPermission(c, "tenantnet-node-node1", "/pw/", clientv3.GetPrefixRangeEnd("/pw/"), clientv3.PermissionType(clientv3.PermRead))
			return err
		},
		func() error {
			_, err := admin.RoleGrantPermission(c, "tenantnet-node-node1", "/pw/nodes/node1", "", clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := admin.UserAdd(c, "node1", "s3cret"); return err },
		func() error { _, err := admin.UserGrantRole(c, "node1", "tenantnet-node-node1"); return err },
		func() error { _, err := admin.AuthEnable(c); return err },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := admin.Get(c, "/pw/nodes/node1"); !errors.Is(err, rpctypes.ErrUserEmpty) && !errors.Is(err, rpctypes.ErrPermissionDenied) {
		t.Fatalf("no password with auth on: %v", err)
	}
	e, err := NewEtcd(EtcdConfig{Endpoints: []string{url}, Prefix: "/pw", TLS: pki.TLS(testutil.Cert{}), Username: "node1", Password: "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if err := e.Publish("node1", []byte("r"), 10*time.Second); err != nil {
		t.Fatalf("node1 with its password: %v", err)
	}
	if err := e.Publish("node2", []byte("r"), 10*time.Second); !errors.Is(err, rpctypes.ErrPermissionDenied) {
		t.Fatalf("node1 writes node2's record: %v", err)
	}
	bad, err := NewEtcd(EtcdConfig{Endpoints: []string{url}, Prefix: "/pw", TLS: pki.TLS(testutil.Cert{}), Username: "node1", Password: "guess"})
	if err == nil {
		if _, err := bad.Nodes(); err == nil {
			t.Fatal("a wrong password reads the registry")
		}
		bad.Close()
	}
}

// TestEtcdNOSPACE: with etcd out of space (its quota reached, the NOSPACE
// alarm raised) writes are refused but reads and lease keepalives go on:
// a node whose write fails keeps its last record, alive, visible to the
// others. Then the operator's way out (docs/operations.md): compact,
// defragment, disarm the alarm; writes work again.
func TestEtcdNOSPACE(t *testing.T) {
	g := testutil.StartEtcdGrid(t, "/tenantnet", "--quota-backend-bytes", "1048576")
	node1, err := NewEtcd(EtcdConfig{Endpoints: []string{g.URL}, Prefix: g.Prefix, TLS: g.PKI.TLS(g.Node("node1"))})
	if err != nil {
		t.Fatal(err)
	}
	defer node1.Close()
	node2, err := NewEtcd(EtcdConfig{Endpoints: []string{g.URL}, Prefix: g.Prefix, TLS: g.PKI.TLS(g.Node("node2"))})
	if err != nil {
		t.Fatal(err)
	}
	defer node2.Close()
	if err := node1.Publish("node1", []byte("first"), 3*time.Second); err != nil {
		t.Fatal(err)
	}
	root := g.Client(g.Root)
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// Fill it (another writer of the same etcd).
	val := strings.Repeat("x", 64<<10)
	full := false
	for i := 0; i < 200 && !full; i++ {
		_, err := root.Put(c, "/filler", val)
		if errors.Is(err, rpctypes.ErrNoSpace) {
			full = true
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if !full {
		t.Fatal("etcd never reached its quota")
	}
	// node1's record changes: the write is refused, with the reason.
	err = node1.Publish("node1", []byte("second"), 3*time.Second)
	if !errors.Is(err, rpctypes.ErrNoSpace) {
		t.Fatalf("publish on a full etcd: %v, want NOSPACE", err)
	}
	// An unchanged record is no write: no error.
	if err := node1.Publish("node1", []byte("first"), 3*time.Second); err != nil {
		t.Fatalf("unchanged record on a full etcd: %v", err)
	}
	// Past the lease's TTL twice: the keepalive holds node1's last
	// record, and node2 sees it.
	time.Sleep(7 * time.Second)
	ns, err := node2.Nodes()
	if err != nil || len(ns) != 1 || ns[0].Name != "node1" || string(ns[0].Data) != "first" {
		t.Fatalf("node2 reads node1's record on a full etcd: %v %v", ns, err)
	}
	// The operator's way out: compact to the current revision,
	// defragment, disarm. Then writes work.
	rev := revision(t, root)
	if _, err := root.Delete(c, "/filler"); err != nil && !errors.Is(err, rpctypes.ErrNoSpace) {
		t.Fatal(err)
	}
	if _, err := root.Compact(c, rev, clientv3.WithCompactPhysical()); err != nil {
		t.Fatalf("compact: %v", err)
	}
	if _, err := root.Defragment(c, g.URL); err != nil {
		t.Fatalf("defrag: %v", err)
	}
	alarms, err := root.AlarmList(c)
	if err != nil || len(alarms.Alarms) == 0 {
		t.Fatalf("alarm list: %v %v", alarms, err)
	}
	for _, a := range alarms.Alarms {
		if _, err := root.AlarmDisarm(c, (*clientv3.AlarmMember)(a)); err != nil {
			t.Fatalf("alarm disarm: %v", err)
		}
	}
	if err := node1.Publish("node1", []byte("second"), 3*time.Second); err != nil {
		t.Fatalf("publish after the alarm is disarmed: %v", err)
	}
}
