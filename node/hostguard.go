package node

// The node itself, seen from its tenants. A workload's packets for the
// node (its gateway on the bridge, its uplink addresses, anything it
// listens on) are delivered locally, past the datapath's routes: the
// workload port's rules decide what leaves the workload, not what the
// node accepts. So tenantnetd keeps an nftables table of its own on the
// input hook that lets in from the tenants' interfaces (the bridges tnb*,
// the WireGuard devices tg*) only what a workload needs of its node:
// neighbour discovery and router solicitation with the gateway, MLD,
// ICMPv6 errors and echo replies (answers to the node's own pings), and
// the host services the operator lists (config host_services). The rest
// (sshd, etcd, metrics, the WireGuard ports, anything bound to the node's
// addresses) is dropped and counted. On a node with a proxy_prefix, what
// is for the IPv4 proxy's own sockets in it passes too (proxy96.go).
//
// Input only: forwarded tenant traffic never meets this table, and no
// conntrack expression is used (it would turn on the kernel's connection
// tracking for every forwarded packet of the namespace).

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/tenantnet/tenantnet/config"
)

// hostGuardTable is tenantnetd's nftables table (inet family).
const hostGuardTable = "tenantnet"

// tenantIfPrefixes are the names of the interfaces tenants' packets come
// in by: bridges and WireGuard devices.
var tenantIfPrefixes = []string{"tnb", "tg"}

// icmpv6Allowed are the ICMPv6 types a workload may send its node.
var icmpv6Allowed = []uint8{
	1, 2, 3, 4, // destination unreachable, packet too big, time exceeded, parameter problem
	129,                // echo reply (to the node's own pings)
	130, 131, 132, 143, // MLD query, report, done; MLDv2 report
	133, 135, 136, // router solicitation, neighbour solicitation and advertisement
}

// hostGuardRules builds the table's rules into c (one batch): input chain
// jumping to from_tenants for the tenants' interfaces.
func hostGuardRules(c *nftables.Conn, services []config.HostService, proxy []netip.Prefix) {
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: hostGuardTable})
	policy := nftables.ChainPolicyAccept
	input := c.AddChain(&nftables.Chain{Name: "input", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &policy})
	from := c.AddChain(&nftables.Chain{Name: "from_tenants", Table: t})
	for _, p := range tenantIfPrefixes {
		c.AddRule(&nftables.Rule{Table: t, Chain: input, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
			// A prefix compare: only len(Data) bytes of the name (nft's "tnb*").
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(p)},
			&expr.Verdict{Kind: expr.VerdictJump, Chain: from.Name},
		}})
	}
	for _, typ := range icmpv6Allowed {
		c.AddRule(&nftables.Rule{Table: t, Chain: from, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_ICMPV6}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{typ}},
			&expr.Verdict{Kind: expr.VerdictAccept},
		}})
	}
	for _, s := range services {
		proto := byte(unix.IPPROTO_TCP)
		if s.Proto == "udp" {
			proto = unix.IPPROTO_UDP
		}
		c.AddRule(&nftables.Rule{Table: t, Chain: from, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, s.Port)},
			&expr.Counter{},
			&expr.Verdict{Kind: expr.VerdictAccept},
		}})
	}
	for _, p := range proxy {
		c.AddRule(proxyGuardRule(t, from, p))
	}
	c.AddRule(&nftables.Rule{Table: t, Chain: from, Exprs: []expr.Any{
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}})
}

// syncHostGuard makes the table exactly what the configuration asks for.
// A table that is there with the rule count it should have is left alone
// (the shallow check of every reconcile); anything else is replaced in one
// batch, so there is no moment without it.
func (s *Service) syncHostGuard(r *repairs) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	want := len(tenantIfPrefixes) + len(icmpv6Allowed) + len(s.cfg.HostServices) + len(proxyPrefixes64(s.cfg)) + 1
	t, err := c.ListTableOfFamily(hostGuardTable, nftables.TableFamilyINet)
	if err == nil {
		if n, ok := hostGuardRuleCount(c, t); ok && n == want {
			return nil
		}
		c.DelTable(t)
	} else if !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("list nftables table %s: %w", hostGuardTable, err)
	}
	hostGuardRules(c, s.cfg.HostServices, proxyPrefixes64(s.cfg))
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables table %s: %w", hostGuardTable, err)
	}
	if t != nil {
		r.add("restored the nftables table %s (workloads reach the node only for ND, ICMPv6 errors and %v)", hostGuardTable, s.cfg.HostServices)
	}
	return nil
}

// hostGuardRuleCount counts the rules of both chains; ok is false when a
// chain is missing.
func hostGuardRuleCount(c *nftables.Conn, t *nftables.Table) (int, bool) {
	n := 0
	for _, name := range []string{"input", "from_tenants"} {
		ch, err := c.ListChain(t, name)
		if err != nil {
			return 0, false
		}
		rules, err := c.GetRules(t, ch)
		if err != nil {
			return 0, false
		}
		n += len(rules)
	}
	return n, true
}

// RemoveHostGuard deletes the table (cleanup). It reports whether there
// was one.
func RemoveHostGuard() (bool, error) {
	c, err := nftables.New()
	if err != nil {
		return false, err
	}
	t, err := c.ListTableOfFamily(hostGuardTable, nftables.TableFamilyINet)
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	c.DelTable(t)
	return true, c.Flush()
}
