package main

import (
	"bytes"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tenantnet/tenantnet/api"
	"github.com/tenantnet/tenantnet/ipam"
)

func TestIPv4Usage(t *testing.T) {
	checkCases(t, []cliCase{
		{"buy without --network", []string{"ipv4", "buy"}, 2, "--network is required"},
		{"buy an IPv6 address", []string{"ipv4", "buy", "--network", "acme", "--address", "2001:db8::1"}, 2, `--address "2001:db8::1": want an IPv4 address`},
		{"release without --address", []string{"ipv4", "release"}, 2, "--address is required"},
		{"expose without --to", []string{"expose", "--network", "acme", "--ipv4", "203.0.113.9", "--port", "443", "--proto", "tcp"}, 2, "--to is required"},
		{"expose port 0", []string{"expose", "--network", "acme", "--ipv4", "203.0.113.9", "--port", "0", "--to", "w", "--proto", "tcp"}, 2, "--port 0: want 1..65535"},
		{"expose port 70000", []string{"expose", "--network", "acme", "--ipv4", "203.0.113.9", "--port", "70000", "--to", "w", "--proto", "tcp"}, 2, "--port 70000"},
		{"expose sctp", []string{"expose", "--network", "acme", "--ipv4", "203.0.113.9", "--port", "1", "--to", "w", "--proto", "sctp"}, 2, `--proto "sctp"`},
		{"expose v3", []string{"expose", "--network", "acme", "--ipv4", "203.0.113.9", "--port", "1", "--to", "w", "--proto", "tcp", "--proxy-protocol", "v3"}, 2, `--proxy-protocol "v3"`},
		{"unexpose without --proto", []string{"unexpose", "--ipv4", "203.0.113.9", "--port", "1"}, 2, "--proto is required"},
		{"buy without a service", []string{"ipv4", "buy", "--network", "acme", "--socket", "$DIR/none.sock"}, 1, "is tenantnetd running?"},
	})
}

// fakeV4 answers the IPv4 endpoints; the rest of api.Node is not called.
type fakeV4 struct{ api.Node }

func (fakeV4) BuyIPv4(network string, addr netip.Addr, node string) (api.IPv4Info, bool, error) {
	return api.IPv4Info{Address: netip.MustParseAddr("203.0.113.9"), Network: network, State: "in use", On: "uplink eth0"}, true, nil
}
func (fakeV4) IPv4() ([]api.IPv4Info, error) {
	return []api.IPv4Info{{Address: netip.MustParseAddr("203.0.113.9"), Network: "acme", State: "in use", On: "uplink eth0"},
		{Address: netip.MustParseAddr("203.0.113.10"), State: "quarantined until 2026-12-02T20:00:00Z", On: "-"}}, nil
}
func (fakeV4) Exposures() ([]api.ExposureInfo, error) {
	e := ipam.Exposure{Network: "acme", Proto: "tcp", Addr: netip.MustParseAddr("203.0.113.9"), Port: 443,
		Target: netip.MustParseAddrPort("[2001:db8:101:1::10]:8443"), ProxyProtocol: "v2"}
	u := e
	u.Proto, u.ProxyProtocol = "udp", "none"
	return []api.ExposureInfo{
		{Exposure: e, Served: true, Stats: &api.ExposureStats{Active: 2, Total: 7, Refused: map[string]uint64{"mapping_cap": 1, "dial": 2}, BytesIn: 100, BytesOut: 2000, DialErrors: 2}},
		{Exposure: u, Error: "not served: no proxy runner"},
	}, nil
}

func TestIPv4Output(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: api.Handler(fakeV4{})}
	go srv.Serve(ln)
	defer srv.Close()
	run := func(args ...string) string {
		t.Helper()
		var o, e bytes.Buffer
		if code := Main(append(args, "--socket", sock), &o, &e); code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, e.String())
		}
		return o.String()
	}
	if got := run("ipv4", "buy", "--network", "acme"); got != "203.0.113.9\n" {
		t.Fatalf("ipv4 buy printed %q, want the address alone", got)
	}
	got := run("ipv4", "list")
	for _, w := range []string{"ADDRESS       NETWORK  STATE", "203.0.113.9   acme     in use", "uplink eth0", "203.0.113.10  -        quarantined until 2026-12-02T20:00:00Z"} {
		if !strings.Contains(got, w) {
			t.Errorf("ipv4 list: no %q in\n%s", w, got)
		}
	}
	got = run("expose", "list")
	lines := strings.Split(strings.TrimSpace(got), "\n")
	if len(lines) != 3 || strings.Join(strings.Fields(lines[0]), " ") != "NETWORK PROTO LISTEN TARGET PP ACTIVE TOTAL REFUSED BYTES-IN BYTES-OUT SESSIONS DIAL-ERRORS" ||
		strings.Join(strings.Fields(lines[1]), " ") != "acme tcp 203.0.113.9:443 [2001:db8:101:1::10]:8443 v2 2 7 3 100 2000 - 2" ||
		!strings.Contains(lines[2], "not served: no proxy runner") {
		t.Fatalf("expose list:\n%s", got)
	}
}
