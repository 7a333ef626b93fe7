package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/tenantnet/tenantnet/ipam"
)

// Client talks to tenantnetd over its socket.
type Client struct {
	hc   *http.Client
	path string
}

// NewClient returns a client for the socket at path.
func NewClient(path string) *Client {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}
	return &Client{hc: &http.Client{Transport: tr, Timeout: 60 * time.Second}, path: path}
}

// APIError is an error answered by the server.
type APIError struct {
	Code int
	Msg  string
}

func (e *APIError) Error() string { return e.Msg }

func (c *Client) do(method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://tenantnetd"+path, rd)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	switch {
	case errors.Is(err, syscall.EACCES):
		return fmt.Errorf("tenantnetd API %s: permission denied: the socket is root's (and api_group's, if the node config sets one)", c.path)
	case err != nil:
		return fmt.Errorf("tenantnetd API %s: %w (is tenantnetd running?)", c.path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var e Error
		json.NewDecoder(resp.Body).Decode(&e)
		return &APIError{Code: resp.StatusCode, Msg: e.Error}
	}
	if out != nil {
		return json.NewDecoder(resp.Body).Decode(out)
	}
	return nil
}

// AddNetwork creates a network.
func (c *Client) AddNetwork(req NetworkRequest) (NetworkInfo, error) {
	var n NetworkInfo
	return n, c.do("POST", "/v1/networks", req, &n)
}

// RotateKey stages the network's next WireGuard key.
func (c *Client) RotateKey(id string, req RotateKeyRequest) (RotateKeyReply, error) {
	var r RotateKeyReply
	return r, c.do("POST", "/v1/networks/"+id+"/rotate-key", req, &r)
}

// DeleteNetwork deletes a network.
func (c *Client) DeleteNetwork(id string) error { return c.do("DELETE", "/v1/networks/"+id, nil, nil) }

// Networks lists networks.
func (c *Client) Networks() ([]NetworkInfo, error) {
	var ns []NetworkInfo
	return ns, c.do("GET", "/v1/networks", nil, &ns)
}

// AddWorkload attaches a workload.
func (c *Client) AddWorkload(req WorkloadRequest) (WorkloadInfo, error) {
	var w WorkloadInfo
	return w, c.do("POST", "/v1/workloads", req, &w)
}

// DeleteWorkload detaches a workload.
func (c *Client) DeleteWorkload(id string) error {
	return c.do("DELETE", "/v1/workloads/"+id, nil, nil)
}

// Workloads lists workloads.
func (c *Client) Workloads() ([]WorkloadInfo, error) {
	var ws []WorkloadInfo
	return ws, c.do("GET", "/v1/workloads", nil, &ws)
}

// Routes is the node's route export.
func (c *Client) Routes() (Routes, error) {
	var rs Routes
	err := c.do("GET", "/v1/routes", nil, &rs)
	return rs, err
}

// Status reports the
func (c *Client) Status() (Status, error) {
	var s Status
	return s, c.do("GET", "/v1/status", nil, &s)
}

// AddUser adds a user-access peer.
func (c *Client) AddUser(req UserRequest) (UserInfo, error) {
	var u UserInfo
	return u, c.do("POST", "/v1/users", req, &u)
}

// DeleteUser removes a user-access peer.
func (c *Client) DeleteUser(id string) error { return c.do("DELETE", "/v1/users/"+id, nil, nil) }

// Users lists the user-access peers.
func (c *Client) Users() ([]ipam.User, error) {
	var us []ipam.User
	return us, c.do("GET", "/v1/users", nil, &us)
}
