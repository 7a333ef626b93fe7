// Package loader loads the tenantnet BPF objects, pins their maps,
// programs and links under a bpffs directory, and attaches the programs to
// workload ports (TCX, or clsact + cls_bpf before 6.6) and to the uplink
// (XDP). Loading again over existing pins is an upgrade: maps with the same
// schema are reused (rules and flows kept) and attached programs are
// replaced in place.
package loader

import (
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sync"

	"github.com/tenantnet/tenantnet/internal/defaults"

	"github.com/cilium/ebpf"
)

// SchemaVersion is the layout version of the pinned maps, stored in
// tn_meta_v1; a map's _vN suffix is the schema that introduced its layout
// (the maps schema 2 changed are _v2, the others kept their _v1 name).
// Keep in sync with TN_SCHEMA_VERSION in bpf/lib/common.h (a test checks
// it).
const SchemaVersion = 2

// retired are the maps of older schemas this build migrates from and
// then unpins (migrate): schema 1's LRU conntrack and fragment tables.
var retired = map[string]bool{"tn_ct_v1": true, "tn_frag_v1": true}

// DefaultPinDir is where a node's datapath lives.
const DefaultPinDir = defaults.PinDir

const (
	progsDir = "progs"
	linksDir = "links"
)

// ErrSchemaMismatch is returned when the pinned maps were created by a build
// with another schema and no migration to this one exists.
var ErrSchemaMismatch = errors.New("pinned maps have an incompatible schema")

// ErrNotLoaded is returned by Open when no datapath is pinned.
var ErrNotLoaded = errors.New("no tenantnet datapath is loaded")

// Options tune Load.
type Options struct {
	// PinDir is the bpffs directory for maps, programs and links.
	PinDir string
	// Logger receives what the loader decides; slog.Default() when nil.
	Logger *slog.Logger
	// SampleRate for drop events written when the maps are created
	// (1 = every drop, 0 = none). Existing maps keep theirs.
	SampleRate uint32
}

// Datapath is a loaded datapath: every map and program, pinned.
type Datapath struct {
	PinDir string
	Maps   WorkloadMaps
	Progs  WorkloadPrograms
	Uplink *ebpf.Program
	WG     *ebpf.Program // tn_from_wg
	SixIn4 *ebpf.Program // tn_6in4_out
	// UplinkIn is tn_uplink_in, host routing from the uplink (TC
	// ingress, attached with fast_path on).
	UplinkIn *ebpf.Program
	log      *slog.Logger
	created  bool

	tagsMu  sync.Mutex
	tags    map[ebpf.ProgramID]string // name/tag of attached program ids (Alive)
	ownTags map[*ebpf.Program]string  // name/tag of Progs, WG
}

// addedLater are maps newer builds added to schema 1 without changing any
// existing layout: pins made by an older build lack them until the next
// Load creates them, and readers must cope with their absence.
var addedLater = map[string]bool{
	"tn_route_v1": true, "tn_wgdev_v1": true, "tn_errors_v1": true, "tn_6in4_v1": true, "tn_6in4ep_v1": true,
	"tn_hostrt_v1": true, "tn_path_v1": true, "tn_uplink_v1": true,
}

// progAddedLater are programs newer builds added: Open copes with pins of
// an older build that lack them.
var progAddedLater = map[string]bool{"tn_from_wg": true, "tn_6in4_out": true, "tn_uplink_in": true}

var mapNameRE = regexp.MustCompile(`^tn_[a-z0-9]+_v([0-9]+)$`)

// checkSchema refuses pins this build cannot use: a tn_*_vN map that is
// neither one of this build's maps nor one it migrates from (retired),
// for example a newer build's, or a meta entry of another schema than
// this one or schema 1 (which Load migrates from). It returns the schema
// the pins say they are (0: none pinned yet).
func checkSchema(dir string) (uint32, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return 0, nil
		}
		return 0, fmt.Errorf("read pin directory: %w", err)
	}
	ours := mapFields(&WorkloadMaps{})
	for _, e := range entries {
		if !mapNameRE.MatchString(e.Name()) {
			continue
		}
		if _, ok := ours[e.Name()]; !ok && !retired[e.Name()] {
			v := mapNameRE.FindStringSubmatch(e.Name())[1]
			return 0, fmt.Errorf("%w: %s is a map of schema v%s this build (v%d) does not know and has no migration from; "+
				"remove %s (rules are restored from the saved state) or run the matching build",
				ErrSchemaMismatch, filepath.Join(dir, e.Name()), v, SchemaVersion, dir)
		}
	}
	meta, err := ebpf.LoadPinnedMap(filepath.Join(dir, "tn_meta_v1"), nil)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("open pinned tn_meta_v1: %w", err)
	}
	defer meta.Close()
	var m WorkloadTnMeta
	if err := meta.Lookup(uint32(0), &m); err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	if m.SchemaVersion != 0 && m.SchemaVersion != 1 && m.SchemaVersion != SchemaVersion {
		return 0, fmt.Errorf("%w: tn_meta_v1 says schema %d, this build uses %d",
			ErrSchemaMismatch, m.SchemaVersion, SchemaVersion)
	}
	if m.SchemaVersion == 0 {
		return 1, nil // written before the version was
	}
	return m.SchemaVersion, nil
}

// Load loads (or upgrades) the datapath pinned at opts.PinDir. Programs
// already attached keep running until Attach* replaces them.
func Load(opts Options) (*Datapath, error) {
	if opts.PinDir == "" {
		opts.PinDir = DefaultPinDir
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	if err := ensureBPFFS(opts.PinDir); err != nil {
		return nil, err
	}
	pinned, err := checkSchema(opts.PinDir)
	if err != nil {
		return nil, err
	}
	_, statErr := os.Stat(filepath.Join(opts.PinDir, "tn_meta_v1"))
	created := errors.Is(statErr, os.ErrNotExist)

	spec, err := LoadWorkload()
	if err != nil {
		return nil, fmt.Errorf("parse workload object: %w", err)
	}
	var objs WorkloadObjects
	copts := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: opts.PinDir}}
	if err := spec.LoadAndAssign(&objs, copts); err != nil {
		if errors.Is(err, ebpf.ErrMapIncompatible) {
			return nil, fmt.Errorf("%w: %v", ErrSchemaMismatch, err)
		}
		return nil, fmt.Errorf("load workload programs: %w", err)
	}
	dp := &Datapath{PinDir: opts.PinDir, Maps: objs.WorkloadMaps, Progs: objs.WorkloadPrograms, log: log, created: created}

	uspec, err := LoadUplink()
	if err != nil {
		dp.Close()
		return nil, fmt.Errorf("parse uplink object: %w", err)
	}
	var uobjs UplinkObjects
	if err := uspec.LoadAndAssign(&uobjs, &ebpf.CollectionOptions{MapReplacements: dp.mapsByName()}); err != nil {
		dp.Close()
		return nil, fmt.Errorf("load uplink program: %w", err)
	}
	uobjs.UplinkMaps.Close() // replaced by ours; these handles are duplicates
	dp.Uplink = uobjs.TnUplink

	wspec, err := LoadWireguard()
	if err != nil {
		dp.Close()
		return nil, fmt.Errorf("parse wireguard object: %w", err)
	}
	var wobjs WireguardObjects
	if err := wspec.LoadAndAssign(&wobjs, &ebpf.CollectionOptions{MapReplacements: dp.mapsByName()}); err != nil {
		dp.Close()
		return nil, fmt.Errorf("load wireguard program: %w", err)
	}
	wobjs.WireguardMaps.Close()
	dp.WG = wobjs.TnFromWg

	sspec, err := LoadSixin4()
	if err != nil {
		dp.Close()
		return nil, fmt.Errorf("parse 6in4 object: %w", err)
	}
	var sobjs Sixin4Objects
	if err := sspec.LoadAndAssign(&sobjs, &ebpf.CollectionOptions{MapReplacements: dp.mapsByName()}); err != nil {
		dp.Close()
		return nil, fmt.Errorf("load 6in4 program: %w", err)
	}
	sobjs.Sixin4Maps.Close()
	dp.SixIn4 = sobjs.Tn6in4Out

	hspec, err := LoadHostroute()
	if err != nil {
		dp.Close()
		return nil, fmt.Errorf("parse host routing object: %w", err)
	}
	var hobjs HostrouteObjects
	if err := hspec.LoadAndAssign(&hobjs, &ebpf.CollectionOptions{MapReplacements: dp.mapsByName()}); err != nil {
		dp.Close()
		return nil, fmt.Errorf("load host routing program: %w", err)
	}
	hobjs.HostrouteMaps.Close()
	dp.UplinkIn = hobjs.TnUplinkIn

	if created {
		meta := WorkloadTnMeta{SchemaVersion: SchemaVersion, SampleRate: opts.SampleRate}
		if err := dp.Maps.TnMetaV1.Put(uint32(0), meta); err != nil {
			dp.Close()
			return nil, fmt.Errorf("write tn_meta_v1: %w", err)
		}
		log.Info("created datapath maps", "pin_dir", opts.PinDir, "schema", SchemaVersion)
	} else if pinned != SchemaVersion {
		if err := dp.migrate(pinned); err != nil {
			dp.Close()
			return nil, err
		}
	} else {
		log.Info("reusing pinned datapath maps", "pin_dir", opts.PinDir, "schema", SchemaVersion)
	}
	if err := dp.pinPrograms(); err != nil {
		dp.Close()
		return nil, err
	}
	return dp, nil
}

// The map and program lists are read from bpf2go's `ebpf:"name"` struct
// tags, so a map or program added in C needs no edit here.

// mapFields returns the field of m for each map, by its pinned name.
func mapFields(m *WorkloadMaps) map[string]**ebpf.Map {
	return tagged[*ebpf.Map](reflect.ValueOf(m).Elem())
}

// programFields returns the field of dp for each program, by its name:
// the workload object's programs and the uplink's, WireGuard's and 6in4's.
func (dp *Datapath) programFields() map[string]**ebpf.Program {
	out := tagged[*ebpf.Program](reflect.ValueOf(&dp.Progs).Elem())
	for name, dst := range map[string]**ebpf.Program{
		programName(UplinkPrograms{}): &dp.Uplink, programName(WireguardPrograms{}): &dp.WG,
		programName(Sixin4Programs{}): &dp.SixIn4, programName(HostroutePrograms{}): &dp.UplinkIn,
	} {
		out[name] = dst
	}
	return out
}

// tagged maps the ebpf tag of each field of the struct v to its address.
func tagged[T any](v reflect.Value) map[string]*T {
	out := make(map[string]*T, v.NumField())
	for i := range v.NumField() {
		if name := v.Type().Field(i).Tag.Get("ebpf"); name != "" {
			out[name] = v.Field(i).Addr().Interface().(*T)
		}
	}
	return out
}

// programName is the name of the one program of an object with one hook.
func programName(progs any) string {
	t := reflect.TypeOf(progs)
	if t.NumField() != 1 {
		panic(fmt.Sprintf("%s has %d programs, want one", t, t.NumField()))
	}
	return t.Field(0).Tag.Get("ebpf")
}

func (dp *Datapath) mapsByName() map[string]*ebpf.Map {
	out := map[string]*ebpf.Map{}
	for name, m := range mapFields(&dp.Maps) {
		out[name] = *m
	}
	return out
}

// MapsByName returns every map of the datapath by its pinned name.
func (dp *Datapath) MapsByName() map[string]*ebpf.Map { return dp.mapsByName() }

// Programs returns the programs by name.
func (dp *Datapath) Programs() map[string]*ebpf.Program {
	out := map[string]*ebpf.Program{}
	for name, p := range dp.programFields() {
		out[name] = *p
	}
	return out
}

// pinPrograms (re)pins the programs of this build, replacing older pins so
// that bpftool shows what runs and so that legacy tc filters, which hold
// only a program reference, can be found again.
func (dp *Datapath) pinPrograms() error {
	for name, p := range dp.Programs() {
		path := filepath.Join(dp.PinDir, progsDir, name)
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("unpin old %s: %w", name, err)
		}
		if err := p.Pin(path); err != nil {
			return fmt.Errorf("pin %s: %w", name, err)
		}
	}
	return nil
}

// Close releases this process's handles. Pins, and so the datapath, stay.
func (dp *Datapath) Close() error {
	var errs []error
	for _, m := range dp.mapsByName() {
		if m != nil {
			errs = append(errs, m.Close())
		}
	}
	for _, p := range dp.Programs() {
		if p != nil {
			errs = append(errs, p.Close())
		}
	}
	return errors.Join(errs...)
}

// Remove detaches every program this datapath attached (as recorded by its
// pins) and deletes the pin directory. It is the explicit cleanup: a
// graceful stop of the node service never calls it.
func Remove(pinDir string) error {
	var errs []error
	for _, a := range ListAttachments(pinDir) {
		if err := a.Detach(pinDir); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(pinDir); err != nil {
		errs = append(errs, fmt.Errorf("remove %s: %w", pinDir, err))
	}
	return errors.Join(errs...)
}

// OpenMaps opens the pinned maps of a loaded datapath without loading any
// program: what tenantfw needs to edit them. It fails with ErrNotLoaded
// when nothing is pinned at pinDir, and with ErrSchemaMismatch when the
// pins are of another schema.
func OpenMaps(pinDir string) (*WorkloadMaps, error) {
	return OpenSomeMaps(pinDir, nil)
}

// OpenSomeMaps is OpenMaps for the maps named in only (all of them when
// only is nil); the others stay nil. Each pin costs three system calls
// (open, its type, its info): a one-rule change needs four of the 23
// maps, and opening all of them was a tenth of its CPU (BENCHMARKS.md).
// The checks are OpenMaps': the schema, then the sizes of each map opened.
func OpenSomeMaps(pinDir string, only []string) (*WorkloadMaps, error) {
	if _, err := os.Stat(filepath.Join(pinDir, "tn_meta_v1")); errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w at %s (start tenantnetd, or run `tenantfw datapath load`)", ErrNotLoaded, pinDir)
	} else if errors.Is(err, os.ErrPermission) {
		return nil, fmt.Errorf("%s: %w (run as root)", pinDir, err)
	}
	if v, err := checkSchema(pinDir); err != nil {
		return nil, err
	} else if v != SchemaVersion {
		return nil, fmt.Errorf("%w: the pins at %s are schema %d, this build uses %d: "+
			"restart tenantnetd (or run `tenantfw datapath load`) with this build to migrate them", ErrSchemaMismatch, pinDir, v, SchemaVersion)
	}
	// A same-named pin of another layout must never be written through.
	// Comparing sizes with this build's object is enough here: Load checks
	// the rest.
	sizes, err := workloadMapSizes()
	if err != nil {
		return nil, err
	}
	var m WorkloadMaps
	fields := mapFields(&m)
	if only != nil {
		all := fields
		fields = make(map[string]**ebpf.Map, len(only))
		for _, name := range only {
			dst, ok := all[name]
			if !ok {
				return nil, fmt.Errorf("open pinned %s: no such map in this build", name)
			}
			fields[name] = dst
		}
	}
	for name, dst := range fields {
		mp, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, name), nil)
		if errors.Is(err, os.ErrNotExist) && addedLater[name] {
			continue // pinned by an older build of this schema; Load adds it
		}
		if err != nil {
			m.Close()
			return nil, fmt.Errorf("open pinned %s: %w", name, err)
		}
		*dst = mp
		if want := sizes[name]; mp.KeySize() != want[0] || mp.ValueSize() != want[1] {
			m.Close()
			return nil, fmt.Errorf("%w: %s has key/value sizes %d/%d, this build uses %d/%d", ErrSchemaMismatch,
				name, mp.KeySize(), mp.ValueSize(), want[0], want[1])
		}
	}
	return &m, nil
}

// workloadObject identifies the workload object that workloadSizes
// describes: its length and CRC-32 (IEEE).
var workloadObject = struct {
	len int
	crc uint32
}{161840, 0xb68c01d8}

// workloadSizes are the key and value sizes of the workload object's maps.
// OpenMaps (every tenantfw command) checks the pins against them: parsing
// the object for them was a fifth of a one-rule change (BENCHMARKS.md).
// They are used only for the object they were read from (workloadObject);
// for any other, the object is parsed. TestWorkloadMapSizes says when to
// update both.
var workloadSizes = map[string][2]uint32{
	"tn_6in4_v1":     {20, 20},
	"tn_6in4ep_v1":   {8, 4},
	"tn_ct_v2":       {44, 48},
	"tn_ctfill_v2":   {4, 24},
	"tn_endpoint_v1": {16, 8},
	"tn_errors_v1":   {4, 8},
	"tn_events_v1":   {0, 0},
	"tn_frag_v2":     {44, 16},
	"tn_hostrt_v1":   {4, 16},
	"tn_meta_v1":     {4, 8},
	"tn_path_v1":     {4, 8},
	"tn_ports_v1":    {4, 8},
	"tn_prefix_v1":   {20, 4},
	"tn_rdst_v1":     {28, 24},
	"tn_rhost_v1":    {24, 24},
	"tn_route_v1":    {24, 8},
	"tn_rport_v1":    {16, 8},
	"tn_rsrc_v1":     {28, 8},
	"tn_srcaddr_v1":  {24, 4},
	"tn_stats_v1":    {8, 16},
	"tn_tenant_v1":   {4, 8},
	"tn_uplink_v1":   {4, 4},
	"tn_wgdev_v1":    {4, 8},
}

// workloadMapSizes returns the key and value sizes of this build's maps.
func workloadMapSizes() (map[string][2]uint32, error) {
	if len(_WorkloadBytes) == workloadObject.len && crc32.ChecksumIEEE(_WorkloadBytes) == workloadObject.crc {
		return workloadSizes, nil
	}
	return parseMapSizes()
}

func parseMapSizes() (map[string][2]uint32, error) {
	spec, err := LoadWorkload()
	if err != nil {
		return nil, fmt.Errorf("parse workload object: %w", err)
	}
	out := map[string][2]uint32{}
	for name := range mapFields(&WorkloadMaps{}) {
		if ms := spec.Maps[name]; ms != nil {
			out[name] = [2]uint32{ms.KeySize, ms.ValueSize}
		}
	}
	return out, nil
}

// Open returns the pinned datapath (maps and programs) without loading
// anything: for attaching more ports to a running datapath.
func Open(pinDir string) (*Datapath, error) {
	wm, err := OpenMaps(pinDir)
	if err != nil {
		return nil, err
	}
	dp := &Datapath{PinDir: pinDir, Maps: *wm, log: slog.Default()}
	for name, dst := range dp.programFields() {
		p, err := ebpf.LoadPinnedProgram(filepath.Join(pinDir, progsDir, name), nil)
		if errors.Is(err, os.ErrNotExist) && progAddedLater[name] {
			continue // pinned by an older build
		}
		if err != nil {
			dp.Close()
			return nil, fmt.Errorf("open pinned program %s: %w", name, err)
		}
		*dst = p
	}
	return dp, nil
}

// OpenCtl opens the pinned tn_ct_ctl program, the conntrack housekeeping
// that tenantfw's flow flushes run (bpfmaps.Maps.WithCtl).
func OpenCtl(pinDir string) (*ebpf.Program, error) {
	p, err := ebpf.LoadPinnedProgram(filepath.Join(pinDir, progsDir, "tn_ct_ctl"), nil)
	if err != nil {
		return nil, fmt.Errorf("open pinned program tn_ct_ctl: %w", err)
	}
	return p, nil
}
