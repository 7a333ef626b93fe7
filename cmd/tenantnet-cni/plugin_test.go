package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/tenantnet/tenantnet/api"
	"github.com/tenantnet/tenantnet/ipam"
)

// fakeNode is tenantnetd's API with networks and workloads in memory;
// the plugin's end-to-end behaviour against a real tenantnetd is in
// test/e2e (TestCNI). Methods the plugin never calls panic (nil Node).
type fakeNode struct {
	api.Node
	mu        sync.Mutex
	networks  []string
	workloads map[string]api.WorkloadInfo
	deleted   []string
}

func (f *fakeNode) Networks() ([]api.NetworkInfo, error) {
	var ns []api.NetworkInfo
	for _, n := range f.networks {
		ns = append(ns, api.NetworkInfo{Network: ipam.Network{ID: n}})
	}
	return ns, nil
}

func (f *fakeNode) Workloads() ([]api.WorkloadInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ws []api.WorkloadInfo
	for _, w := range f.workloads {
		ws = append(ws, w)
	}
	return ws, nil
}

func (f *fakeNode) DeleteWorkload(id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.workloads[id]; !ok {
		return fmt.Errorf("workload %s: %w", id, ipam.ErrNotFound)
	}
	delete(f.workloads, id)
	f.deleted = append(f.deleted, id)
	return nil
}

func (f *fakeNode) AddWorkload(id, network, nsPath, ifname string) (api.WorkloadInfo, bool, error) {
	if !slices.Contains(f.networks, network) {
		return api.WorkloadInfo{}, false, fmt.Errorf("network %s: %w", network, ipam.ErrNotFound)
	}
	return api.WorkloadInfo{}, false, errors.New("the fake attaches nothing")
}

func serve(t *testing.T, f *fakeNode) string {
	sock := filepath.Join(t.TempDir(), "api.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: api.Handler(f)}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return sock
}

func conf(sock, network string) []byte {
	return fmt.Appendf(nil, `{"cniVersion":"1.0.0","name":"tn","type":"tenantnet-cni","network":%q,"api_socket":%q}`, network, sock)
}

func code(t *testing.T, err error) uint {
	t.Helper()
	if err == nil {
		return 0
	}
	var e *types.Error
	if !errors.As(err, &e) {
		t.Fatalf("%v: not a CNI error (%T)", err, err)
	}
	return e.Code
}

// The error codes a runtime sees: 7 for a configuration without a
// network or naming one the node lacks, 6 for one that is not JSON, 4
// for an interface name the kernel refuses, 8 for a missing namespace,
// 11 while tenantnetd does not answer (the runtime may retry), and DEL
// of a workload tenantnetd does not have succeeds (it can be repeated)
// but not while tenantnetd is unreachable (its port would stay).
func TestErrorCodes(t *testing.T) {
	f := &fakeNode{networks: []string{"acme"}, workloads: map[string]api.WorkloadInfo{}}
	sock := serve(t, f)
	gone := filepath.Join(t.TempDir(), "none.sock")
	args := func(stdin []byte) *skel.CmdArgs {
		return &skel.CmdArgs{ContainerID: "c0ffee", Netns: "/proc/self/ns/net", IfName: "eth0", StdinData: stdin}
	}
	for _, c := range []struct {
		what string
		cmd  func(*skel.CmdArgs) error
		a    *skel.CmdArgs
		want uint
	}{
		{"ADD without network", cmdAdd, args([]byte(`{"cniVersion":"1.0.0","name":"tn","type":"tenantnet-cni"}`)), types.ErrInvalidNetworkConfig},
		{"ADD bad network id", cmdAdd, args(conf(sock, "a/b")), types.ErrInvalidNetworkConfig},
		{"ADD not JSON", cmdAdd, args([]byte(`{`)), types.ErrDecodingFailure},
		{"ADD unknown network", cmdAdd, args(conf(sock, "globex")), types.ErrInvalidNetworkConfig},
		{"ADD tenantnetd unreachable", cmdAdd, args(conf(gone, "acme")), types.ErrTryAgainLater},
		{"ADD bad ifname", cmdAdd, &skel.CmdArgs{ContainerID: "c", Netns: "/proc/self/ns/net", IfName: "a/b", StdinData: conf(sock, "acme")}, types.ErrInvalidEnvironmentVariables},
		{"ADD missing netns", cmdAdd, &skel.CmdArgs{ContainerID: "c", Netns: "/run/netns/tn-none-such", IfName: "eth0", StdinData: conf(sock, "acme")}, types.ErrInvalidNetNS},
		{"ADD tenantnetd refuses", cmdAdd, args(conf(sock, "acme")), types.ErrInternal},
		{"DEL never added", cmdDel, args(conf(sock, "acme")), 0},
		{"DEL without network", cmdDel, args([]byte(`{"cniVersion":"1.0.0","name":"tn","type":"tenantnet-cni"}`)), types.ErrInvalidNetworkConfig},
		{"DEL tenantnetd unreachable", cmdDel, args(conf(gone, "acme")), types.ErrTryAgainLater},
		{"CHECK unknown container", cmdCheck, args(conf(sock, "acme")), types.ErrUnknownContainer},
		{"STATUS ok", cmdStatus, args(conf(sock, "acme")), 0},
		{"STATUS unknown network", cmdStatus, args(conf(sock, "globex")), types.ErrPluginNotAvailable},
		{"STATUS tenantnetd unreachable", cmdStatus, args(conf(gone, "acme")), types.ErrPluginNotAvailable},
	} {
		if got := code(t, c.cmd(c.a)); got != c.want {
			t.Errorf("%s: code %d (%v), want %d", c.what, got, c.cmd(c.a), c.want)
		}
	}
}

// Workload ids fit tenantnetd's (a 64-hex container id does not), and
// differ per configuration, container and interface.
func TestWorkloadID(t *testing.T) {
	cid := "4b3c2a1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b"
	a := workloadID("tn", cid, "eth0")
	if err := ipam.ValidID(a); err != nil {
		t.Fatal(err)
	}
	if a != workloadID("tn", cid, "eth0") {
		t.Error("not deterministic")
	}
	for _, b := range []string{workloadID("tn2", cid, "eth0"), workloadID("tn", cid, "eth1"), workloadID("tn", cid[1:], "eth0")} {
		if a == b {
			t.Errorf("%s shared", a)
		}
	}
}

// GC removes this configuration's workloads that the runtime no longer
// has, and nothing else: not the valid ones, not another configuration's
// (another conflist on the same tenant network), not one made by hand
// with `tenantnetd workload add`.
func TestGC(t *testing.T) {
	live, stale, other := workloadID("tn", "live", "eth0"), workloadID("tn", "stale", "eth0"), workloadID("tn2", "x", "eth0")
	f := &fakeNode{networks: []string{"acme"}, workloads: map[string]api.WorkloadInfo{}}
	for _, id := range []string{live, stale, other, "web-1", "cni-by-hand"} {
		f.workloads[id] = api.WorkloadInfo{Workload: ipam.Workload{ID: id, Network: "acme"}}
	}
	sock := serve(t, f)
	stdin := fmt.Appendf(nil, `{"cniVersion":"1.1.0","name":"tn","type":"tenantnet-cni","network":"acme","api_socket":%q,
		"cni.dev/valid-attachments":[{"containerID":"live","ifname":"eth0"}]}`, sock)
	if err := cmdGC(&skel.CmdArgs{StdinData: stdin}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(f.deleted, []string{stale}) {
		t.Errorf("GC deleted %v, want only %s (live %s, other config %s, by hand web-1, cni-by-hand)", f.deleted, stale, live, other)
	}
}

// CHECK compares the namespace by identity: a workload recorded in
// another namespace fails, even under the same path (a path reused by
// a new namespace, a swapped sandbox), before anything inside is read.
func TestCheckNetnsIdentity(t *testing.T) {
	cid := "c0ffee"
	id := workloadID("tn", cid, "eth0")
	f := &fakeNode{networks: []string{"acme"}, workloads: map[string]api.WorkloadInfo{
		id: {Workload: ipam.Workload{ID: id, Network: "acme", Netns: "/proc/self/ns/net", NetnsID: ipam.NetnsID{Dev: 1, Ino: 2}}, Gateway: "fe80::1"},
	}}
	sock := serve(t, f)
	err := cmdCheck(&skel.CmdArgs{ContainerID: cid, Netns: "/proc/self/ns/net", IfName: "eth0", StdinData: conf(sock, "acme")})
	if code(t, err) != types.ErrInternal || !strings.Contains(err.Error(), "namespace") {
		t.Errorf("CHECK of a workload in another namespace: %v, want a namespace mismatch (999)", err)
	}
	// Another network than the configuration's fails too.
	err = cmdCheck(&skel.CmdArgs{ContainerID: cid, Netns: "/proc/self/ns/net", IfName: "eth0", StdinData: conf(sock, "globex")})
	if code(t, err) != types.ErrInternal || !strings.Contains(err.Error(), "network") {
		t.Errorf("CHECK with another network: %v, want a network mismatch (999)", err)
	}
}
