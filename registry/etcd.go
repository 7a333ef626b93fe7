package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Etcd is the registry backend for a real grid: node records under
// <prefix>/nodes/<id>, each attached to an etcd lease of the record's TTL,
// so a node that stops renewing disappears from etcd itself.
type Etcd struct {
	cli    *clientv3.Client
	prefix string
}

// NewEtcd connects to etcd.
func NewEtcd(endpoints []string, prefix string) (*Etcd, error) {
	if prefix == "" {
		prefix = "/tenantnet"
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("etcd %v: %w", endpoints, err)
	}
	return &Etcd{cli: cli, prefix: strings.TrimRight(prefix, "/")}, nil
}

// Close implements Registry: it disconnects.
func (e *Etcd) Close() error { return e.cli.Close() }

func (e *Etcd) key(id string) string { return e.prefix + "/nodes/" + id }

func ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 5*time.Second)
}

// Publish implements Registry: a fresh lease of ttl for each renewal (the
// previous one then expires on its own, with nothing attached).
func (e *Etcd) Publish(r NodeRecord, ttl time.Duration) error {
	r.Expires = time.Now().Add(ttl).UTC()
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	c, cancel := ctx()
	defer cancel()
	secs := int64(ttl / time.Second)
	if secs < 1 {
		secs = 1
	}
	lease, err := e.cli.Grant(c, secs)
	if err != nil {
		return fmt.Errorf("etcd lease: %w", err)
	}
	if _, err := e.cli.Put(c, e.key(r.NodeID), string(b), clientv3.WithLease(lease.ID)); err != nil {
		return fmt.Errorf("etcd put: %w", err)
	}
	return nil
}

// Withdraw implements Registry.
func (e *Etcd) Withdraw(id string) error {
	c, cancel := ctx()
	defer cancel()
	_, err := e.cli.Delete(c, e.key(id))
	return err
}

// Nodes implements Registry.
func (e *Etcd) Nodes() ([]NodeRecord, error) {
	c, cancel := ctx()
	defer cancel()
	resp, err := e.cli.Get(c, e.prefix+"/nodes/", clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("etcd get: %w", err)
	}
	now := time.Now()
	var out []NodeRecord
	for _, kv := range resp.Kvs {
		var r NodeRecord
		if json.Unmarshal(kv.Value, &r) != nil || r.Expires.Before(now) {
			continue
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].NodeID < out[j].NodeID })
	return out, nil
}
