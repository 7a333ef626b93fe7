package bpfmaps

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/tenantnet/tenantnet/policy"

	"github.com/cilium/ebpf"

	"github.com/tenantnet/tenantnet/loader"
)

// Maps is the typed view of a loaded datapath's maps.
type Maps struct {
	m   *loader.WorkloadMaps
	ctl *ebpf.Program // tn_ct_ctl: conntrack housekeeping (ctfill.go)
}

// New wraps the maps of a loaded datapath.
func New(dp *loader.Datapath) *Maps { return &Maps{m: &dp.Maps, ctl: dp.Progs.TnCtCtl} }

// FromMaps wraps maps loaded some other way (tests).
func FromMaps(m *loader.WorkloadMaps) *Maps { return &Maps{m: m} }

// Rules returns the three rule stages.
func (x *Maps) Rules() RuleMaps {
	return RuleMaps{Host: x.m.TnRhostV1, Dst: x.m.TnRdstV1, Src: x.m.TnRsrcV1, Port: x.m.TnRportV1}
}

// Raw returns the generated map handles.
func (x *Maps) Raw() *loader.WorkloadMaps { return x.m }

// PortBinding ties a workload port (the host side of its veth or tap) to a
// tenant and to the addresses the workload may send from.
type PortBinding struct {
	Ifindex uint32
	Tenant  uint32
	// Addrs are the workload's own addresses (host prefixes), delegated
	// prefixes, and its link-local (fe80::/10, a /128: the only link-local
	// source it may use, and the only one its NAs may claim). Global host
	// addresses are also registered as endpoints so the uplink prefilter
	// can find the port.
	Addrs []netip.Prefix
}

// BindPort writes a binding. Addresses and endpoints are written before the
// port entry that makes the programs use them, so a port never passes
// traffic on a half-written binding. A port bound before gets exactly the
// new addresses: those it had and no longer has go (after the new ones
// are in), so re-binding never leaves an old source allowed.
func (x *Maps) BindPort(b PortBinding) error {
	if b.Tenant == 0 {
		return fmt.Errorf("bind ifindex %d: tenant 0 is reserved", b.Ifindex)
	}
	var was loader.WorkloadTnPort
	rebind := x.m.TnPortsV1.Lookup(b.Ifindex, &was) == nil
	for _, p := range b.Addrs {
		a, bits := policy.Prefix16(p)
		k := loader.WorkloadTnSrcaddrKey{Prefixlen: uint32(32 + bits), Ifindex: b.Ifindex, Addr: a}
		if err := update(x.m.TnSrcaddrV1, k, uint32(1)); err != nil {
			return fmt.Errorf("bind %s to ifindex %d: %w", p, b.Ifindex, err)
		}
		if bits == 128 && !p.Addr().IsLinkLocalUnicast() {
			ep := loader.WorkloadTnEndpoint{Ifindex: b.Ifindex, Tenant: b.Tenant}
			if err := update(x.m.TnEndpointV1, loader.WorkloadTnEndpointKey{Addr: a}, ep); err != nil {
				return fmt.Errorf("endpoint %s: %w", p, err)
			}
		}
	}
	port := loader.WorkloadTnPort{Tenant: b.Tenant}
	if err := update(x.m.TnPortsV1, b.Ifindex, port); err != nil {
		return fmt.Errorf("bind ifindex %d: %w", b.Ifindex, err)
	}
	if !rebind {
		return nil // a new port has no old addresses (and a bulk bind at boot no trie walk)
	}
	keep := map[loader.WorkloadTnSrcaddrKey]bool{}
	for _, p := range b.Addrs {
		a, bits := policy.Prefix16(p)
		keep[loader.WorkloadTnSrcaddrKey{Prefixlen: uint32(32 + bits), Ifindex: b.Ifindex, Addr: a}] = true
	}
	return x.deleteAddrs(b.Ifindex, keep)
}

// HasSource reports whether a is bound to the port ifindex as a host
// address (tn_srcaddr_v1).
func (x *Maps) HasSource(ifindex uint32, a netip.Addr) bool {
	var v uint32
	k := loader.WorkloadTnSrcaddrKey{Prefixlen: 32 + 128, Ifindex: ifindex, Addr: policy.Addr16(a)}
	return x.m.TnSrcaddrV1.Lookup(k, &v) == nil
}

// deleteAddrs removes the source addresses of ifindex not in keep, and the
// endpoints of those that are host addresses of this port.
func (x *Maps) deleteAddrs(ifindex uint32, keep map[loader.WorkloadTnSrcaddrKey]bool) error {
	var k loader.WorkloadTnSrcaddrKey
	var v uint32
	var stale []loader.WorkloadTnSrcaddrKey
	it := x.m.TnSrcaddrV1.Iterate()
	for it.Next(&k, &v) {
		if k.Ifindex == ifindex && !keep[k] {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("list addresses of ifindex %d: %w", ifindex, err)
	}
	for _, k := range stale {
		if err := x.m.TnSrcaddrV1.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return err
		}
		if k.Prefixlen == 32+128 {
			var ep loader.WorkloadTnEndpoint
			ek := loader.WorkloadTnEndpointKey{Addr: k.Addr}
			if x.m.TnEndpointV1.Lookup(ek, &ep) == nil && ep.Ifindex == ifindex {
				_ = x.m.TnEndpointV1.Delete(ek)
			}
		}
	}
	return nil
}

// UnbindPort removes a binding: the port entry first (the port then drops
// everything: fail closed), then its addresses and endpoints.
func (x *Maps) UnbindPort(ifindex uint32) error {
	// Host routing first: it would otherwise deliver to whatever link
	// takes the ifindex next.
	if x.m.TnHostrtV1 != nil {
		if err := x.DeleteHostRoute(ifindex); err != nil {
			return err
		}
	}
	if err := x.m.TnPortsV1.Delete(ifindex); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("unbind ifindex %d: %w", ifindex, err)
	}
	return x.deleteAddrs(ifindex, nil)
}

// Ports lists the bound ports: ifindex -> tenant.
func (x *Maps) Ports() (map[uint32]uint32, error) { return tenantsByIfindex(x.m.TnPortsV1) }

// tenantsByIfindex reads a map of ifindex -> struct tn_port.
func tenantsByIfindex(m *ebpf.Map) (map[uint32]uint32, error) {
	all, err := readHash[uint32, loader.WorkloadTnPort](m)
	if err != nil {
		return nil, err
	}
	out := make(map[uint32]uint32, len(all))
	for k, v := range all {
		out[k] = v.Tenant
	}
	return out, nil
}

// readHash reads a whole hash map in batches of 256 (a few syscalls: a
// shallow reconcile reads the ports on every run, and iterating costs two
// per entry), or by iterating on a kernel or map without batch lookups.
func readHash[K comparable, V any](m *ebpf.Map) (map[K]V, error) {
	out := map[K]V{}
	keys, vals := make([]K, 256), make([]V, 256)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.BatchLookup(&cursor, keys, vals, nil)
		for i := range n {
			out[keys[i]] = vals[i]
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return out, nil // the end
		}
		if err != nil {
			// ErrNotSupported, or ENOSPC (a bucket larger than a batch).
			break
		}
	}
	clear(out)
	var k K
	var v V
	it := m.Iterate()
	for it.Next(&k, &v) {
		out[k] = v
	}
	return out, it.Err()
}

// SetPolicy writes a tenant's default policy.
func (x *Maps) SetPolicy(tenant uint32, p policy.TenantPolicy) error {
	if tenant == 0 {
		return fmt.Errorf("tenant 0 is reserved")
	}
	v := loader.WorkloadTnTenant{DefaultIn: uint8(p.Inbound), DefaultOut: uint8(p.Outbound)}
	if err := update(x.m.TnTenantV1, tenant, v); err != nil {
		return fmt.Errorf("set policy of tenant %d: %w", tenant, err)
	}
	return nil
}

// Policy reads a tenant's default policy (policy.DefaultPolicy when unset).
func (x *Maps) Policy(tenant uint32) (policy.TenantPolicy, error) {
	var v loader.WorkloadTnTenant
	err := x.m.TnTenantV1.Lookup(tenant, &v)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return policy.DefaultPolicy, nil
	}
	if err != nil {
		return policy.TenantPolicy{}, err
	}
	p := policy.TenantPolicy{Inbound: policy.Action(v.DefaultIn), Outbound: policy.Action(v.DefaultOut)}
	if p.Inbound == policy.ActionNone {
		p.Inbound = policy.DefaultPolicy.Inbound
	}
	if p.Outbound == policy.ActionNone {
		p.Outbound = policy.DefaultPolicy.Outbound
	}
	return p, nil
}

// SetTenantPrefix records that prefix belongs to tenant: workloads of other
// tenants can neither reach it nor be reached from it.
func (x *Maps) SetTenantPrefix(p netip.Prefix, tenant uint32) error {
	a, bits := policy.Prefix16(p)
	k := loader.WorkloadTnPrefixKey{Prefixlen: uint32(bits), Addr: a}
	if err := update(x.m.TnPrefixV1, k, tenant); err != nil {
		return fmt.Errorf("set prefix %s of tenant %d: %w", p, tenant, err)
	}
	return nil
}

// DeleteTenantPrefix forgets a prefix.
func (x *Maps) DeleteTenantPrefix(p netip.Prefix) error {
	a, bits := policy.Prefix16(p)
	k := loader.WorkloadTnPrefixKey{Prefixlen: uint32(bits), Addr: a}
	if err := x.m.TnPrefixV1.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return err
	}
	return nil
}

// SetSampleRate sets how often drops produce events (0 = never, 1 = every
// drop, N = about 1 in N).
func (x *Maps) SetSampleRate(n uint32) error {
	var meta loader.WorkloadTnMeta
	if err := x.m.TnMetaV1.Lookup(uint32(0), &meta); err != nil {
		return err
	}
	meta.SampleRate = n
	return x.m.TnMetaV1.Update(uint32(0), meta, ebpf.UpdateExist)
}

// ApplyRules replaces the whole rule content of the maps with rules,
// reading the current content from the kernel. The node service and
// tenantfw use Diff against their saved state instead, which skips the
// read.
func (x *Maps) ApplyRules(rules []policy.Rule) (Change, error) {
	want, err := Compile(rules)
	if err != nil {
		return Change{}, err
	}
	have, err := ReadRules(x.Rules())
	if err != nil {
		return Change{}, err
	}
	return Diff(x.Rules(), have, want)
}

// TenantState is what the maps hold of a tenant outside its rules.
type TenantState struct {
	Policy   policy.TenantPolicy
	Prefixes []netip.Prefix
}

// SyncTenants makes tn_tenant_v1 and tn_prefix_v1 hold exactly the given
// tenants.
func (x *Maps) SyncTenants(want map[uint32]TenantState) error {
	wantPrefix := map[loader.WorkloadTnPrefixKey]uint32{}
	for id, t := range want {
		if err := x.SetPolicy(id, t.Policy); err != nil {
			return err
		}
		for _, p := range t.Prefixes {
			a, bits := policy.Prefix16(p)
			wantPrefix[loader.WorkloadTnPrefixKey{Prefixlen: uint32(bits), Addr: a}] = id
		}
	}
	var tid uint32
	var tv loader.WorkloadTnTenant
	var staleT []uint32
	it := x.m.TnTenantV1.Iterate()
	for it.Next(&tid, &tv) {
		if _, ok := want[tid]; !ok {
			staleT = append(staleT, tid)
		}
	}
	if err := it.Err(); err != nil {
		return err
	}
	if err := deleteMany(x.m.TnTenantV1, staleT); err != nil {
		return err
	}
	have := map[loader.WorkloadTnPrefixKey]uint32{}
	if err := readAll(x.m.TnPrefixV1, have); err != nil {
		return err
	}
	if _, err := put(x.m.TnPrefixV1, have, wantPrefix); err != nil {
		return err
	}
	_, err := del(x.m.TnPrefixV1, have, wantPrefix)
	return err
}

// DeletePolicy removes a tenant's policy entry.
func (x *Maps) DeletePolicy(tenant uint32) error {
	if err := x.m.TnTenantV1.Delete(tenant); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return err
	}
	return nil
}
