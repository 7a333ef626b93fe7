package config

// The registry section: where the grid registry is, and for etcd how the
// node proves who it is (a client certificate of the grid's private CA,
// or a user name and password) and how it knows it talks to the grid's
// etcd (the CA). Certificates and keys are read and checked when the
// configuration is, so a wrong path, a key of another certificate or an
// expired certificate is an error at start with the field's name, not a
// "bad certificate" from etcd later.

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/tenantnet/tenantnet/registry"
)

// Registry says where the grid registry lives.
type Registry struct {
	Type      string   `yaml:"type"` // file or etcd
	Dir       string   `yaml:"dir"`  // file
	Endpoints []string `yaml:"endpoints"`
	Prefix    string   `yaml:"prefix"` // etcd key prefix, /tenantnet by default
	// TLS to etcd (https:// endpoints): the CA and this node's client
	// certificate. With etcd's --client-cert-auth the certificate's
	// common name is the etcd user, whose role decides what it may write.
	TLS *RegistryTLS `yaml:"tls"`
	// Username and the file holding its password (0600; not inline, as
	// configuration files are often world-readable): etcd's password
	// authentication, over https only.
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
}

// RegistryTLS is the registry's TLS: files in PEM.
type RegistryTLS struct {
	// CA verifies etcd's server certificate (empty: the system's roots);
	// it must also have signed Cert (a file may hold several CAs).
	CA string `yaml:"ca"`
	// Cert and Key are this node's client certificate and its key.
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// ServerName is the name etcd's certificate must carry (default: the
	// endpoint's host).
	ServerName string `yaml:"server_name"`
}

// validate checks the section; for etcd it reads and checks the
// certificates and the password file.
func (r *Registry) validate() error {
	switch r.Type {
	case "file":
		if r.TLS != nil || r.Username != "" || r.PasswordFile != "" {
			return &FieldError{Field: "registry", Msg: "tls, username and password_file are for type etcd"}
		}
		return nil
	case "etcd":
	default:
		return &FieldError{"registry.type", r.Type, "want file or etcd"}
	}
	if len(r.Endpoints) == 0 {
		return &FieldError{Field: "registry.endpoints", Msg: "etcd needs at least one endpoint (https://host:2379)"}
	}
	scheme := ""
	for i, e := range r.Endpoints {
		f := fmt.Sprintf("registry.endpoints[%d]", i)
		u, err := url.Parse(e)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" || u.Port() == "" || (u.Path != "" && u.Path != "/") {
			return &FieldError{f, e, "want https://host:port (or http:// without tls)"}
		}
		if scheme != "" && u.Scheme != scheme {
			return &FieldError{f, e, "all endpoints http:// or all https://"}
		}
		scheme = u.Scheme
	}
	if r.Prefix != "" && (!strings.HasPrefix(r.Prefix, "/") || strings.ContainsAny(r.Prefix, " \t\n")) {
		return &FieldError{"registry.prefix", r.Prefix, "an etcd key prefix starting with /"}
	}
	if (r.Username == "") != (r.PasswordFile == "") {
		return &FieldError{Field: "registry.username", Msg: "username and password_file go together"}
	}
	if scheme == "http" {
		switch {
		case r.TLS != nil:
			return &FieldError{Field: "registry.tls", Msg: "needs https:// endpoints"}
		case r.Username != "":
			return &FieldError{Field: "registry.username", Msg: "a password over http:// travels in plaintext: use https:// endpoints"}
		}
		return nil
	}
	if r.PasswordFile != "" {
		if _, err := r.password(); err != nil {
			return err
		}
	}
	_, err := r.tlsConfig()
	return err
}

func (r *Registry) password() (string, error) {
	if !strings.HasPrefix(r.PasswordFile, "/") {
		return "", &FieldError{"registry.password_file", r.PasswordFile, "must be an absolute path"}
	}
	b, err := os.ReadFile(r.PasswordFile)
	if err != nil {
		return "", &FieldError{"registry.password_file", r.PasswordFile, err.Error()}
	}
	p := strings.TrimRight(string(b), "\r\n")
	if p == "" {
		return "", &FieldError{"registry.password_file", r.PasswordFile, "empty"}
	}
	return p, nil
}

// tlsConfig is the client side of TLS to etcd (https endpoints): the CA,
// the client certificate checked against its key, its validity and the CA.
func (r *Registry) tlsConfig() (*tls.Config, error) {
	t := r.TLS
	if t == nil {
		t = &RegistryTLS{}
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	read := func(field, path string) ([]byte, error) {
		if !strings.HasPrefix(path, "/") {
			return nil, &FieldError{field, path, "must be an absolute path"}
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, &FieldError{field, path, err.Error()}
		}
		return b, nil
	}
	if t.CA != "" {
		b, err := read("registry.tls.ca", t.CA)
		if err != nil {
			return nil, err
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(b) {
			return nil, &FieldError{"registry.tls.ca", t.CA, "no PEM certificate in it"}
		}
	}
	if (t.Cert == "") != (t.Key == "") {
		return nil, &FieldError{Field: "registry.tls.cert", Msg: "cert and key go together"}
	}
	if t.Cert == "" {
		return c, nil
	}
	certPEM, err := read("registry.tls.cert", t.Cert)
	if err != nil {
		return nil, err
	}
	keyPEM, err := read("registry.tls.key", t.Key)
	if err != nil {
		return nil, err
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// "private key does not match public key", "failed to find any
		// PEM data": with both files named.
		return nil, &FieldError{"registry.tls.cert", t.Cert, fmt.Sprintf("with key %s: %v", t.Key, err)}
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, &FieldError{"registry.tls.cert", t.Cert, err.Error()}
	}
	now := time.Now()
	switch {
	case now.After(leaf.NotAfter):
		return nil, &FieldError{"registry.tls.cert", t.Cert, fmt.Sprintf("expired %s", leaf.NotAfter.UTC().Format(time.RFC3339))}
	case now.Before(leaf.NotBefore):
		return nil, &FieldError{"registry.tls.cert", t.Cert, fmt.Sprintf("not valid before %s (is the clock right?)", leaf.NotBefore.UTC().Format(time.RFC3339))}
	}
	if t.CA != "" {
		inter := x509.NewCertPool()
		for _, der := range pair.Certificate[1:] {
			if ic, err := x509.ParseCertificate(der); err == nil {
				inter.AddCert(ic)
			}
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: c.RootCAs, Intermediates: inter,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			var inv x509.CertificateInvalidError
			msg := fmt.Sprintf("not a client certificate of registry.tls.ca %s: %v", t.CA, err)
			if errors.As(err, &inv) && inv.Reason == x509.IncompatibleUsage {
				msg = "not for client authentication (extended key usage clientAuth)"
			}
			return nil, &FieldError{"registry.tls.cert", t.Cert, msg}
		}
	}
	c.Certificates = []tls.Certificate{pair}
	return c, nil
}

// EtcdConfig is what the etcd backend needs: endpoints, prefix, and the
// TLS configuration and password read from their files.
func (r *Registry) EtcdConfig() (registry.EtcdConfig, error) {
	ec := registry.EtcdConfig{Endpoints: r.Endpoints, Prefix: r.Prefix, Username: r.Username}
	if r.Type != "etcd" || len(r.Endpoints) == 0 || !strings.HasPrefix(r.Endpoints[0], "https://") {
		return ec, nil
	}
	var err error
	if ec.TLS, err = r.tlsConfig(); err != nil {
		return ec, err
	}
	if r.PasswordFile != "" {
		if ec.Password, err = r.password(); err != nil {
			return ec, err
		}
	}
	return ec, nil
}

// Open opens the registry the section names.
func (r *Registry) Open() (registry.Registry, error) {
	ec, err := r.EtcdConfig()
	if err != nil {
		return nil, err
	}
	return registry.Open(r.Type, r.Dir, ec)
}
