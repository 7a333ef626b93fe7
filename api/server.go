// Package api is tenantnetd's local API: HTTP+JSON on a root-only unix
// socket, and its client.
//
//	POST   /v1/networks          {"id": "acme", "mtu": 1420}      -> network
//	GET    /v1/networks                                           -> [network]
//	DELETE /v1/networks/{id}
//	POST   /v1/workloads         {"id": "web-1", "network": "acme", "netns": "/run/netns/web-1"}
//	GET    /v1/workloads                                          -> [workload]
//	DELETE /v1/workloads/{id}
//	POST   /v1/users             {"id": "alice-laptop", "network": "acme"} -> user with a wg-quick config
//	GET    /v1/users                                              -> [user]
//	DELETE /v1/users/{id}
//	GET    /v1/status                                             -> status
//
// Errors are {"error": "..."} with 400 (bad input), 404 (unknown id),
// 409 (conflict: in use, or the id exists with other parameters), 507
// (exhausted) or 500.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/tenantnet/tenantnet/ipam"
	"github.com/tenantnet/tenantnet/node"
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

// RotateKeyReply says which key takes over when.
type RotateKeyReply struct {
	Network       string    `json:"network"`
	NextPublicKey string    `json:"next_public_key"`
	At            time.Time `json:"at"`
}

// WorkloadRequest attaches a workload.
type WorkloadRequest struct {
	ID      string `json:"id"`
	Network string `json:"network"`
	Netns   string `json:"netns"`
}

// UserRequest adds a user-access peer; without a public key the node
// generates the user's key pair and returns the private key once.
type UserRequest struct {
	ID        string `json:"id"`
	Network   string `json:"network"`
	PublicKey string `json:"public_key,omitempty"`
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
	case errors.Is(err, errBadRequest):
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}

var errBadRequest = errors.New("bad request")

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

// Handler serves the API for a node service.
func Handler(s *node.Service) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/networks", func(w http.ResponseWriter, r *http.Request) {
		var req NetworkRequest
		if err := decode(r, &req); err != nil {
			fail(w, err)
			return
		}
		if err := ipam.ValidID(req.ID); err != nil {
			fail(w, fmt.Errorf("%w: %v", errBadRequest, err))
			return
		}
		n, created, err := s.AddNetwork(req.ID, req.MTU)
		if err != nil {
			fail(w, err)
			return
		}
		code := http.StatusOK
		if created {
			code = http.StatusCreated
		}
		reply(w, code, n)
	})
	mux.HandleFunc("GET /v1/networks", func(w http.ResponseWriter, r *http.Request) {
		ns, err := s.Networks()
		if err != nil {
			fail(w, err)
			return
		}
		reply(w, http.StatusOK, ns)
	})
	mux.HandleFunc("POST /v1/networks/{id}/rotate-key", func(w http.ResponseWriter, r *http.Request) {
		var req RotateKeyRequest
		if err := decode(r, &req); err != nil {
			fail(w, err)
			return
		}
		var overlap time.Duration
		if req.Overlap != "" {
			var err error
			if overlap, err = time.ParseDuration(req.Overlap); err != nil || overlap < 0 {
				fail(w, fmt.Errorf("%w: overlap %q: want a duration such as 30s", errBadRequest, req.Overlap))
				return
			}
		}
		next, err := s.RotateKey(r.PathValue("id"), overlap)
		if err != nil {
			fail(w, err)
			return
		}
		reply(w, http.StatusOK, RotateKeyReply{Network: r.PathValue("id"), NextPublicKey: next.Key.PublicKey().String(), At: next.At})
	})
	mux.HandleFunc("DELETE /v1/networks/{id}", func(w http.ResponseWriter, r *http.Request) {
		if err := s.DeleteNetwork(r.PathValue("id")); err != nil {
			fail(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /v1/workloads", func(w http.ResponseWriter, r *http.Request) {
		var req WorkloadRequest
		if err := decode(r, &req); err != nil {
			fail(w, err)
			return
		}
		if err := ipam.ValidID(req.ID); err != nil {
			fail(w, fmt.Errorf("%w: %v", errBadRequest, err))
			return
		}
		if !filepath.IsAbs(req.Netns) {
			fail(w, fmt.Errorf("%w: netns %q: want an absolute path (/run/netns/NAME or /proc/PID/ns/net)", errBadRequest, req.Netns))
			return
		}
		if _, err := os.Stat(req.Netns); err != nil {
			fail(w, fmt.Errorf("%w: netns %s does not exist", errBadRequest, req.Netns))
			return
		}
		wl, created, err := s.AddWorkload(req.ID, req.Network, req.Netns)
		if err != nil {
			fail(w, err)
			return
		}
		code := http.StatusOK
		if created {
			code = http.StatusCreated
		}
		reply(w, code, wl)
	})
	mux.HandleFunc("GET /v1/workloads", func(w http.ResponseWriter, r *http.Request) {
		ws, err := s.Workloads()
		if err != nil {
			fail(w, err)
			return
		}
		reply(w, http.StatusOK, ws)
	})
	mux.HandleFunc("DELETE /v1/workloads/{id}", func(w http.ResponseWriter, r *http.Request) {
		if err := s.DeleteWorkload(r.PathValue("id")); err != nil {
			fail(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /v1/users", func(w http.ResponseWriter, r *http.Request) {
		var req UserRequest
		if err := decode(r, &req); err != nil {
			fail(w, err)
			return
		}
		if err := ipam.ValidID(req.ID); err != nil {
			fail(w, fmt.Errorf("%w: %v", errBadRequest, err))
			return
		}
		u, created, err := s.AddUser(req.ID, req.Network, req.PublicKey)
		if err != nil {
			fail(w, err)
			return
		}
		code := http.StatusOK
		if created {
			code = http.StatusCreated
		}
		reply(w, code, u)
	})
	mux.HandleFunc("GET /v1/users", func(w http.ResponseWriter, r *http.Request) {
		us, err := s.Users()
		if err != nil {
			fail(w, err)
			return
		}
		reply(w, http.StatusOK, us)
	})
	mux.HandleFunc("DELETE /v1/users/{id}", func(w http.ResponseWriter, r *http.Request) {
		if err := s.DeleteUser(r.PathValue("id")); err != nil {
			fail(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK, s.Status())
	})
	return mux
}

// Serve listens on the unix socket (mode 0600, root only) until ctx ends.
func Serve(ctx context.Context, path string, h http.Handler, log *slog.Logger) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	os.Remove(path) // a stale socket of a previous run
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("listen %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	log.Info("API listening", "socket", path)
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
