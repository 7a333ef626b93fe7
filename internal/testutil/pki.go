package testutil

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// PKI is a private CA for a test (the grid's etcd CA): it issues server
// and client certificates into its directory.
type PKI struct {
	tb   testing.TB
	Dir  string
	CA   string // the CA certificate's file
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// NewPKI makes a CA in a fresh directory.
func NewPKI(tb testing.TB) *PKI {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tenantnet test etcd CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	p := &PKI{tb: tb, Dir: tb.TempDir(), cert: cert, key: key}
	p.CA = filepath.Join(p.Dir, "ca.pem")
	p.write(p.CA, "CERTIFICATE", der)
	return p
}

func (p *PKI) write(path, typ string, der []byte) {
	p.tb.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		p.tb.Fatal(err)
	}
}

// Cert is an issued certificate: its files.
type Cert struct{ Cert, Key string }

// Issue signs a certificate for name (its common name: the etcd user
// of a client certificate) valid for the hosts (IP addresses or DNS
// names); server: for a server, else for a client.
func (p *PKI) Issue(name string, server bool, hosts ...string) Cert {
	return p.IssueValid(name, server, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour), hosts...)
}

// IssueValid is Issue with a validity period.
func (p *PKI) IssueValid(name string, server bool, from, until time.Time, hosts ...string) Cert {
	p.tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		p.tb.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: name},
		NotBefore: from, NotAfter: until, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if server {
		// etcd's own certificate also serves its client side (a member
		// dialling its own gRPC gateway).
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, &key.PublicKey, p.key)
	if err != nil {
		p.tb.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		p.tb.Fatal(err)
	}
	c := Cert{Cert: filepath.Join(p.Dir, name+".pem"), Key: filepath.Join(p.Dir, name+"-key.pem")}
	p.write(c.Cert, "CERTIFICATE", der)
	p.write(c.Key, "PRIVATE KEY", kder)
	return c
}

// TLS is a client TLS configuration with c (zero: no client certificate)
// that trusts the CA.
func (p *PKI) TLS(c Cert) *tls.Config {
	p.tb.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(p.cert)
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if c.Cert != "" {
		pair, err := tls.LoadX509KeyPair(c.Cert, c.Key)
		if err != nil {
			p.tb.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg
}
