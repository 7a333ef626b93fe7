package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tenantnet/tenantnet/internal/testutil"
)

// TestRegistryTLS: the etcd section's certificates are read and checked
// when the configuration is: each mistake an operator makes is an error
// that names the field and says what is wrong.
func TestRegistryTLS(t *testing.T) {
	pki := testutil.NewPKI(t)
	node1 := pki.Issue("node1", false)
	node2 := pki.Issue("node2", false)
	other := testutil.NewPKI(t).Issue("node1", false)
	expired := pki.IssueValid("old", false, time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour))
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	os.WriteFile(pw, []byte("s3cret\n"), 0o600)
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o600)
	base := good + "registry: "
	tlsReg := func(ca, cert, key string) string {
		return base + "{type: etcd, endpoints: [\"https://[2001:db8::1]:2379\"], tls: {ca: " + ca + ", cert: " + cert + ", key: " + key + "}}\n"
	}
	n, err := Parse([]byte(tlsReg(pki.CA, node1.Cert, node1.Key)))
	if err != nil {
		t.Fatal(err)
	}
	ec, err := n.Registry.EtcdConfig()
	if err != nil || ec.TLS == nil || len(ec.TLS.Certificates) != 1 || ec.TLS.RootCAs == nil {
		t.Fatalf("etcd config: %+v %v", ec, err)
	}
	n, err = Parse([]byte(base + "{type: etcd, endpoints: [\"https://etcd1:2379\"], tls: {ca: " + pki.CA + "}, username: node1, password_file: " + pw + "}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if ec, err := n.Registry.EtcdConfig(); err != nil || ec.Password != "s3cret" || ec.Username != "node1" || len(ec.TLS.Certificates) != 0 {
		t.Fatalf("password: %+v %v", ec, err)
	}
	for _, c := range []struct{ yaml, want string }{
		{tlsReg("/nonexistent/ca.pem", node1.Cert, node1.Key), "registry.tls.ca /nonexistent/ca.pem: open /nonexistent/ca.pem: no such file"},
		{tlsReg(node1.Key, node1.Cert, node1.Key), "registry.tls.ca " + node1.Key + ": no PEM certificate in it"},
		{tlsReg("ca.pem", node1.Cert, node1.Key), "registry.tls.ca ca.pem: must be an absolute path"},
		{tlsReg(pki.CA, node1.Cert, "/nonexistent/key.pem"), "registry.tls.key /nonexistent/key.pem: open"},
		{tlsReg(pki.CA, node1.Cert, node2.Key), "private key does not match public key"},
		{tlsReg(pki.CA, node1.Key, node1.Key), "registry.tls.cert " + node1.Key + ": with key"},
		{tlsReg(pki.CA, other.Cert, other.Key), "not a client certificate of registry.tls.ca"},
		{tlsReg(pki.CA, expired.Cert, expired.Key), "registry.tls.cert " + expired.Cert + ": expired"},
		{base + "{type: etcd, endpoints: [\"https://h:2379\"], tls: {cert: " + node1.Cert + "}}\n", "registry.tls.cert: cert and key go together"},
		{base + "{type: etcd, endpoints: [\"http://h:2379\"], tls: {ca: " + pki.CA + "}}\n", "registry.tls: needs https:// endpoints"},
		{base + "{type: etcd, endpoints: [\"http://h:2379\"], username: u, password_file: " + pw + "}\n", "plaintext"},
		{base + "{type: etcd, endpoints: [\"https://h:2379\"], username: u}\n", "username and password_file go together"},
		{base + "{type: etcd, endpoints: [\"https://h:2379\"], username: u, password_file: " + empty + "}\n", "registry.password_file " + empty + ": empty"},
		{base + "{type: etcd, endpoints: [\"https://h:2379\"], username: u, password_file: /nonexistent}\n", "registry.password_file /nonexistent: open"},
		{base + "{type: etcd, endpoints: [\"h:2379\"]}\n", "registry.endpoints[0] h:2379: want https://host:port"},
		{base + "{type: etcd, endpoints: [\"https://h\"]}\n", "want https://host:port"},
		{base + "{type: etcd, endpoints: [\"https://a:2379\", \"http://b:2379\"]}\n", "registry.endpoints[1] http://b:2379: all endpoints http:// or all https://"},
		{base + "{type: etcd, endpoints: [\"https://a:2379\"], prefix: tenantnet}\n", "registry.prefix tenantnet"},
		{base + "{type: file, tls: {ca: " + pki.CA + "}}\n", "registry: tls, username and password_file are for type etcd"},
	} {
		_, err := Parse([]byte(c.yaml))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s\ngot %v, want %q", c.yaml, err, c.want)
		}
	}
}
