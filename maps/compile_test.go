package maps

import (
	"reflect"
	"testing"
)

func rulesForTest() []Rule {
	var rs []Rule
	for i := 0; i < 200; i++ {
		rs = append(rs, Rule{ID: uint32(i + 1), Tenant: 1 + uint32(i%3), Dir: DirIn, Proto: ProtoTCP,
			PortLo: uint16(1000 + i), PortHi: uint16(1000 + i + i%7), Dst: mustPrefix("2001:db8::" + itoa(i+1)), Action: ActionAllow})
	}
	rs = append(rs, Rule{ID: 1000, Tenant: 1, Dir: DirIn, Proto: ProtoAny, Src: mustPrefix("2001:db8:bad::/48"), Action: ActionDeny})
	return rs
}

func itoa(i int) string {
	return string(rune('0'+i/100%10)) + string(rune('0'+i/10%10)) + string(rune('0'+i%10))
}

// Compile is deterministic, and a one-rule change touches only the entries
// of the prefix it names: the property that makes small updates cheap.
func TestCompileStableAndLocal(t *testing.T) {
	rs := rulesForTest()
	a, err := Compile(rs)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Compile(append([]Rule(nil), rs...))
	if !reflect.DeepEqual(a, b) {
		t.Fatal("compile is not deterministic")
	}
	more := append(append([]Rule(nil), rs...), Rule{ID: 2000, Tenant: 2, Dir: DirIn, Proto: ProtoUDP, PortLo: 53, PortHi: 53,
		Dst: mustPrefix("2001:db8::999"), Action: ActionAllow})
	c, err := Compile(more)
	if err != nil {
		t.Fatal(err)
	}
	changed := 0
	for k, v := range c.Dst {
		if old, ok := a.Dst[k]; !ok || old != v {
			changed++
		}
	}
	for k, v := range c.Host {
		if old, ok := a.Host[k]; !ok || old != v {
			changed++
		}
	}
	for k, v := range c.Port {
		if old, ok := a.Port[k]; !ok || old != v {
			changed++
		}
	}
	for k := range a.Port {
		if _, ok := c.Port[k]; !ok {
			changed++
		}
	}
	if changed != 2 { // one stage-1 entry, one stage-3 entry
		t.Fatalf("adding one rule changed %d entries, want 2", changed)
	}
}

func TestCompileRejectsInvalid(t *testing.T) {
	if _, err := Compile([]Rule{{ID: 1, Tenant: 0, Dir: DirIn, Action: ActionAllow}}); err == nil {
		t.Fatal("tenant 0 compiled")
	}
}
