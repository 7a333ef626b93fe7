package loader

import (
	"hash/crc32"
	"maps"
	"reflect"
	"slices"
	"testing"

	"github.com/cilium/ebpf"
)

// The lists read from the struct tags name every map and program of the
// objects, and nothing else.
func TestFieldsCoverObjects(t *testing.T) {
	spec, err := LoadWorkload()
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for name := range spec.Maps {
		if mapNameRE.MatchString(name) {
			want = append(want, name)
		}
	}
	var m WorkloadMaps
	if got := slices.Sorted(maps.Keys(mapFields(&m))); !slices.Equal(got, slices.Sorted(slices.Values(want))) {
		t.Errorf("maps from tags %v, object has %v", got, want)
	}
	for name := range addedLater {
		if _, ok := spec.Maps[name]; !ok {
			t.Errorf("addedLater names %s, which the object lacks", name)
		}
	}

	want = slices.Collect(maps.Keys(spec.Programs))
	for _, load := range []func() (*ebpf.CollectionSpec, error){LoadUplink, LoadWireguard, LoadSixin4, LoadHostroute} {
		s, err := load()
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, slices.Collect(maps.Keys(s.Programs))...)
	}
	var dp Datapath
	if got := slices.Sorted(maps.Keys(dp.programFields())); !slices.Equal(got, slices.Sorted(slices.Values(want))) {
		t.Errorf("programs from tags %v, objects have %v", got, want)
	}
}

// workloadSizes must describe the object it names: after `make generate`
// changes the object, set workloadObject to the new length and CRC-32
// and the sizes to what this test prints.
func TestWorkloadMapSizes(t *testing.T) {
	parsed, err := parseMapSizes()
	if err != nil {
		t.Fatal(err)
	}
	if len(_WorkloadBytes) != workloadObject.len || crc32.ChecksumIEEE(_WorkloadBytes) != workloadObject.crc {
		t.Errorf("workloadObject is {%d, %#08x}, the object is {%d, %#08x}: OpenMaps parses the object each time (slow, still correct)",
			workloadObject.len, workloadObject.crc, len(_WorkloadBytes), crc32.ChecksumIEEE(_WorkloadBytes))
	}
	if !reflect.DeepEqual(parsed, workloadSizes) {
		t.Errorf("workloadSizes are\n%v\nthe object has\n%v", workloadSizes, parsed)
	}
	got, err := workloadMapSizes()
	if err != nil || !reflect.DeepEqual(got, parsed) {
		t.Errorf("workloadMapSizes = %v, %v; want %v", got, err, parsed)
	}
}
