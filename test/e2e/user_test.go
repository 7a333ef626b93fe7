package e2e

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/tenantnet/tenantnet/wg"
)

// TestUserAccess: a user's laptop (the "ext" namespace, on the internet)
// joins a tenant network with the wg-quick config tenantnetd hands out,
// reaches a workload, and is reached back; other tenants stay closed.
func TestUserAccess(t *testing.T) {
	n := newTopo(t)
	n.up(n.nl, "lo")
	d := nodeDaemon(t, n, fmt.Sprintf("users-%d", os.Getpid()))
	d.start()
	d.must("network", "add", "--id", "acme")
	d.must("network", "add", "--id", "globex")
	nsW := newWorkloadNS(t, "uw1")
	nsG := newWorkloadNS(t, "ug1")
	var w, g wlInfo
	jsonUnmarshal(d.must("workload", "add", "--id", "uw1", "--network", "acme", "--netns", "/run/netns/"+nsW.Name, "-o", "json"), &w)
	jsonUnmarshal(d.must("workload", "add", "--id", "ug1", "--network", "globex", "--netns", "/run/netns/"+nsG.Name, "-o", "json"), &g)
	listenTCP(t, nsW, "[::]:8080")
	listenTCP(t, nsG, "[::]:8080")

	conf := d.must("user", "add", "--id", "alice-laptop", "--network", "acme")
	wq := parseWGQuick(t, conf)
	priv, nodeKey, addr, ep, allowed := wq.privateKey, wq.peerKey, wq.address, wq.endpoint, wq.allowed[0]

	// The laptop: WireGuard configured from the file, in the ext namespace.
	dev := fmt.Sprintf("tu%d", os.Getpid()%100000)
	n.do(n.ext, func() error {
		dv, err := wg.Open(dev, priv, 0, 1420, slog.Default())
		if err != nil {
			return err
		}
		t.Cleanup(func() { dv.Close() })
		if _, err := dv.SetPeers([]wg.Peer{{PublicKey: nodeKey, Endpoint: ep, AllowedIPs: []netip.Prefix{allowed}, Keepalive: 25 * time.Second}}); err != nil {
			return err
		}
		for _, c := range [][]string{{"addr", "add", addr.String(), "dev", dev, "nodad"}, {"route", "add", allowed.String(), "dev", dev}} {
			if out, err := exec.Command("ip", c...).CombinedOutput(); err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
		}
		return nil
	})
	var last error
	for i := 0; i < 30; i++ {
		if last = dialTCP(n.ext, fmt.Sprintf("[%s]:8080", w.Addr), time.Second); last == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if last != nil {
		t.Fatalf("laptop -> workload over user access: %v", last)
	}
	// Back: the workload reaches the laptop (proxy NDP on the bridge, a
	// /128 route through WireGuard).
	listenTCP(t, n.ext, fmt.Sprintf("[%s]:9090", addr.Addr()))
	if err := dialTCP(nsW, fmt.Sprintf("[%s]:9090", addr.Addr()), 3*time.Second); err != nil {
		t.Errorf("workload -> laptop: %v", err)
	}
	// Another tenant's workload is not reachable through acme's access.
	if dialTCP(n.ext, fmt.Sprintf("[%s]:8080", g.Addr), time.Second) == nil {
		t.Error("the acme user reached a globex workload")
	}
	if out := d.must("user", "list"); !strings.Contains(out, "alice-laptop") {
		t.Errorf("user list: %s", out)
	}
	// Adding alice again never silently replaces her key (that would
	// lock her laptop out): the same key is fine, no key or another key
	// is refused naming her, --rotate replaces it.
	pub := priv.PublicKey().String()
	userKey := func() string {
		var us []struct {
			ID        string `json:"id"`
			PublicKey string `json:"public_key"`
		}
		d.jsonOut(&us, "user", "list")
		for _, u := range us {
			if u.ID == "alice-laptop" {
				return u.PublicKey
			}
		}
		return ""
	}
	other, _ := wgtypes.GeneratePrivateKey()
	for _, args := range [][]string{
		{"user", "add", "--id", "alice-laptop", "--network", "acme"},
		{"user", "add", "--id", "alice-laptop", "--network", "acme", "--public-key", other.PublicKey().String()},
	} {
		out, err := d.client(args...)
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(out, "user alice-laptop exists in network acme") || !strings.Contains(out, "--rotate") {
			t.Errorf("%v: %v %s; want exit 1 naming the user and --rotate", args, err, out)
		}
		if k := userKey(); k != pub {
			t.Fatalf("%v replaced alice's key: %s, was %s", args, k, pub)
		}
	}
	d.must("user", "add", "--id", "alice-laptop", "--network", "acme", "--public-key", pub)
	if out, err := d.client("user", "add", "--id", "bob-laptop", "--network", "acme", "--rotate"); err == nil || !strings.Contains(out, "user bob-laptop: not found: nothing to rotate") {
		t.Errorf("rotating a user that does not exist: %v %s", err, out)
	}
	rotated := parseWGQuick(t, d.must("user", "add", "--id", "alice-laptop", "--network", "acme", "--rotate"))
	if k := userKey(); k == pub || k != rotated.privateKey.PublicKey().String() || rotated.address != wq.address {
		t.Errorf("--rotate: key %s (was %s), address %s (was %s)", k, pub, rotated.address, wq.address)
	}
	d.must("user", "del", "--id", "alice-laptop")
}

// wgQuick is what a test needs of a wg-quick configuration.
type wgQuick struct {
	privateKey, peerKey wgtypes.Key
	address             netip.Prefix
	endpoint            netip.AddrPort
	allowed             []netip.Prefix
}

func parseWGQuick(t *testing.T, conf string) wgQuick {
	t.Helper()
	get := func(key string) string {
		for _, l := range strings.Split(conf, "\n") {
			if k, v, ok := strings.Cut(l, " = "); ok && k == key {
				return v
			}
		}
		t.Fatalf("wg-quick config without %s:\n%s", key, conf)
		return ""
	}
	var q wgQuick
	var err error
	if q.privateKey, err = wgtypes.ParseKey(get("PrivateKey")); err != nil {
		t.Fatal(err)
	}
	if q.peerKey, err = wgtypes.ParseKey(get("PublicKey")); err != nil {
		t.Fatal(err)
	}
	q.address = netip.MustParsePrefix(get("Address"))
	q.endpoint = netip.MustParseAddrPort(get("Endpoint"))
	for _, a := range strings.Split(get("AllowedIPs"), ",") {
		q.allowed = append(q.allowed, netip.MustParsePrefix(strings.TrimSpace(a)))
	}
	return q
}
