package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tenantnet/tenantnet/ipam"
)

// fakeNode answers like a node with one network "acme".
type fakeNode struct{ deleted []string }

func (f *fakeNode) AddNetwork(id string, mtu int) (NetworkInfo, bool, error) {
	return NetworkInfo{Network: ipam.Network{ID: id, MTU: mtu}, Bridge: "tnb1"}, id != "acme", nil
}
func (f *fakeNode) Networks() ([]NetworkInfo, error) {
	return []NetworkInfo{{Network: ipam.Network{ID: "acme"}}}, nil
}
func (f *fakeNode) DeleteNetwork(id string) error {
	if id != "acme" {
		return fmt.Errorf("network %s: %w", id, ipam.ErrNotFound)
	}
	f.deleted = append(f.deleted, id)
	return nil
}
func (f *fakeNode) RotateKey(id string, overlap time.Duration) (RotateKeyReply, error) {
	return RotateKeyReply{Network: id, NextPublicKey: overlap.String()}, nil
}
func (f *fakeNode) AddTapWorkload(id, network string, t ipam.Tap) (WorkloadInfo, bool, error) {
	return WorkloadInfo{}, false, errors.New("no taps here")
}

func (f *fakeNode) AddWorkload(id, network, nsPath, ifname string) (WorkloadInfo, bool, error) {
	return WorkloadInfo{}, false, fmt.Errorf("in use: %w", ipam.ErrConflict)
}
func (f *fakeNode) DeleteWorkload(id string) error     { return nil }
func (f *fakeNode) Workloads() ([]WorkloadInfo, error) { return nil, errors.New("broken") }
func (f *fakeNode) AddUser(id, network, publicKey string, rotate bool) (UserInfo, bool, error) {
	if rotate {
		return UserInfo{User: ipam.User{ID: id, PublicKey: publicKey}}, false, nil
	}
	return UserInfo{}, false, fmt.Errorf("no addresses: %w", ipam.ErrExhausted)
}
func (f *fakeNode) DeleteUser(id string) error  { return nil }
func (f *fakeNode) Users() ([]ipam.User, error) { return []ipam.User{}, nil }
func (f *fakeNode) Routes() (Routes, error) {
	return Routes{Routes: []Route{{Prefix: netip.MustParsePrefix("2001:db8:1::/64"), Via: netip.MustParseAddr("2001:db8::1"), Kind: RouteNetwork}}}, nil
}
func (f *fakeNode) Status() Status {
	return Status{NodeID: "n1", Uplinks: map[string]string{"eth1": "xdp-generic", "eth0": "xdp-native"},
		Reconcile: ReconcileStatus{Runs: 3, Errors: 1, Repairs: 2}}
}

func (f *fakeNode) BuyIPv4(network string, addr netip.Addr, node string) (IPv4Info, bool, error) {
	if !addr.IsValid() {
		addr = netip.MustParseAddr("203.0.113.9")
	}
	return IPv4Info{Address: addr, Network: network, State: "in use", On: "routed"}, true, nil
}
func (f *fakeNode) ReleaseIPv4(addr netip.Addr) error {
	return fmt.Errorf("address %s: not leased: %w", addr, ipam.ErrNotFound)
}
func (f *fakeNode) IPv4() ([]IPv4Info, error) { return []IPv4Info{}, nil }
func (f *fakeNode) Expose(req ExposeRequest) (ExposureInfo, bool, error) {
	return ExposureInfo{}, false, fmt.Errorf("target %s: %w", req.To, ipam.ErrInvalid)
}
func (f *fakeNode) Unexpose(proto string, addr netip.Addr, port uint16) error {
	f.deleted = append(f.deleted, fmt.Sprintf("%s/%s/%d", proto, addr, port))
	return nil
}
func (f *fakeNode) Exposures() ([]ExposureInfo, error) { return []ExposureInfo{}, nil }

func TestHandler(t *testing.T) {
	f := &fakeNode{}
	h := Handler(f)
	tests := []struct {
		method, path, body string
		code               int
		want               string // in the body
	}{
		{"POST", "/v1/networks", `{"id":"globex","mtu":1400}`, 201, `"id":"globex"`},
		{"POST", "/v1/networks", `{"id":"acme"}`, 200, `"bridge":"tnb1"`},
		{"POST", "/v1/networks", `{"id":"bad id"}`, 400, `"error":"bad request: id`},
		{"POST", "/v1/networks", `{"id":"acme","nonsense":1}`, 400, `unknown field`},
		{"GET", "/v1/networks", "", 200, `[{"id":"acme"`},
		{"DELETE", "/v1/networks/acme", "", 204, ""},
		{"DELETE", "/v1/networks/nope", "", 404, `"error":"network nope: not found"`},
		{"POST", "/v1/networks/acme/rotate-key", `{"overlap":"30s"}`, 200, `"next_public_key":"30s"`},
		{"POST", "/v1/networks/acme/rotate-key", `{"overlap":"soon"}`, 400, `want a duration`},
		{"POST", "/v1/networks/acme/rotate-key", `{"overlap":"9999h"}`, 400, `at most 24h`},
		{"POST", "/v1/networks", `{"id":"big","mtu":65536}`, 400, `mtu 65536: must be 1280..9000`},
		{"POST", "/v1/networks", `{"id":"small","mtu":-1}`, 400, `mtu -1`},
		{"POST", "/v1/workloads", `{"id":"w","network":"acme","netns":"relative"}`, 400, `want an absolute path`},
		{"POST", "/v1/workloads", `{"id":"w","network":"acme","netns":"/nonexistent/ns"}`, 400, `does not exist`},
		{"POST", "/v1/workloads", `{"id":"w","network":"acme","netns":"/"}`, 409, `in use: conflict`},
		{"POST", "/v1/workloads", `{"id":"w","network":"acme","netns":"/","ifname":"a/b"}`, 400, `interface name`},
		{"POST", "/v1/workloads", `{"id":"w","network":"acme","netns":"/","ifname":"net1"}`, 409, `in use: conflict`},
		{"GET", "/v1/workloads", "", 500, `"error":"broken"`},
		{"DELETE", "/v1/workloads/w", "", 204, ""},
		{"POST", "/v1/users", `{"id":"alice","network":"acme"}`, 507, `exhausted`},
		{"POST", "/v1/users", `{"id":"alice","network":"acme","public_key":"nope"}`, 400, `public_key \"nope\": not a WireGuard public key`},
		{"POST", "/v1/users", `{"id":"alice","network":"acme","public_key":"uHoYyU1rAY5eA4kRGw0EPs3qkOqGvwTzBHFTYXo9jVs=","rotate":true}`, 200, `"public_key":"uHoYyU1rAY5eA4kRGw0EPs3qkOqGvwTzBHFTYXo9jVs="`},
		{"GET", "/v1/users", "", 200, `[]`},
		{"DELETE", "/v1/users/alice", "", 204, ""},
		{"GET", "/v1/routes", "", 200, `{"routes":[{"prefix":"2001:db8:1::/64","via":"2001:db8::1","kind":"network"}]}`},
		{"GET", "/v1/status", "", 200, `"reconcile":{"runs":3,"errors":1,"repairs":2,`},
		{"POST", "/v1/ipv4", `{"network":"acme"}`, 201, `"address":"203.0.113.9","network":"acme","state":"in use"`},
		{"POST", "/v1/ipv4", `{"network":"acme","address":"2001:db8::1"}`, 400, `want an IPv4 address`},
		{"POST", "/v1/ipv4", `{"network":"../x"}`, 400, `bad request: id`},
		{"DELETE", "/v1/ipv4/203.0.113.9", "", 404, `not leased`},
		{"DELETE", "/v1/ipv4/nope", "", 400, `want an IPv4 address`},
		{"GET", "/v1/ipv4", "", 200, `[]`},
		{"POST", "/v1/exposures", `{"network":"acme","ipv4":"203.0.113.9","port":443,"proto":"tcp","to":"evil"}`, 400, `target evil: invalid`},
		{"POST", "/v1/exposures", `{"network":"acme","ipv4":"203.0.113.9","port":70000,"proto":"tcp","to":"web"}`, 400, `port 70000`},
		{"POST", "/v1/exposures", `{"network":"acme","ipv4":"203.0.113.9","port":443,"proto":"icmp","to":"web"}`, 400, `proto \"icmp\": want tcp or udp`},
		{"DELETE", "/v1/exposures/tcp/203.0.113.9/0", "", 400, `port \"0\": want 1..65535`},
		{"DELETE", "/v1/exposures/tcp/203.0.113.9/443", "", 204, ""},
		{"GET", "/v1/exposures", "", 200, `[]`},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path+" "+tt.body, func(t *testing.T) {
			req := httptest.NewRequest(tt.method, tt.path, strings.NewReader(tt.body))
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.code {
				t.Errorf("code %d, want %d (body %s)", rec.Code, tt.code, rec.Body)
			}
			if !strings.Contains(rec.Body.String(), tt.want) {
				t.Errorf("body %s, want %s in it", rec.Body, tt.want)
			}
			if tt.code == http.StatusNoContent && (rec.Body.Len() != 0 || rec.Header().Get("Content-Type") != "") {
				t.Errorf("204 with a body %q or a content type %q", rec.Body, rec.Header().Get("Content-Type"))
			}
		})
	}
	if len(f.deleted) != 2 {
		t.Errorf("deleted %v, want acme once and one exposure", f.deleted)
	}
}

func TestStatusJSON(t *testing.T) {
	b, err := json.Marshal((&fakeNode{}).Status())
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	var check func(prefix string, v any)
	check = func(prefix string, v any) {
		obj, ok := v.(map[string]any)
		if !ok || prefix == "uplinks." { // uplink names are data, not fields
			return
		}
		for k, v := range obj {
			if k != strings.ToLower(k) {
				t.Errorf("status field %s%s is not snake_case", prefix, k)
			}
			check(prefix+k+".", v)
		}
	}
	check("", m)
	got := fmt.Sprint((&fakeNode{}).Status().SortedUplinks())
	if want := "[eth0 xdp-native eth1 xdp-generic]"; got != want {
		t.Errorf("SortedUplinks = %s, want %s", got, want)
	}
}
