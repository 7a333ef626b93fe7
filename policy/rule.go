package policy

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Direction says which rule set a rule belongs to.
type Direction uint8

const (
	DirIn  Direction = 1 // to the workload (TN_DIR_IN)
	DirOut Direction = 2 // from the workload (TN_DIR_OUT)
	// DirPrefilter only appears in counters and events: drops by the
	// uplink XDP prefilter, which applies the inbound rules.
	DirPrefilter Direction = 3
	// DirWG counts what tn_from_wg did with packets arriving over a
	// tenant's WireGuard device.
	DirWG Direction = 4
	// DirFast counts packets a port program redirected straight to the
	// WireGuard device (also counted under their verdict).
	DirFast Direction = 5
	// Dir6in4 counts packets put into and taken out of 6in4 tunnels, and
	// the tunnels' drops.
	Dir6in4 Direction = 6
)

func (d Direction) String() string {
	switch d {
	case DirIn:
		return "in"
	case DirOut:
		return "out"
	case DirPrefilter:
		return "prefilter"
	case DirWG:
		return "wireguard"
	case DirFast:
		return "fast-path"
	case Dir6in4:
		return "6in4"
	}
	return fmt.Sprintf("dir(%d)", uint8(d))
}

// ParseDirection parses "in" or "out".
func ParseDirection(s string) (Direction, error) {
	switch s {
	case "in":
		return DirIn, nil
	case "out":
		return DirOut, nil
	}
	return 0, fmt.Errorf("direction %q: want in or out", s)
}

// Action is what a rule or default policy does with a new flow.
type Action uint8

const (
	ActionNone  Action = 0
	ActionAllow Action = 1
	ActionDeny  Action = 2
)

func (a Action) String() string {
	switch a {
	case ActionAllow:
		return "allow"
	case ActionDeny:
		return "deny"
	}
	return "none"
}

// ParseAction parses "allow" or "deny".
func ParseAction(s string) (Action, error) {
	switch s {
	case "allow":
		return ActionAllow, nil
	case "deny":
		return ActionDeny, nil
	}
	return 0, fmt.Errorf("action %q: want allow or deny", s)
}

// IP protocol numbers a rule may name; 0 is "any".
const (
	ProtoAny    uint8 = 0
	ProtoICMP   uint8 = 1
	ProtoTCP    uint8 = 6
	ProtoUDP    uint8 = 17
	ProtoICMPv6 uint8 = 58
)

var protoNames = map[uint8]string{ProtoAny: "any", ProtoICMP: "icmp", ProtoTCP: "tcp", ProtoUDP: "udp", ProtoICMPv6: "icmpv6"}

// ProtoName is the name of a protocol number ("tcp"), or the number.
func ProtoName(p uint8) string {
	if n, ok := protoNames[p]; ok {
		return n
	}
	return strconv.Itoa(int(p))
}

// ParseProto parses any, tcp, udp, icmp or icmpv6.
func ParseProto(s string) (uint8, error) {
	for n, name := range protoNames {
		if s == name {
			return n, nil
		}
	}
	return 0, fmt.Errorf("protocol %q: want any, tcp, udp, icmp or icmpv6", s)
}

// Rule is one firewall rule of a tenant. The zero Dst or Src means any
// address; PortLo = PortHi = 0 means any port.
type Rule struct {
	ID      uint32       `json:"id"`
	Tenant  uint32       `json:"tenant"`
	Dir     Direction    `json:"-"`
	Proto   uint8        `json:"-"`
	PortLo  uint16       `json:"port_lo,omitempty"`
	PortHi  uint16       `json:"port_hi,omitempty"`
	Dst     netip.Prefix `json:"-"`
	Src     netip.Prefix `json:"-"`
	Action  Action       `json:"-"`
	Comment string       `json:"comment,omitempty"`
	// Owner is who keeps the rule: "" for the tenant's own rules (tenantfw),
	// OwnerNode for the rules tenantnetd adds and removes with a network's
	// members. A tenant's rule set (tenantfw apply, rule flush, rule del)
	// never edits or removes an owned rule; the comment is free text and
	// decides nothing.
	Owner string `json:"owner,omitempty"`
}

// OwnerNode owns the rules tenantnetd keeps (the "same network" rules).
const OwnerNode = "tenantnetd"

// SameNetworkComment says to a person what a "same network" rule is for;
// what makes it tenantnetd's is its Owner.
const SameNetworkComment = "same network (added by tenantnetd)"

// SameNetworkRule lets traffic from src (one of a network's /64s, on
// this node or another member) into the network's tenant: tenantnetd's
// rule, one per /64, unless the tenant turned them off.
func SameNetworkRule(tenant uint32, src netip.Prefix) Rule {
	return Rule{Tenant: tenant, Dir: DirIn, Proto: ProtoAny, Src: src, Action: ActionAllow,
		Comment: SameNetworkComment, Owner: OwnerNode}
}

// Match is the part of a rule that selects packets; two rules with the
// same Match are duplicates (same action) or in conflict.
type Match struct {
	Tenant         uint32
	Dir            Direction
	Proto          uint8
	PortLo, PortHi uint16
	Dst, Src       netip.Prefix
}

// Match returns the selector of r.
func (r Rule) Match() Match {
	return Match{r.Tenant, r.Dir, r.Proto, r.PortLo, r.PortHi, r.Dst.Masked(), r.Src.Masked()}
}

// Ports renders the port selector: "any", "80" or "8000-8080".
func (r Rule) Ports() string {
	switch {
	case r.PortLo == 0 && r.PortHi == 0:
		return "any"
	case r.PortLo == r.PortHi:
		return strconv.Itoa(int(r.PortLo))
	}
	return fmt.Sprintf("%d-%d", r.PortLo, r.PortHi)
}

// ParsePorts parses "any", "80" or "8000-8080".
func ParsePorts(s string) (lo, hi uint16, err error) {
	if s == "" || s == "any" {
		return 0, 0, nil
	}
	a, b, isRange := strings.Cut(s, "-")
	if !isRange {
		b = a
	}
	l, err1 := parsePort(a)
	h, err2 := parsePort(b)
	if err1 != nil {
		return 0, 0, err1
	}
	if err2 != nil {
		return 0, 0, err2
	}
	if l > h {
		return 0, 0, fmt.Errorf("port range %q is inverted", s)
	}
	return l, h, nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("port %q is not a number", s)
	}
	if n < 1 || n > 65535 {
		return 0, fmt.Errorf("port %d is out of range 1-65535", n)
	}
	return uint16(n), nil
}

func prefixString(p netip.Prefix) string {
	if !p.IsValid() {
		return "any"
	}
	if p.Bits() == p.Addr().BitLen() {
		return p.Addr().String()
	}
	return p.String()
}

func (r Rule) String() string {
	s := fmt.Sprintf("tenant %d %s %s %s port %s dst %s src %s",
		r.Tenant, r.Dir, r.Action, ProtoName(r.Proto), r.Ports(), prefixString(r.Dst), prefixString(r.Src))
	return s
}

// FieldError names the field and value a validation failed on.
type FieldError struct {
	Field string
	Value string
	Msg   string
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("%s %s: %s", e.Field, e.Value, e.Msg)
}

func family(p netip.Prefix) int {
	if !p.IsValid() {
		return 0
	}
	if p.Addr().Is4() {
		return 4
	}
	return 6
}

// Validate checks one rule on its own.
func (r Rule) Validate() error {
	if r.Tenant == 0 {
		return &FieldError{"tenant", "0", "tenant ids start at 1"}
	}
	if r.Dir != DirIn && r.Dir != DirOut {
		return &FieldError{"direction", r.Dir.String(), "want in or out"}
	}
	if _, ok := protoNames[r.Proto]; !ok {
		return &FieldError{"proto", ProtoName(r.Proto), "want any, tcp, udp, icmp or icmpv6"}
	}
	if r.Action != ActionAllow && r.Action != ActionDeny {
		return &FieldError{"action", r.Action.String(), "want allow or deny"}
	}
	if r.Owner != "" && r.Owner != OwnerNode {
		return &FieldError{"owner", r.Owner, "want none (the tenant's) or " + OwnerNode}
	}
	anyPort := r.PortLo == 0 && r.PortHi == 0
	if !anyPort {
		if r.Proto != ProtoTCP && r.Proto != ProtoUDP {
			return &FieldError{"port", r.Ports(), "ports need proto tcp or udp"}
		}
		if r.PortLo == 0 || r.PortHi == 0 {
			return &FieldError{"port", r.Ports(), "port 0 is not a port"}
		}
		if r.PortLo > r.PortHi {
			return &FieldError{"port", r.Ports(), "inverted range"}
		}
	}
	for _, f := range []struct {
		name string
		p    netip.Prefix
	}{{"dst", r.Dst}, {"src", r.Src}} {
		if f.p.IsValid() && f.p.Masked() != f.p {
			return &FieldError{f.name, f.p.String(), "host bits set"}
		}
		if f.p.IsValid() && f.p.Addr().Zone() != "" {
			return &FieldError{f.name, f.p.String(), "zones are not allowed"}
		}
	}
	fd, fs := family(r.Dst), family(r.Src)
	if fd != 0 && fs != 0 && fd != fs {
		return &FieldError{"src", r.Src.String(), "address family differs from dst " + r.Dst.String()}
	}
	fam := fd
	if fam == 0 {
		fam = fs
	}
	if r.Proto == ProtoICMP && fam == 6 {
		return &FieldError{"proto", "icmp", "IPv6 uses icmpv6"}
	}
	if r.Proto == ProtoICMPv6 && fam == 4 {
		return &FieldError{"proto", "icmpv6", "IPv4 uses icmp"}
	}
	if len(r.Comment) > 256 {
		return &FieldError{"comment", r.Comment[:16] + "...", "longer than 256 bytes"}
	}
	return nil
}

// ValidateSet checks every rule and the set as a whole: no duplicate or
// conflicting selectors, no duplicate ids.
func ValidateSet(rules []Rule) error {
	// Indexes, not copies of the rules: at 100,000 rules a map of Rule
	// values was tens of megabytes to allocate and clear.
	seen := make(map[Match]int32, len(rules))
	ids := make(map[uint32]bool, len(rules))
	for i, r := range rules {
		if err := r.Validate(); err != nil {
			return fmt.Errorf("rule %d: %w", r.ID, err)
		}
		if ids[r.ID] {
			return fmt.Errorf("rule %d: duplicate rule id", r.ID)
		}
		ids[r.ID] = true
		if j, ok := seen[r.Match()]; ok {
			o := rules[j]
			if o.Action == r.Action {
				return fmt.Errorf("rule %d: duplicate of rule %d (%s)", r.ID, o.ID, o)
			}
			return fmt.Errorf("rule %d: conflicts with rule %d (%s): same match, other action", r.ID, o.ID, o)
		}
		seen[r.Match()] = int32(i)
	}
	return nil
}

// TenantPolicy is a tenant's default for new flows no rule decides.
type TenantPolicy struct {
	Inbound  Action
	Outbound Action
}

// DefaultPolicy is what a tenant without an entry gets.
var DefaultPolicy = TenantPolicy{Inbound: ActionDeny, Outbound: ActionAllow}
