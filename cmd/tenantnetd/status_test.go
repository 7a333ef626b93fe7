package main

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tenantnet/tenantnet/api"
	"github.com/tenantnet/tenantnet/loader"
)

func testStatus() api.Status {
	st := api.Status{NodeID: "node1", Class: "dual-stack", Networks: 2, Workloads: 1, FreeNets: 253, AttachMode: string(loader.ModeTCX),
		Uplinks: map[string]string{"eth1": string(loader.ModeXDPGeneric), "eth0": string(loader.ModeXDPDriver)}}
	st.Reconcile.Runs, st.Reconcile.Errors, st.Reconcile.Repairs = 12, 1, 0
	st.Reconcile.LastDuration, st.Reconcile.LastShallow, st.Reconcile.LastDeep = "3ms", "3ms", "41ms"
	st.Reconcile.LastError = "network globex: bridge tnb2: no such device"
	return st
}

func TestPrintStatus(t *testing.T) {
	empty := api.Status{NodeID: "node2", Class: "ipv4-only", AttachMode: string(loader.ModeLegacyTC), PortsOnLegacyTC: 1}
	for _, tc := range []struct {
		st   api.Status
		want string
	}{
		{testStatus(), `node node1 (dual-stack): 2 networks, 1 workload, 253 free /64s
ports attached with tcx; uplinks: eth0 xdp-native, eth1 xdp-generic
reconcile: 12 runs, 1 error, 0 repairs; the last took 3ms (last shallow 3ms, last deep 41ms)
reconcile: last error: network globex: bridge tnb2: no such device
`},
		{empty, `node node2 (ipv4-only): 0 networks, 0 workloads, 0 free /64s
ports attached with tc; uplinks: none
1 port attached with legacy tc in bulk, moving to tc
reconcile: not run yet
`},
	} {
		var b bytes.Buffer
		printStatus(&b, tc.st)
		if b.String() != tc.want {
			t.Errorf("got\n%s\nwant\n%s", b.String(), tc.want)
		}
	}
}

// status against a service that answers on its socket: the table for a
// person, and with -o json the API's JSON as it came.
func TestStatusCommand(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "api.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/status" {
			http.NotFound(w, r)
			return
		}
		json.NewEncoder(w).Encode(testStatus())
	})}
	go srv.Serve(l)
	defer srv.Close()

	var o, e bytes.Buffer
	if code := Main([]string{"status", "--socket", sock}, &o, &e); code != 0 {
		t.Fatalf("exit %d: %s", code, e.String())
	}
	if !strings.Contains(o.String(), "uplinks: eth0 xdp-native, eth1 xdp-generic\n") || strings.Contains(o.String(), "map[") {
		t.Errorf("status:\n%s", o.String())
	}
	o.Reset()
	if code := Main([]string{"status", "--socket", sock, "-o", "json"}, &o, &e); code != 0 {
		t.Fatalf("-o json: exit %d: %s", code, e.String())
	}
	var st api.Status
	if err := json.Unmarshal(o.Bytes(), &st); err != nil || st.Uplinks["eth1"] != string(loader.ModeXDPGeneric) || st.Reconcile.Runs != 12 {
		t.Errorf("-o json: %v %s", err, o.String())
	}
}
