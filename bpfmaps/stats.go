package bpfmaps

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"time"

	"github.com/tenantnet/tenantnet/policy"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/tenantnet/tenantnet/loader"
)

// Counter is one row of tn_stats_v1, summed over CPUs.
type Counter struct {
	Tenant  uint32           `json:"tenant"`
	Dir     policy.Direction `json:"-"`
	Reason  policy.Reason    `json:"-"`
	Packets uint64           `json:"packets"`
	Bytes   uint64           `json:"bytes"`
}

// StatsKey returns the map key of a counter.
func StatsKey(tenant uint32, dir policy.Direction, r policy.Reason) loader.WorkloadTnStatsKey {
	return loader.WorkloadTnStatsKey{Tenant: tenant, Dir: uint8(dir), Reason: uint16(r)}
}

// Counter reads one counter (zero when absent).
func (x *Maps) Counter(tenant uint32, dir policy.Direction, r policy.Reason) (Counter, error) {
	var per []loader.WorkloadTnStatsVal
	c := Counter{Tenant: tenant, Dir: dir, Reason: r}
	err := x.m.TnStatsV1.Lookup(StatsKey(tenant, dir, r), &per)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return c, nil
	}
	if err != nil {
		return c, err
	}
	for _, v := range per {
		c.Packets += v.Packets
		c.Bytes += v.Bytes
	}
	return c, nil
}

// Counters reads every counter (of one tenant, or all for 0), sorted.
func (x *Maps) Counters(tenant uint32) ([]Counter, error) {
	var out []Counter
	var k loader.WorkloadTnStatsKey
	var per []loader.WorkloadTnStatsVal
	it := x.m.TnStatsV1.Iterate()
	for it.Next(&k, &per) {
		if tenant != 0 && k.Tenant != tenant {
			continue
		}
		c := Counter{Tenant: k.Tenant, Dir: policy.Direction(k.Dir), Reason: policy.Reason(k.Reason)}
		for _, v := range per {
			c.Packets += v.Packets
			c.Bytes += v.Bytes
		}
		out = append(out, c)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read tn_stats_v1: %w", err)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Tenant != b.Tenant {
			return a.Tenant < b.Tenant
		}
		if a.Dir != b.Dir {
			return a.Dir < b.Dir
		}
		return a.Reason < b.Reason
	})
	return out, nil
}

// Losses is what the datapath could not record (tn_errors_v1), summed
// over CPUs: packets missing from the counters because tn_stats_v1 was
// full, and drop events lost because tn_events_v1 was full.
type Losses struct {
	StatsFull  uint64 `json:"stats_full"`
	EventsLost uint64 `json:"events_lost"`
}

// Losses reads tn_errors_v1; all zero on a datapath whose pins predate it
// (the next load adds it).
func (x *Maps) Losses() (Losses, error) {
	var l Losses
	if x.m.TnErrorsV1 == nil {
		return l, nil
	}
	for key, dst := range map[loader.WorkloadTnError]*uint64{
		loader.WorkloadTnErrorTN_ERR_STATS_FULL:  &l.StatsFull,
		loader.WorkloadTnErrorTN_ERR_EVENTS_LOST: &l.EventsLost,
	} {
		var per []uint64
		if err := x.m.TnErrorsV1.Lookup(uint32(key), &per); err != nil {
			return l, fmt.Errorf("read tn_errors_v1[%d]: %w", key, err)
		}
		for _, n := range per {
			*dst += n
		}
	}
	return l, nil
}

// Event is a decoded drop event.
type Event struct {
	TimeNs  uint64           `json:"ts_ns"`
	Tenant  uint32           `json:"tenant"`
	Ifindex uint32           `json:"ifindex"`
	Dir     policy.Direction `json:"-"`
	Reason  policy.Reason    `json:"-"`
	Proto   uint8            `json:"-"`
	Src     netip.Addr       `json:"src"`
	Dst     netip.Addr       `json:"dst"`
	Sport   uint16           `json:"sport"`
	Dport   uint16           `json:"dport"`
}

// EventReader reads drop events from tn_events_v1.
type EventReader struct {
	r *ringbuf.Reader
}

// NewEventReader opens the ring buffer. Only one reader sees each event.
func (x *Maps) NewEventReader() (*EventReader, error) {
	r, err := ringbuf.NewReader(x.m.TnEventsV1)
	if err != nil {
		return nil, fmt.Errorf("open tn_events_v1: %w", err)
	}
	return &EventReader{r: r}, nil
}

// Read blocks for the next event; it returns an error wrapping
// os.ErrClosed after Close.
func (e *EventReader) Read() (Event, error) {
	rec, err := e.r.Read()
	if err != nil {
		return Event{}, err
	}
	return DecodeEvent(rec.RawSample)
}

// SetDeadline makes Read return os.ErrDeadlineExceeded after t.
func (e *EventReader) SetDeadline(t time.Time) { e.r.SetDeadline(t) }

// Close stops the reader.
func (e *EventReader) Close() error { return e.r.Close() }

// DecodeEvent decodes one raw tn_event.
func DecodeEvent(b []byte) (Event, error) {
	const size = 8 + 4 + 4 + 2 + 1 + 1 + 2 + 2 + 16 + 16
	if len(b) < size {
		return Event{}, fmt.Errorf("short event: %d bytes", len(b))
	}
	le := func(o, n int) uint64 {
		var v uint64
		for i := n - 1; i >= 0; i-- {
			v = v<<8 | uint64(b[o+i])
		}
		return v
	}
	var src, dst [16]byte
	copy(src[:], b[24:40])
	copy(dst[:], b[40:56])
	return Event{
		TimeNs: le(0, 8), Tenant: uint32(le(8, 4)), Ifindex: uint32(le(12, 4)),
		Reason: policy.Reason(le(16, 2)), Dir: policy.Direction(b[18]), Proto: b[19],
		Sport: uint16(b[20])<<8 | uint16(b[21]), Dport: uint16(b[22])<<8 | uint16(b[23]),
		Src: policy.AddrFrom16(src), Dst: policy.AddrFrom16(dst),
	}, nil
}
