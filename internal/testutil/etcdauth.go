package testutil

import (
	"context"
	"net"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
)

// EtcdGrid is a grid's etcd set up as docs/operations.md says: TLS with
// client certificates of a private CA, authentication on, a root user,
// the grid operator (read-write over the prefix) and a role per node
// (read the prefix, write only its own record's key).
type EtcdGrid struct {
	tb       testing.TB
	URL      string
	PKI      *PKI
	Prefix   string
	Root     Cert
	Operator Cert
	// NS is the namespace etcd is reachable from (nil: this one):
	// clients of the test dial from there.
	NS *NetNS
}

// OperatorUser is the grid operator's etcd user (and certificate name).
const OperatorUser = "tenantnet-operator"

// StartEtcdGrid runs etcd on loopback with TLS and RBAC for the prefix.
func StartEtcdGrid(tb testing.TB, prefix string, args ...string) *EtcdGrid {
	tb.Helper()
	pki := NewPKI(tb)
	return SetupEtcdGrid(tb, StartEtcdWith(tb, EtcdOptions{PKI: pki, Args: args}), pki, prefix)
}

// SetupEtcdGrid sets up the users and roles of a grid on an etcd started
// with pki, and turns authentication on.
// ns (nil: this one) is where etcd is reachable from.
func SetupEtcdGrid(tb testing.TB, url string, pki *PKI, prefix string, ns ...*NetNS) *EtcdGrid {
	tb.Helper()
	g := &EtcdGrid{tb: tb, URL: url, PKI: pki, Prefix: prefix, Root: pki.Issue("root", false), Operator: pki.Issue(OperatorUser, false)}
	if len(ns) > 0 {
		g.NS = ns[0]
	}
	g.admin(func(c context.Context, cli *clientv3.Client) error {
		// Users without a password: the certificate's CN names them.
		noPW := &clientv3.UserAddOptions{NoPassword: true}
		for _, step := range []func() error{
			func() error { _, err := cli.UserAddWithOptions(c, "root", "", noPW); return err },
			func() error { _, err := cli.UserGrantRole(c, "root", "root"); return err },
			func() error { _, err := cli.RoleAdd(c, OperatorUser); return err },
			func() error {
				_, err := cli.RoleGrantPermission(c, OperatorUser, prefix+"/", clientv3.GetPrefixRangeEnd(prefix+"/"), clientv3.PermissionType(clientv3.PermReadWrite))
				return err
			},
			func() error { _, err := cli.UserAddWithOptions(c, OperatorUser, "", noPW); return err },
			func() error { _, err := cli.UserGrantRole(c, OperatorUser, OperatorUser); return err },
			func() error { _, err := cli.AuthEnable(c); return err },
		} {
			if err := step(); err != nil {
				return err
			}
		}
		return nil
	})
	return g
}

func (g *EtcdGrid) admin(f func(context.Context, *clientv3.Client) error) {
	g.tb.Helper()
	cli := g.client(g.Root)
	defer cli.Close()
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f(c, cli); err != nil {
		g.tb.Fatalf("etcd auth setup: %v", err)
	}
}

// Node adds node id's user and role (read <prefix>/, read-write the one
// key <prefix>/nodes/<id>: not a prefix, which would let node1 write
// node10's record) and issues its client certificate.
func (g *EtcdGrid) Node(id string) Cert {
	g.tb.Helper()
	role := "tenantnet-node-" + id
	g.admin(func(c context.Context, cli *clientv3.Client) error {
		if _, err := cli.RoleAdd(c, role); err != nil {
			return err
		}
		if _, err := cli.RoleGrantPermission(c, role, g.Prefix+"/", clientv3.GetPrefixRangeEnd(g.Prefix+"/"), clientv3.PermissionType(clientv3.PermRead)); err != nil {
			return err
		}
		if _, err := cli.RoleGrantPermission(c, role, g.Prefix+"/nodes/"+id, "", clientv3.PermissionType(clientv3.PermReadWrite)); err != nil {
			return err
		}
		if _, err := cli.UserAddWithOptions(c, id, "", &clientv3.UserAddOptions{NoPassword: true}); err != nil {
			return err
		}
		_, err := cli.UserGrantRole(c, id, role)
		return err
	})
	return g.PKI.Issue(id, false)
}

// Client is an etcd client with cert (zero: none), closed at cleanup.
func (g *EtcdGrid) Client(cert Cert) *clientv3.Client {
	g.tb.Helper()
	cli := g.client(cert)
	g.tb.Cleanup(func() { cli.Close() })
	return cli
}

func (g *EtcdGrid) client(cert Cert) *clientv3.Client {
	g.tb.Helper()
	cfg := clientv3.Config{Endpoints: []string{g.URL}, TLS: g.PKI.TLS(cert), DialTimeout: 5 * time.Second}
	if g.NS != nil {
		// The socket is made in etcd's namespace (and stays there).
		cfg.DialOptions = []grpc.DialOption{grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			var c net.Conn
			err := g.NS.Do(func() error {
				var err error
				c, err = (&net.Dialer{}).DialContext(ctx, "tcp", addr)
				return err
			})
			return c, err
		})}
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		g.tb.Fatal(err)
	}
	return cli
}

// YAML is a node configuration's registry section for cert.
func (g *EtcdGrid) YAML(cert Cert) string {
	return "{type: etcd, endpoints: [\"" + g.URL + "\"], prefix: " + g.Prefix + ", tls: {ca: " + g.PKI.CA + ", cert: " + cert.Cert + ", key: " + cert.Key + "}}"
}
