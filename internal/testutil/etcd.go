package testutil

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"
)

// StartEtcd runs a real etcd on loopback for a test and returns its client
// URL; it is stopped at cleanup.
func StartEtcd(tb testing.TB) string {
	tb.Helper()
	return startEtcd(tb, nil, "127.0.0.1", freePort(), freePort(), EtcdOptions{})
}

func freePort() int {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// EtcdOptions are how a test's etcd runs.
type EtcdOptions struct {
	// PKI: etcd serves https with a certificate of it and requires
	// client certificates of it (--client-cert-auth); nil: plaintext.
	PKI *PKI
	// PasswordOnly: with PKI, etcd serves https but asks for no client
	// certificate (a trusted CA file alone would make it require one).
	PasswordOnly bool
	// Args are more etcd flags (--quota-backend-bytes ...).
	Args []string
	// ExtraHosts are more addresses etcd serves clients on (and its
	// certificate names): an IPv4 one for nodes that have only IPv4.
	ExtraHosts []string
}

// StartEtcdWith runs etcd on loopback as o says and returns its client URL.
func StartEtcdWith(tb testing.TB, o EtcdOptions) string {
	tb.Helper()
	return startEtcd(tb, nil, "127.0.0.1", freePort(), freePort(), o)
}

// StartEtcdInWith is StartEtcdIn as o says.
func StartEtcdInWith(tb testing.TB, ns *NetNS, host string, o EtcdOptions) string {
	tb.Helper()
	return startEtcd(tb, ns, host, 2379, 2380, o)
}

// StartEtcdIn runs etcd inside a namespace, listening on host (an address
// of that namespace), for nodes in other namespaces to reach.
func StartEtcdIn(tb testing.TB, ns *NetNS, host string) string {
	tb.Helper()
	return startEtcd(tb, ns, host, 2379, 2380, EtcdOptions{})
}

func startEtcd(tb testing.TB, ns *NetNS, host string, cport, pport int, o EtcdOptions) string {
	bin, err := exec.LookPath("etcd")
	if err != nil {
		tb.Fatalf("etcd is not installed (Debian package etcd-server; `sudo make deps` installs it)")
	}
	hostport := func(p int) string { return net.JoinHostPort(host, fmt.Sprint(p)) }
	client, peer := "http://"+hostport(cport), "http://"+hostport(pport)
	args := []string{"--data-dir", tb.TempDir(), "--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", "default=" + peer, "--name", "default"}
	listen := func(scheme string) string {
		urls := scheme + "://" + hostport(cport)
		for _, h := range o.ExtraHosts {
			urls += "," + scheme + "://" + net.JoinHostPort(h, fmt.Sprint(cport))
		}
		return urls
	}
	args[3] = listen("http")
	if o.PKI != nil {
		client = "https://" + hostport(cport)
		srv := o.PKI.Issue("etcd-server", true, append([]string{host, "localhost"}, o.ExtraHosts...)...)
		args[3], args[5] = listen("https"), client
		args = append(args, "--cert-file", srv.Cert, "--key-file", srv.Key)
		if !o.PasswordOnly {
			args = append(args, "--client-cert-auth", "--trusted-ca-file", o.PKI.CA)
		}
	}
	args = append(args, o.Args...)
	var cmd *exec.Cmd
	if ns != nil {
		cmd = exec.Command("nsenter", append([]string{"--net=/run/netns/" + ns.Name, bin}, args...)...)
	} else {
		cmd = exec.Command(bin, args...)
	}
	cmd.Env = os.Environ()
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	dial := func() error {
		c, err := net.DialTimeout("tcp", hostport(cport), time.Second)
		if err == nil {
			c.Close()
		}
		return err
	}
	for i := 0; i < 100; i++ {
		var err error
		if ns != nil {
			err = ns.Do(dial)
		} else {
			err = dial()
		}
		if err == nil {
			return client
		}
		time.Sleep(100 * time.Millisecond)
	}
	tb.Fatal("etcd did not start")
	return ""
}
