package policy

import (
	"net/netip"
	"strings"
	"testing"
)

func mustPrefix(s string) netip.Prefix {
	p, err := ParsePrefix(s)
	if err != nil {
		panic(err)
	}
	return p
}

func TestValidate(t *testing.T) {
	ok := Rule{ID: 1, Tenant: 7, Dir: DirIn, Proto: ProtoTCP, PortLo: 80, PortHi: 80, Dst: mustPrefix("2001:db8::1"), Action: ActionAllow}
	cases := []struct {
		name string
		edit func(*Rule)
		want string // substring of the error; "" = valid
	}{
		{"valid", func(r *Rule) {}, ""},
		{"tenant 0", func(r *Rule) { r.Tenant = 0 }, "tenant 0"},
		{"no direction", func(r *Rule) { r.Dir = 0 }, "direction"},
		{"bad proto", func(r *Rule) { r.Proto = 47 }, "proto 47"},
		{"no action", func(r *Rule) { r.Action = 0 }, "action"},
		{"port with icmp", func(r *Rule) { r.Proto = ProtoICMPv6 }, "ports need proto tcp or udp"},
		{"port 0", func(r *Rule) { r.PortLo = 0 }, "port 0"},
		{"inverted", func(r *Rule) { r.PortLo, r.PortHi = 90, 80 }, "inverted"},
		{"host bits", func(r *Rule) { r.Dst = netip.MustParsePrefix("2001:db8::1/64") }, "host bits"},
		{"family mix", func(r *Rule) { r.Src = mustPrefix("10.0.0.0/8") }, "address family"},
		{"icmp on v6", func(r *Rule) { r.Proto, r.PortLo, r.PortHi = ProtoICMP, 0, 0 }, "icmpv6"},
		{"icmpv6 on v4", func(r *Rule) { r.Proto, r.PortLo, r.PortHi, r.Dst = ProtoICMPv6, 0, 0, mustPrefix("10.0.0.1") }, "IPv4 uses icmp"},
		{"any proto any port", func(r *Rule) { r.Proto, r.PortLo, r.PortHi = ProtoAny, 0, 0 }, ""},
	}
	for _, c := range cases {
		r := ok
		c.edit(&r)
		err := r.Validate()
		if c.want == "" && err != nil {
			t.Errorf("%s: unexpected %v", c.name, err)
		}
		if c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%s: got %v, want error containing %q", c.name, err, c.want)
		}
	}
}

func TestValidateSet(t *testing.T) {
	a := Rule{ID: 1, Tenant: 1, Dir: DirIn, Proto: ProtoTCP, PortLo: 22, PortHi: 22, Action: ActionAllow}
	b := a
	b.ID = 2
	if err := ValidateSet([]Rule{a, b}); err == nil || !strings.Contains(err.Error(), "duplicate of rule 1") {
		t.Errorf("duplicate: %v", err)
	}
	b.Action = ActionDeny
	if err := ValidateSet([]Rule{a, b}); err == nil || !strings.Contains(err.Error(), "conflicts with rule 1") {
		t.Errorf("conflict: %v", err)
	}
	b.ID = 1
	b.PortLo, b.PortHi = 23, 23
	if err := ValidateSet([]Rule{a, b}); err == nil || !strings.Contains(err.Error(), "duplicate rule id") {
		t.Errorf("same id: %v", err)
	}
}

func TestParse(t *testing.T) {
	for _, c := range []struct {
		in      string
		lo, hi  uint16
		wantErr string
	}{
		{"any", 0, 0, ""}, {"80", 80, 80, ""}, {"1-65535", 1, 65535, ""},
		{"0", 0, 0, "out of range"}, {"65536", 0, 0, "out of range"}, {"90-80", 0, 0, "inverted"}, {"x", 0, 0, "not a number"},
	} {
		lo, hi, err := ParsePorts(c.in)
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("%q: got %v, want %q", c.in, err, c.wantErr)
			}
			continue
		}
		if err != nil || lo != c.lo || hi != c.hi {
			t.Errorf("%q: got %d-%d %v", c.in, lo, hi, err)
		}
	}
	for in, want := range map[string]string{"10.0.0.1": "10.0.0.1/32", "2001:db8::/32": "2001:db8::/32", "any": "invalid Prefix", "::ffff:10.0.0.0/104": "10.0.0.0/8"} {
		p, err := ParsePrefix(in)
		if err != nil || p.String() != want {
			t.Errorf("ParsePrefix(%q) = %v, %v; want %s", in, p, err, want)
		}
	}
	if _, err := ParsePrefix("10.0.0.1/8"); err == nil || !strings.Contains(err.Error(), "did you mean 10.0.0.0/8") {
		t.Errorf("host bits: %v", err)
	}
	a, bits := Prefix16(mustPrefix("10.1.0.0/16"))
	if bits != 112 || AddrFrom16(a) != netip.MustParseAddr("10.1.0.0") || PrefixFrom16(a, bits) != mustPrefix("10.1.0.0/16") {
		t.Errorf("IPv4 prefix mapping: %v %d", a, bits)
	}
}
