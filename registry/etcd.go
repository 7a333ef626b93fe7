package registry

import (
	"context"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tenantnet/tenantnet/trust"
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
func (e *Etcd) Publish(id string, data []byte, ttl time.Duration) error {
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
	if _, err := e.cli.Put(c, e.key(id), string(data), clientv3.WithLease(lease.ID)); err != nil {
		return fmt.Errorf("etcd put: %w", err)
	}
	return nil
}

func (e *Etcd) put(key string, data []byte) error {
	c, cancel := ctx()
	defer cancel()
	if _, err := e.cli.Put(c, key, string(data)); err != nil {
		return fmt.Errorf("etcd put: %w", err)
	}
	return nil
}

func (e *Etcd) del(key string) error {
	c, cancel := ctx()
	defer cancel()
	_, err := e.cli.Delete(c, key)
	return err
}

// Withdraw implements Registry.
func (e *Etcd) Withdraw(id string) error { return e.del(e.key(id)) }

// list reads the entries under <prefix>/<sub>/, named by the key's rest
// (sorted, as etcd returns them).
func (e *Etcd) list(sub string) ([]trust.Entry, error) {
	c, cancel := ctx()
	defer cancel()
	resp, err := e.cli.Get(c, e.prefix+"/"+sub+"/", clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("etcd get: %w", err)
	}
	out := []trust.Entry{}
	for _, kv := range resp.Kvs {
		out = append(out, trust.Entry{Name: strings.TrimPrefix(string(kv.Key), e.prefix+"/"+sub+"/"), Data: kv.Value})
	}
	return out, nil
}

// Nodes implements Registry.
func (e *Etcd) Nodes() ([]trust.Entry, error) { return e.list("nodes") }

// Enroll implements Registry.
func (e *Etcd) Enroll(id string, data []byte) error {
	if err := trust.ValidNodeID(id); err != nil {
		return err
	}
	return e.put(e.prefix+"/enrollments/"+id, data)
}

// Unenroll implements Registry.
func (e *Etcd) Unenroll(id string) error { return e.del(e.prefix + "/enrollments/" + id) }

// Enrollments implements Registry.
func (e *Etcd) Enrollments() ([]trust.Entry, error) { return e.list("enrollments") }

// SetRevocations implements Registry.
func (e *Etcd) SetRevocations(data []byte) error { return e.put(e.prefix+"/revocations", data) }

// Revocations implements Registry.
func (e *Etcd) Revocations() ([]byte, error) {
	c, cancel := ctx()
	defer cancel()
	resp, err := e.cli.Get(c, e.prefix+"/revocations")
	if err != nil {
		return nil, fmt.Errorf("etcd get: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	return resp.Kvs[0].Value, nil
}
