package api

//	POST   /v1/ipv4              {"network": "acme", "address": "203.0.113.7"} -> the lease (address optional)
//	GET    /v1/ipv4                                               -> [lease or quarantined address]
//	DELETE /v1/ipv4/{address}
//	POST   /v1/exposures         {"network": "acme", "ipv4": "203.0.113.7", "port": 443, "proto": "tcp", "to": "web-1:8443"}
//	GET    /v1/exposures                                          -> [exposure with its counters]
//	DELETE /v1/exposures/{proto}/{address}/{port}

import (
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/tenantnet/tenantnet/ipam"
)

// BuyIPv4Request buys a public IPv4 address of this node's pool for a
// network: Address, or the lowest free one.
type BuyIPv4Request struct {
	Network string `json:"network"`
	Address string `json:"address,omitempty"`
	// Node, when set, must be this node: an address of another node's
	// pool is bought on that node (or declared: network declare --ipv4).
	Node string `json:"node,omitempty"`
}

// IPv4Info is an address of the pool that is leased or in quarantine.
type IPv4Info struct {
	Address netip.Addr `json:"address"`
	Network string     `json:"network,omitempty"` // "" when quarantined
	// State: "in use", or "quarantined until <RFC 3339>".
	State string `json:"state"`
	// On: how the node takes it in: "uplink <if>" (on the uplink's
	// segment: the node answers ARP) or "routed" (a local route: the DC
	// routes it to the node).
	On       string    `json:"on"`
	Since    time.Time `json:"since,omitzero"`
	Until    time.Time `json:"until,omitzero"`
	Declared bool      `json:"declared,omitempty"`
}

// ExposeRequest exposes a service of a network on one of its addresses.
type ExposeRequest struct {
	Network string `json:"network"`
	IPv4    string `json:"ipv4"`
	Port    int    `json:"port"`
	Proto   string `json:"proto"`
	// To is the service: "workload-id" (the same port), "workload-id:port"
	// or "[ipv6]:port" (a workload of the network on another member).
	To            string `json:"to"`
	ProxyProtocol string `json:"proxy_protocol,omitempty"`
	// MaxConns caps the exposure's TCP connections or UDP sessions (0:
	// the proxy's default); past it, connections are reset and counted.
	MaxConns int `json:"max_conns,omitempty"`
}

// ExposureInfo is an exposure and, when the proxy serves it, its
// counters.
type ExposureInfo struct {
	ipam.Exposure
	// Served: the node's proxy runs it (false: no proxy runner, or it
	// refused the mapping: Error says why).
	Served bool           `json:"served"`
	Error  string         `json:"error,omitempty"`
	Stats  *ExposureStats `json:"stats,omitempty"`
}

// ExposureStats are a served exposure's counters (proxy.Stats).
type ExposureStats struct {
	Active     int64             `json:"active"` // TCP connections open, or UDP sessions
	Total      uint64            `json:"total"`
	Refused    map[string]uint64 `json:"refused,omitempty"` // by reason
	BytesIn    uint64            `json:"bytes_in"`          // client -> service
	BytesOut   uint64            `json:"bytes_out"`         // service -> client
	DialErrors uint64            `json:"dial_errors"`
}

// RefusedTotal is the refusals of every reason.
func (s ExposureStats) RefusedTotal() uint64 {
	var n uint64
	for _, v := range s.Refused {
		n += v
	}
	return n
}

func parseIPv4(field, s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return netip.Addr{}, fmt.Errorf("%w: %s %q: want an IPv4 address (203.0.113.7)", errBadRequest, field, s)
	}
	return a, nil
}

func ipv4Routes(mux *http.ServeMux, s Node) {
	mux.HandleFunc("POST /v1/ipv4", handle(func(r *http.Request) (int, any, error) {
		var req BuyIPv4Request
		if err := decode(r, &req); err != nil {
			return 0, nil, err
		}
		if err := validID(req.Network); err != nil {
			return 0, nil, err
		}
		var a netip.Addr
		if req.Address != "" {
			var err error
			if a, err = parseIPv4("address", req.Address); err != nil {
				return 0, nil, err
			}
		}
		l, created, err := s.BuyIPv4(req.Network, a, req.Node)
		return made(created), l, err
	}))
	mux.HandleFunc("GET /v1/ipv4", handle(func(r *http.Request) (int, any, error) {
		ls, err := s.IPv4()
		return http.StatusOK, ls, err
	}))
	mux.HandleFunc("DELETE /v1/ipv4/{address}", handle(func(r *http.Request) (int, any, error) {
		a, err := parseIPv4("address", r.PathValue("address"))
		if err != nil {
			return 0, nil, err
		}
		return http.StatusNoContent, nil, s.ReleaseIPv4(a)
	}))
	mux.HandleFunc("POST /v1/exposures", handle(func(r *http.Request) (int, any, error) {
		var req ExposeRequest
		if err := decode(r, &req); err != nil {
			return 0, nil, err
		}
		if err := validID(req.Network); err != nil {
			return 0, nil, err
		}
		if _, err := parseIPv4("ipv4", req.IPv4); err != nil {
			return 0, nil, err
		}
		if req.Port < 1 || req.Port > 65535 {
			return 0, nil, fmt.Errorf("%w: port %d: want 1..65535", errBadRequest, req.Port)
		}
		if req.Proto != "tcp" && req.Proto != "udp" {
			return 0, nil, fmt.Errorf("%w: proto %q: want tcp or udp", errBadRequest, req.Proto)
		}
		e, created, err := s.Expose(req)
		return made(created), e, err
	}))
	mux.HandleFunc("GET /v1/exposures", handle(func(r *http.Request) (int, any, error) {
		es, err := s.Exposures()
		return http.StatusOK, es, err
	}))
	mux.HandleFunc("DELETE /v1/exposures/{proto}/{address}/{port}", handle(func(r *http.Request) (int, any, error) {
		a, err := parseIPv4("address", r.PathValue("address"))
		if err != nil {
			return 0, nil, err
		}
		port, err := strconv.ParseUint(r.PathValue("port"), 10, 16)
		if err != nil || port == 0 {
			return 0, nil, fmt.Errorf("%w: port %q: want 1..65535", errBadRequest, r.PathValue("port"))
		}
		proto := r.PathValue("proto")
		if proto != "tcp" && proto != "udp" {
			return 0, nil, fmt.Errorf("%w: proto %q: want tcp or udp", errBadRequest, proto)
		}
		return http.StatusNoContent, nil, s.Unexpose(proto, a, uint16(port))
	}))
}

// BuyIPv4 buys an address.
func (c *Client) BuyIPv4(req BuyIPv4Request) (IPv4Info, error) {
	var l IPv4Info
	return l, c.do("POST", "/v1/ipv4", req, &l)
}

// ReleaseIPv4 releases an address (and its exposures).
func (c *Client) ReleaseIPv4(a netip.Addr) error {
	return c.do("DELETE", "/v1/ipv4/"+a.String(), nil, nil)
}

// IPv4 lists the leased and quarantined addresses.
func (c *Client) IPv4() ([]IPv4Info, error) {
	var ls []IPv4Info
	return ls, c.do("GET", "/v1/ipv4", nil, &ls)
}

// Expose exposes a service.
func (c *Client) Expose(req ExposeRequest) (ExposureInfo, error) {
	var e ExposureInfo
	return e, c.do("POST", "/v1/exposures", req, &e)
}

// Unexpose removes an exposure.
func (c *Client) Unexpose(proto string, a netip.Addr, port uint16) error {
	return c.do("DELETE", fmt.Sprintf("/v1/exposures/%s/%s/%d", proto, a, port), nil, nil)
}

// Exposures lists the exposures with their counters.
func (c *Client) Exposures() ([]ExposureInfo, error) {
	var es []ExposureInfo
	return es, c.do("GET", "/v1/exposures", nil, &es)
}
