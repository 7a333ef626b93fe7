package registry

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tenantnet/tenantnet/trust"
)

// Etcd is the registry backend for a real grid: node records under
// <prefix>/nodes/<id>, each attached to its node's lease, so a node that
// stops disappears from etcd itself.
//
// The write pattern is what a grid can run for years: one lease per
// node, kept alive by KeepAlive (lease renewals are not revisions), and a
// Put only when the record's bytes change. A node that renews every 5 s
// makes no revision then, and etcd's history grows with the grid's
// changes only. A node whose lease was lost (a partition longer than the
// lease, an etcd restart past it) grants a new one and puts its record
// again on its next Publish.
type Etcd struct {
	cli    *clientv3.Client
	prefix string
	ctx    context.Context // ends the keepalives at Close
	stop   context.CancelFunc
	mu     sync.Mutex
	leases map[string]*nodeLease
}

// nodeLease is a node's lease and what was last put under it.
type nodeLease struct {
	id     clientv3.LeaseID
	ttl    int64
	lost   chan struct{} // closed when the keepalive ends: the lease expired, was revoked, or Close
	cancel context.CancelFunc
	data   []byte // the record put under the lease (nil: none yet)
	rev    int64  // its mod revision
}

func (l *nodeLease) alive() bool {
	select {
	case <-l.lost:
		return false
	default:
		return true
	}
}

// EtcdConfig is how to reach etcd: its endpoints, the key prefix (default
// /tenantnet), TLS (nil: plaintext http:// endpoints) with the client
// certificate, and a user name and password.
type EtcdConfig struct {
	Endpoints          []string
	Prefix             string
	TLS                *tls.Config
	Username, Password string
}

// NewEtcd connects to etcd. With a user name the client authenticates
// first, so wrong credentials are an error here.
func NewEtcd(c EtcdConfig) (*Etcd, error) {
	prefix := c.Prefix
	if prefix == "" {
		prefix = "/tenantnet"
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints, DialTimeout: 5 * time.Second,
		TLS: c.TLS, Username: c.Username, Password: c.Password})
	if err != nil {
		return nil, fmt.Errorf("etcd %v: %w", c.Endpoints, err)
	}
	ctx, stop := context.WithCancel(context.Background())
	return &Etcd{cli: cli, prefix: strings.TrimRight(prefix, "/"), ctx: ctx, stop: stop, leases: map[string]*nodeLease{}}, nil
}

// Close implements Registry: it ends the keepalives and disconnects. The
// records stay until their leases run out.
func (e *Etcd) Close() error {
	e.stop()
	return e.cli.Close()
}

// Client is the etcd client (tests and the bench read revisions with it).
func (e *Etcd) Client() *clientv3.Client { return e.cli }

func (e *Etcd) key(id string) string { return e.prefix + "/nodes/" + id }

func ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 5*time.Second)
}

// Publish implements Registry. The record goes under the node's lease
// (granted on the first call, again after a loss, kept alive meanwhile);
// it is put only if its bytes differ from what is stored, or if the
// stored key is not the one this client put (someone deleted or replaced
// it). An unchanged record costs one read and no revision. A refused
// write (etcd NOSPACE, a partition) leaves the record and the lease as
// they were: the lease is still kept alive, so other nodes go on seeing
// the last record.
func (e *Etcd) Publish(id string, data []byte, ttl time.Duration) error {
	secs := max(int64(ttl/time.Second), 1)
	e.mu.Lock()
	defer e.mu.Unlock()
	l := e.leases[id]
	if l != nil && (!l.alive() || l.ttl != secs) {
		l.cancel() // a new lease below; the old one expires on its own
		l, e.leases[id] = nil, nil
	}
	c, cancel := ctx()
	defer cancel()
	if l != nil && l.data != nil && bytes.Equal(l.data, data) {
		resp, err := e.cli.Get(c, e.key(id), clientv3.WithKeysOnly())
		if err != nil {
			return fmt.Errorf("etcd get %s: %w", e.key(id), err)
		}
		if len(resp.Kvs) == 1 && resp.Kvs[0].ModRevision == l.rev && resp.Kvs[0].Lease == int64(l.id) {
			return nil
		}
	}
	for try := 0; ; try++ {
		if l == nil {
			var err error
			if l, err = e.grant(c, secs); err != nil {
				return err
			}
			e.leases[id] = l
		}
		resp, err := e.cli.Put(c, e.key(id), string(data), clientv3.WithLease(l.id))
		if errors.Is(err, rpctypes.ErrLeaseNotFound) && try == 0 {
			// Expired before the keepalive said so: once more, with a
			// new lease.
			l.cancel()
			l, e.leases[id] = nil, nil
			continue
		}
		if err != nil {
			// l.data stays what is stored (if the Put was applied after
			// all, its revision is not l.rev: the next Publish puts again).
			return fmt.Errorf("etcd put %s: %w", e.key(id), err)
		}
		l.data, l.rev = bytes.Clone(data), resp.Header.Revision
		return nil
	}
}

// grant makes a lease of secs seconds and keeps it alive until it is
// lost, cancelled or the backend closed.
func (e *Etcd) grant(c context.Context, secs int64) (*nodeLease, error) {
	g, err := e.cli.Grant(c, secs)
	if err != nil {
		return nil, fmt.Errorf("etcd lease: %w", err)
	}
	kctx, kcancel := context.WithCancel(e.ctx)
	ch, err := e.cli.KeepAlive(kctx, g.ID)
	if err != nil {
		kcancel()
		return nil, fmt.Errorf("etcd lease keepalive: %w", err)
	}
	l := &nodeLease{id: g.ID, ttl: secs, lost: make(chan struct{}), cancel: kcancel}
	go func() {
		for range ch {
		}
		close(l.lost)
	}()
	return l, nil
}

func (e *Etcd) put(key string, data []byte) error {
	c, cancel := ctx()
	defer cancel()
	if _, err := e.cli.Put(c, key, string(data)); err != nil {
		return fmt.Errorf("etcd put %s: %w", key, err)
	}
	return nil
}

func (e *Etcd) del(key string) error {
	c, cancel := ctx()
	defer cancel()
	if _, err := e.cli.Delete(c, key); err != nil {
		return fmt.Errorf("etcd delete %s: %w", key, err)
	}
	return nil
}

// Withdraw implements Registry: the record goes, and its lease.
func (e *Etcd) Withdraw(id string) error {
	e.mu.Lock()
	l := e.leases[id]
	delete(e.leases, id)
	e.mu.Unlock()
	if l != nil {
		l.cancel()
		c, cancel := ctx()
		defer cancel()
		// Revoking deletes the record with it; the Delete below is for
		// a record put by an earlier process (another lease).
		if _, err := e.cli.Revoke(c, l.id); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			return fmt.Errorf("etcd revoke: %w", err)
		}
	}
	return e.del(e.key(id))
}

// list reads the entries under <prefix>/<sub>/, named by the key's rest
// (sorted, as etcd returns them).
func (e *Etcd) list(sub string) ([]trust.Entry, error) {
	c, cancel := ctx()
	defer cancel()
	resp, err := e.cli.Get(c, e.prefix+"/"+sub+"/", clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("etcd get %s/%s/: %w", e.prefix, sub, err)
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
