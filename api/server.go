// Package api is tenantnetd's local API: HTTP+JSON on a unix socket for
// root (and api_group's members), and its client.
//
//	POST   /v1/networks          {"id": "acme", "mtu": 1420}      -> network
//	GET    /v1/networks                                           -> [network]
//	DELETE /v1/networks/{id}
//	POST   /v1/networks/{id}/rotate-key {"overlap": "30s"}        -> the next key and when it takes over
//	POST   /v1/workloads         {"id": "web-1", "network": "acme", "netns": "/run/netns/web-1"[, "ifname": "eth0"]}
//	                             {"id": "vm1", "network": "acme", "tap": {"name": "vm1tap", "mac": "02:..", "uid": 1000, "multi_queue": true}}
//	GET    /v1/workloads                                          -> [workload]
//	DELETE /v1/workloads/{id}
//	POST   /v1/users             {"id": "alice-laptop", "network": "acme"} -> user with a wg-quick config
//	GET    /v1/users                                              -> [user]
//	DELETE /v1/users/{id}
//	GET    /v1/status                                             -> status
//	(and the IPv4 endpoints of ipv4.go)
//
// Errors are {"error": "..."} with 400 (bad input), 404 (unknown id),
// 409 (conflict: in use, or the id exists with other parameters), 507
// (exhausted) or 500.
package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/tenantnet/tenantnet/ipam"
)

// NetworkRequest creates a network.
type NetworkRequest struct {
	ID  string `json:"id"`
	MTU int    `json:"mtu,omitempty"`
}

// RotateKeyRequest stages a network's next WireGuard key.
type RotateKeyRequest struct {
	// Overlap is how long the next key is announced before it takes
	// over (Go duration; default: the registry lease).
	Overlap string `json:"overlap,omitempty"`
}

// WorkloadRequest attaches a workload.
type WorkloadRequest struct {
	ID      string `json:"id"`
	Network string `json:"network"`
	Netns   string `json:"netns,omitempty"`
	// Ifname names the workload's side of its port in its namespace
	// (a CNI runtime's CNI_IFNAME); empty: eth0.
	Ifname string `json:"ifname,omitempty"`
	// Tap, instead of Netns: a VM's port (a persistent tap the VMM
	// opens). Its MAC may be left out: the node chooses one.
	Tap *ipam.Tap `json:"tap,omitempty"`
}

// UserRequest adds a user-access peer; without a public key the node
// generates the user's key pair and returns the private key once.
type UserRequest struct {
	ID        string `json:"id"`
	Network   string `json:"network"`
	PublicKey string `json:"public_key,omitempty"`
	// Rotate replaces an existing user's key (generated without a
	// public key); without it an existing user's key is never replaced.
	Rotate bool `json:"rotate,omitempty"`
}

// Error is the body of an error response.
type Error struct {
	Error string `json:"error"`
}

func status(err error) int {
	switch {
	case errors.Is(err, ipam.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ipam.ErrConflict):
		return http.StatusConflict
	case errors.Is(err, ipam.ErrExhausted):
		return http.StatusInsufficientStorage
	case errors.Is(err, errBadRequest), errors.Is(err, ipam.ErrInvalid):
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}

// ErrBadRequest marks an error as the caller's (400).
var ErrBadRequest = errors.New("bad request")

var errBadRequest = ErrBadRequest

func reply(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func fail(w http.ResponseWriter, err error) {
	reply(w, status(err), Error{Error: err.Error()})
}

func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %v", errBadRequest, err)
	}
	return nil
}

// Node is what the API serves: *node.Service satisfies it. Defined here
// so that api depends on no part of the node's kernel-facing code.
type Node interface {
	AddNetwork(id string, mtu int) (NetworkInfo, bool, error)
	Networks() ([]NetworkInfo, error)
	DeleteNetwork(id string) error
	RotateKey(id string, overlap time.Duration) (RotateKeyReply, error)
	AddWorkload(id, network, nsPath, ifname string) (WorkloadInfo, bool, error)
	AddTapWorkload(id, network string, tap ipam.Tap) (WorkloadInfo, bool, error)
	DeleteWorkload(id string) error
	Workloads() ([]WorkloadInfo, error)
	AddUser(id, network, publicKey string, rotate bool) (UserInfo, bool, error)
	DeleteUser(id string) error
	Users() ([]ipam.User, error)
	Status() Status
	// Public IPv4 and exposures (api/ipv4.go).
	BuyIPv4(network string, addr netip.Addr, node string) (IPv4Info, bool, error)
	ReleaseIPv4(addr netip.Addr) error
	IPv4() ([]IPv4Info, error)
	Expose(req ExposeRequest) (ExposureInfo, bool, error)
	Unexpose(proto string, addr netip.Addr, port uint16) error
	Exposures() ([]ExposureInfo, error)
	Routes() (Routes, error)
}

// handle adapts an endpoint to HTTP: the error becomes an Error body with
// its status code; a nil body is answered with the code alone.
func handle(fn func(*http.Request) (int, any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		code, v, err := fn(r)
		switch {
		case err != nil:
			fail(w, err)
		case v == nil:
			w.WriteHeader(code)
		default:
			reply(w, code, v)
		}
	}
}

// made is the code of a create call: 201 when it created, 200 when the
// object existed with the same parameters.
func made(created bool) int {
	if created {
		return http.StatusCreated
	}
	return http.StatusOK
}

func badRequest(err error) error { return fmt.Errorf("%w: %v", errBadRequest, err) }

// validID checks a request's id (a bad id is the caller's fault).
func validID(id string) error {
	if err := ipam.ValidID(id); err != nil {
		return badRequest(err)
	}
	return nil
}

// Handler serves the API for a node.
func Handler(s Node) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/networks", handle(func(r *http.Request) (int, any, error) {
		var req NetworkRequest
		if err := decode(r, &req); err != nil {
			return 0, nil, err
		}
		if err := validID(req.ID); err != nil {
			return 0, nil, err
		}
		if req.MTU != 0 && (req.MTU < 1280 || req.MTU > 9000) {
			return 0, nil, fmt.Errorf("%w: mtu %d: must be 1280..9000 (0: the node's)", errBadRequest, req.MTU)
		}
		n, created, err := s.AddNetwork(req.ID, req.MTU)
		return made(created), n, err
	}))
	mux.HandleFunc("GET /v1/networks", handle(func(r *http.Request) (int, any, error) {
		ns, err := s.Networks()
		return http.StatusOK, ns, err
	}))
	mux.HandleFunc("POST /v1/networks/{id}/rotate-key", handle(func(r *http.Request) (int, any, error) {
		var req RotateKeyRequest
		if err := decode(r, &req); err != nil {
			return 0, nil, err
		}
		var overlap time.Duration
		if req.Overlap != "" {
			var err error
			if overlap, err = time.ParseDuration(req.Overlap); err != nil || overlap < 0 || overlap > 24*time.Hour {
				return 0, nil, fmt.Errorf("%w: overlap %q: want a duration such as 30s, at most 24h", errBadRequest, req.Overlap)
			}
		}
		next, err := s.RotateKey(r.PathValue("id"), overlap)
		return http.StatusOK, next, err
	}))
	mux.HandleFunc("DELETE /v1/networks/{id}", handle(func(r *http.Request) (int, any, error) {
		return http.StatusNoContent, nil, s.DeleteNetwork(r.PathValue("id"))
	}))
	mux.HandleFunc("POST /v1/workloads", handle(func(r *http.Request) (int, any, error) {
		var req WorkloadRequest
		if err := decode(r, &req); err != nil {
			return 0, nil, err
		}
		if err := validID(req.ID); err != nil {
			return 0, nil, err
		}
		if req.Tap != nil {
			if req.Netns != "" {
				return 0, nil, fmt.Errorf("%w: a workload has a netns or a tap, not both", errBadRequest)
			}
			if err := ipam.ValidTapName(req.Tap.Name); err != nil {
				return 0, nil, fmt.Errorf("%w: %v", errBadRequest, err)
			}
			wl, created, err := s.AddTapWorkload(req.ID, req.Network, *req.Tap)
			return made(created), wl, err
		}
		if !filepath.IsAbs(req.Netns) {
			return 0, nil, fmt.Errorf("%w: netns %q: want an absolute path (/run/netns/NAME or /proc/PID/ns/net)", errBadRequest, req.Netns)
		}
		if _, err := os.Stat(req.Netns); err != nil {
			return 0, nil, fmt.Errorf("%w: netns %s does not exist", errBadRequest, req.Netns)
		}
		if req.Ifname != "" {
			if err := ipam.ValidIfname(req.Ifname); err != nil {
				return 0, nil, badRequest(err)
			}
		}
		wl, created, err := s.AddWorkload(req.ID, req.Network, req.Netns, req.Ifname)
		return made(created), wl, err
	}))
	mux.HandleFunc("GET /v1/workloads", handle(func(r *http.Request) (int, any, error) {
		ws, err := s.Workloads()
		return http.StatusOK, ws, err
	}))
	mux.HandleFunc("DELETE /v1/workloads/{id}", handle(func(r *http.Request) (int, any, error) {
		return http.StatusNoContent, nil, s.DeleteWorkload(r.PathValue("id"))
	}))
	mux.HandleFunc("POST /v1/users", handle(func(r *http.Request) (int, any, error) {
		var req UserRequest
		if err := decode(r, &req); err != nil {
			return 0, nil, err
		}
		if err := validID(req.ID); err != nil {
			return 0, nil, err
		}
		if req.PublicKey != "" {
			if _, err := wgtypes.ParseKey(req.PublicKey); err != nil {
				return 0, nil, fmt.Errorf("%w: public_key %q: not a WireGuard public key (base64 of 32 bytes, wg pubkey)", errBadRequest, req.PublicKey)
			}
		}
		u, created, err := s.AddUser(req.ID, req.Network, req.PublicKey, req.Rotate)
		return made(created), u, err
	}))
	mux.HandleFunc("GET /v1/users", handle(func(r *http.Request) (int, any, error) {
		us, err := s.Users()
		return http.StatusOK, us, err
	}))
	mux.HandleFunc("DELETE /v1/users/{id}", handle(func(r *http.Request) (int, any, error) {
		return http.StatusNoContent, nil, s.DeleteUser(r.PathValue("id"))
	}))
	mux.HandleFunc("GET /v1/routes", handle(func(r *http.Request) (int, any, error) {
		rs, err := s.Routes()
		return http.StatusOK, rs, err
	}))
	mux.HandleFunc("GET /v1/status", handle(func(r *http.Request) (int, any, error) {
		return http.StatusOK, s.Status(), nil
	}))
	ipv4Routes(mux, s)
	return mux
}
