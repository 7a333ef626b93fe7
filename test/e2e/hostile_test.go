package e2e

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/tenantnet/tenantnet/registry"
	"github.com/tenantnet/tenantnet/trust"
	"github.com/tenantnet/tenantnet/wg"
)

// TestHostileRegistry: whoever can write the registry (its directory;
// etcd's root, over TLS with RBAC on) but holds neither the grid key nor a
// node's identity key gets nothing from node1: each hostile entry is
// rejected with its reason (logged, counted in
// tenantnet_registry_rejected_total) and node1's WireGuard peers, routes,
// rules, datapath routes, firewall tenants and rules and users stay
// exactly as they were. node9 is an enrolled node the attacker controls
// (its identity key is the test's).
func TestHostileRegistry(t *testing.T) {
	t.Run("file", func(t *testing.T) { hostileRegistry(t, "file") })
	t.Run("etcd", func(t *testing.T) { hostileRegistry(t, "etcd") })
}

// hostileStore is the registry as the attacker writes it, by the file
// registry's relative paths ("nodes/node9.json"; on etcd the key
// <prefix>/nodes/node9).
type hostileStore struct {
	t     *testing.T
	dir   string
	etcd  *clientv3.Client
	pfx   string
	batch []clientv3.Op
}

func (h *hostileStore) key(rel string) string { return h.pfx + "/" + strings.TrimSuffix(rel, ".json") }

func (h *hostileStore) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 30*time.Second)
}

func (h *hostileStore) read(rel string) ([]byte, error) {
	if h.etcd == nil {
		return os.ReadFile(filepath.Join(h.dir, rel))
	}
	c, cancel := h.ctx()
	defer cancel()
	resp, err := h.etcd.Get(c, h.key(rel))
	if err != nil {
		return nil, err
	}
	if len(resp.Kvs) == 0 {
		return nil, os.ErrNotExist
	}
	return resp.Kvs[0].Value, nil
}

func (h *hostileStore) write(rel string, data []byte) {
	h.t.Helper()
	if h.etcd == nil {
		if err := os.WriteFile(filepath.Join(h.dir, rel), data, 0o644); err != nil {
			h.t.Fatal(err)
		}
		return
	}
	h.do(clientv3.OpPut(h.key(rel), string(data)))
}

func (h *hostileStore) remove(rel string) {
	h.t.Helper()
	if h.etcd == nil {
		os.Remove(filepath.Join(h.dir, rel))
		return
	}
	h.do(clientv3.OpDelete(h.key(rel)))
}

// do runs op, or adds it to the batch (see many).
func (h *hostileStore) do(op clientv3.Op) {
	h.t.Helper()
	if h.batch != nil {
		h.batch = append(h.batch, op)
		return
	}
	c, cancel := h.ctx()
	defer cancel()
	if _, err := h.etcd.Do(c, op); err != nil {
		h.t.Fatal(err)
	}
}

// many runs f's writes in transactions of 100 operations (etcd's limit
// is 128 a transaction): ten thousand entries in seconds.
func (h *hostileStore) many(f func()) {
	h.t.Helper()
	if h.etcd == nil {
		f()
		return
	}
	h.batch = []clientv3.Op{}
	f()
	ops := h.batch
	h.batch = nil
	for len(ops) > 0 {
		n := min(len(ops), 100)
		c, cancel := h.ctx()
		_, err := h.etcd.Txn(c).Then(ops[:n]...).Commit()
		cancel()
		if err != nil {
			h.t.Fatal(err)
		}
		ops = ops[n:]
	}
}

func hostileRegistry(t *testing.T, backend string) {
	nodes, bin := newGrid(t, backend, 2, "max_declared_networks: 16")
	node1 := nodes[0]
	reg := &hostileStore{t: t, dir: node1.regDir}
	if node1.etcd != nil {
		// etcd's root: it may write every key, but holds no grid key.
		reg.etcd, reg.pfx = node1.etcd.Client(node1.etcd.Root), node1.etcd.Prefix
	}
	fw := &fwCLI{t: t, bin: buildBinary(t, "cmd/tenantfw"), nsName: node1.ns.Name, pin: node1.pin, state: node1.state}
	// The grid operator's commands (its credentials on etcd).
	cli := func(args ...string) string {
		t.Helper()
		return tenantnetdIn(t, node1.ns.Name, bin, append(args, "--config", node1.opCfg)...)
	}
	gridKey, err := trust.LoadKey(node1.gridKey)
	if err != nil {
		t.Fatal(err)
	}
	// Identities the test holds: node9 (the attacker's enrolled node),
	// node8 (revoked), node7 (expires at once), nodex (an exit that is
	// not running, whose name the attacker takes).
	ids := map[string]ed25519.PrivateKey{}
	enroll := func(id, prefix string, extra ...string) {
		pub, key, _ := ed25519.GenerateKey(nil)
		ids[id] = key
		cli(append([]string{"grid", "enroll", "--key", node1.gridKey, "--node", id, "--identity", trust.EncodePublicKey(pub),
			"--class", "dual-stack", "--prefix", prefix}, extra...)...)
	}
	enroll("node9", "2001:db8:109::/48")
	enroll("node8", "2001:db8:108::/48")
	enroll("nodex", "2001:db8:10a::/48", "--exit")

	for _, g := range nodes {
		g.d.must("network", "add", "--id", "acme")
	}
	cli("network", "declare", "--key", node1.gridKey, "--id", "decl", "--members", "node1,node2")
	cli("network", "declare", "--key", node1.gridKey, "--id", "outer", "--members", "node1,nodex", "--exit", "nodex")

	// node1's state as the kernel and the firewall have it.
	snapshot := func() string {
		t.Helper()
		var b strings.Builder
		// node1's devices (wg show all would list every wireguard-go
		// socket of the machine: they share /var/run/wireguard).
		for num := uint32(1); num <= 3; num++ {
			dev := wg.Name(num, node1.id)
			out, err := exec.Command("ip", "netns", "exec", node1.ns.Name, "wg", "show", dev, "dump").CombinedOutput()
			if err != nil {
				fmt.Fprintf(&b, "no device %s\n", dev)
				continue
			}
			for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				f := strings.Split(l, "\t")
				switch len(f) {
				case 8: // a peer: key, allowed IPs
					fmt.Fprintf(&b, "peer %s %s %s\n", dev, f[0], f[3])
				case 4: // the device: public key, port
					fmt.Fprintf(&b, "device %s %s %s\n", dev, f[1], f[2])
				}
			}
		}
		for _, c := range [][]string{{"-6", "route", "show", "table", "all"}, {"-6", "rule"}} {
			out, _ := exec.Command("ip", append([]string{"-n", node1.ns.Name}, c...)...).CombinedOutput()
			b.Write(out)
		}
		b.WriteString(fw.must("routes"))
		b.WriteString(fw.must("tenant", "list", "-o", "json"))
		b.WriteString(fw.must("rule", "list"))
		b.WriteString(node1.d.must("network", "list"))
		b.WriteString(node1.d.must("user", "list"))
		return b.String()
	}
	peers := func(s string) int { return strings.Count("\n"+s, "\npeer ") }
	retry(t, 60*time.Second, "node1 peers with node2 on acme and decl", func() error {
		if n := peers(snapshot()); n != 2 {
			return fmt.Errorf("%d peers", n)
		}
		return nil
	})
	// A few reconciles with nothing left to change.
	var before string
	retry(t, 30*time.Second, "node1 settles", func() error {
		a := snapshot()
		time.Sleep(3 * time.Second)
		if before = snapshot(); a != before {
			return fmt.Errorf("node1 still changes")
		}
		return nil
	})

	var node2Rec registry.NodeRecord
	b, err := reg.read("nodes/node2.json")
	if err == nil {
		err = trust.OpenJSON(b, trust.KindNodeRecord, nil, &node2Rec)
	}
	if err != nil {
		t.Fatalf("node2's record: %v", err)
	}
	node1Prefix := strings.Fields(node1.d.must("network", "list"))

	wgKey := func() string { k, _ := wgtypes.GeneratePrivateKey(); return k.PublicKey().String() }
	record := func(id, prefix, key string) registry.NodeRecord {
		return registry.NodeRecord{NodeID: id, Class: "dual-stack", Addresses: []netip.Addr{netip.MustParseAddr("2001:db8:ffff::99")},
			Networks: map[string]registry.NetworkRecord{
				"acme":  {Prefix: netip.MustParsePrefix(prefix), PublicKey: key, Port: 51820},
				"decl":  {Prefix: netip.MustParsePrefix(strings.Replace(prefix, ":1::", ":2::", 1)), PublicKey: wgKey(), Port: 51821, Declared: true},
				"outer": {Prefix: netip.MustParsePrefix(strings.Replace(prefix, ":1::", ":3::", 1)), PublicKey: wgKey(), Port: 51822, Declared: true},
			}}
	}
	signed := func(r registry.NodeRecord, key ed25519.PrivateKey) []byte {
		t.Helper()
		data, err := r.Sign(key, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	spec := func(sp registry.NetworkSpec, key ed25519.PrivateKey) []byte {
		t.Helper()
		p, _ := json.Marshal(sp)
		data, _ := json.Marshal(trust.Sign(key, trust.KindNetwork, p))
		return data
	}
	_, stranger, _ := ed25519.GenerateKey(nil)
	evil := registry.UserSpec{ID: "evil", Node: "node1", PublicKey: wgKey()}
	write := reg.write
	declBytes, _ := reg.read("networks/decl.json")
	node8Enrollment, _ := reg.read("enrollments/node8.json")
	// The node's log says each rejection once: look past what was there.
	logOffset := 0
	rejected := func(name, reason string) error {
		logb, _ := os.ReadFile(node1.d.logPath)
		for _, l := range strings.Split(string(logb[logOffset:]), "\n") {
			if strings.Contains(l, `"registry: rejected"`) && strings.Contains(l, `"name":"`+name+`"`) && strings.Contains(l, `"reason":"`+reason+`"`) {
				return nil
			}
		}
		return fmt.Errorf("no rejection of %s for %s in node1's log yet", name, reason)
	}

	for _, c := range []struct {
		name   string
		setup  func() // writes the hostile entries
		undo   func()
		reject string // the name in the registry
		reason string
	}{
		{name: "an unsigned record", reject: "node9", reason: "unsigned", setup: func() {
			p, _ := json.Marshal(record("node9", "2001:db8:109:1::/64", wgKey()))
			b, _ := json.Marshal(trust.Signed{Kind: trust.KindNodeRecord, Payload: p})
			write("nodes/node9.json", b)
		}},
		{name: "a record signed by an unenrolled key", reject: "intruder", reason: "not-enrolled", setup: func() {
			write("nodes/intruder.json", signed(record("intruder", "2001:db8:109:1::/64", wgKey()), stranger))
		}},
		{name: "a record signed by another key than its node's", reject: "node9", reason: "bad-signature", setup: func() {
			write("nodes/node9.json", signed(record("node9", "2001:db8:109:1::/64", wgKey()), stranger))
		}},
		{name: "a revoked node (its enrollment replayed)", reject: "node8", reason: "revoked", setup: func() {
			cli("grid", "revoke", "--key", node1.gridKey, "--node", "node8")
			write("enrollments/node8.json", node8Enrollment)
			write("nodes/node8.json", signed(record("node8", "2001:db8:108:1::/64", wgKey()), ids["node8"]))
		}, undo: func() { reg.remove("enrollments/node8.json") }},
		{name: "an expired enrollment", reject: "node7", reason: "enrollment-expired", setup: func() {
			enroll("node7", "2001:db8:107::/48", "--expires", "1s")
			time.Sleep(1500 * time.Millisecond)
			write("nodes/node7.json", signed(record("node7", "2001:db8:107:1::/64", wgKey()), ids["node7"]))
		}},
		{name: "a node id that is not its file's", reject: "node9", reason: "node-id-mismatch", setup: func() {
			write("nodes/node9.json", signed(record("node2", "2001:db8:109:1::/64", wgKey()), ids["node9"]))
		}},
		{name: "a claim on node2's /64", reject: "node9", reason: "prefix-not-enrolled", setup: func() {
			write("nodes/node9.json", signed(record("node9", node2Rec.Networks["acme"].Prefix.String(), wgKey()), ids["node9"]))
		}},
		{name: "a claim on node1's own /64", reject: "node9", reason: "prefix-not-enrolled", setup: func() {
			p := ""
			for _, f := range node1Prefix {
				if strings.HasSuffix(f, "::/64") && p == "" {
					p = f
				}
			}
			write("nodes/node9.json", signed(record("node9", p, wgKey()), ids["node9"]))
		}},
		{name: "a prefix outside the enrollment", reject: "node9", reason: "prefix-not-enrolled", setup: func() {
			write("nodes/node9.json", signed(record("node9", "2001:db8:ffff:1::/64", wgKey()), ids["node9"]))
		}},
		{name: "node2's WireGuard key", reject: "node9", reason: "duplicate-key", setup: func() {
			write("nodes/node9.json", signed(record("node9", "2001:db8:109:1::/64", node2Rec.Networks["acme"].PublicKey), ids["node9"]))
		}},
		{name: "an impersonated exit", reject: "nodex", reason: "bad-signature", setup: func() {
			write("nodes/nodex.json", signed(record("nodex", "2001:db8:10a:1::/64", wgKey()), ids["node9"]))
		}},
		{name: "an exit not enrolled as one", reject: "outer2", reason: "exit-not-enrolled", setup: func() {
			write("networks/outer2.json", spec(registry.NetworkSpec{ID: "outer2", Members: []string{"node2", "node9"}, Exit: "node9"}, gridKey))
		}},
		{name: "an unsigned declaration with the id of a local network", reject: "acme", reason: "unsigned", setup: func() {
			write("networks/acme.json", spec(registry.NetworkSpec{ID: "acme", Members: []string{"node1", "node9"}, Exit: "node9", Users: []registry.UserSpec{evil}}, nil))
		}},
		{name: "a signed declaration with the id of a local network", reject: "acme", reason: "network-id-local", setup: func() {
			write("networks/acme.json", spec(registry.NetworkSpec{ID: "acme", Members: []string{"node1", "node9"}, Users: []registry.UserSpec{evil}}, gridKey))
		}},
		{name: "users added by an unsigned declaration", reject: "decl", reason: "unsigned", setup: func() {
			write("networks/decl.json", spec(registry.NetworkSpec{ID: "decl", Members: []string{"node1", "node2"}, Users: []registry.UserSpec{evil}}, nil))
		}, undo: func() { write("networks/decl.json", declBytes) }},
		{name: "an oversized record", reject: "node9", reason: "too-big", setup: func() {
			write("nodes/node9.json", []byte(`{"kind":"node-record","payload":"`+strings.Repeat("A", registry.MaxRecordBytes)+`"}`))
		}},
		{name: "ten thousand declared networks", reject: "flood00000", reason: "too-many-declared", setup: func() {
			reg.many(func() {
				for i := range 10000 {
					write(fmt.Sprintf("networks/flood%05d.json", i), spec(registry.NetworkSpec{ID: fmt.Sprintf("flood%05d", i), Members: []string{"node1", "node9"}}, gridKey))
				}
			})
		}, undo: func() {
			reg.many(func() {
				for i := range 10000 {
					reg.remove(fmt.Sprintf("networks/flood%05d.json", i))
				}
			})
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			logb, _ := os.ReadFile(node1.d.logPath)
			logOffset = len(logb)
			c.setup()
			defer func() {
				if c.undo != nil {
					c.undo()
				}
				for _, rel := range []string{"nodes/node9.json", "nodes/intruder.json", "nodes/node8.json", "nodes/node7.json", "nodes/nodex.json",
					"networks/acme.json", "networks/outer2.json"} {
					reg.remove(rel)
				}
				time.Sleep(2 * time.Second)
			}()
			retry(t, 30*time.Second, "node1 rejects "+c.reject+" ("+c.reason+")", func() error { return rejected(c.reject, c.reason) })
			time.Sleep(3 * time.Second) // reconciles after the rejection
			if after := snapshot(); after != before {
				t.Errorf("node1 changed:\n--- before\n%s\n--- after\n%s", before, after)
			}
		})
	}
	if node1.etcd != nil {
		// On etcd the enrolled node the attacker controls has its own
		// credentials too: they write its record only.
		t.Run("node9's etcd credentials on node2's record and a declaration", func(t *testing.T) {
			cli9 := node1.etcd.Client(node1.etcd.Node("node9"))
			c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			for key, val := range map[string][]byte{
				"nodes/node2":   signed(record("node2", "2001:db8:109:1::/64", wgKey()), ids["node9"]),
				"nodes/node10":  signed(record("node10", "2001:db8:109:1::/64", wgKey()), ids["node9"]),
				"networks/decl": spec(registry.NetworkSpec{ID: "decl", Members: []string{"node1", "node2", "node9"}, Users: []registry.UserSpec{evil}}, nil),
				"revocations":   []byte("{}"),
			} {
				if _, err := cli9.Put(c, node1.etcd.Prefix+"/"+key, string(val)); !errors.Is(err, rpctypes.ErrPermissionDenied) {
					t.Errorf("node9's credentials put %s: %v, want permission denied", key, err)
				}
			}
			time.Sleep(3 * time.Second)
			if after := snapshot(); after != before {
				t.Errorf("node1 changed:\n--- before\n%s\n--- after\n%s", before, after)
			}
		})
	}
	// Counted, by reason.
	out, err := exec.Command("nsenter", "--net=/run/netns/"+node1.ns.Name, "curl", "-s", "http://127.0.0.1:19471/metrics").CombinedOutput()
	if err != nil {
		t.Fatalf("metrics: %v %s", err, out)
	}
	for _, reason := range []string{"unsigned", "not-enrolled", "bad-signature", "revoked", "enrollment-expired", "node-id-mismatch",
		"prefix-not-enrolled", "duplicate-key", "exit-not-enrolled", "network-id-local", "too-big", "too-many-declared"} {
		if !strings.Contains(string(out), `tenantnet_registry_rejected_total{reason="`+reason+`"}`) {
			t.Errorf("tenantnet_registry_rejected_total{reason=%q}: not in node1's metrics", reason)
		}
	}
	// And the honest grid still works: node2 is node1's peer on both networks.
	if n := peers(snapshot()); n != 2 {
		t.Errorf("after the hostile entries node1 has %d peers, want node2 on acme and decl", n)
	}
}
