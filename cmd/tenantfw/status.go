package main

import (
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"sort"

	"github.com/spf13/pflag"
	"github.com/vishvananda/netlink"

	"github.com/tenantnet/tenantnet/bpfmaps"
	"github.com/tenantnet/tenantnet/internal/cli"
	"github.com/tenantnet/tenantnet/loader"
)

// StatusView is the JSON shape of `tenantfw status`.
type StatusView struct {
	PinDir      string           `json:"pin_dir"`
	Schema      uint32           `json:"schema_version"`
	SampleRate  uint32           `json:"sample_rate"`
	Programs    []ProgramView    `json:"programs"`
	Attachments []AttachmentView `json:"attachments"`
	Maps        []MapView        `json:"maps"`
}

// ProgramView is a pinned program.
type ProgramView struct {
	Name     string `json:"name"`
	ID       uint32 `json:"id"`
	Tag      string `json:"tag"`
	Verified uint32 `json:"verified_insns"`
}

// AttachmentView is one program on one interface.
type AttachmentView struct {
	Ifindex int    `json:"ifindex"`
	Ifname  string `json:"ifname"`
	Hook    string `json:"hook"`
	Mode    string `json:"mode"`
	ProgID  uint32 `json:"prog_id"`
	Live    bool   `json:"live"`
}

// MapView is a map's fill.
type MapView struct {
	Name       string `json:"name"`
	Type       string `json:"type"`
	Entries    int    `json:"entries"`
	MaxEntries uint32 `json:"max_entries"`
}

func statusCmd() *command {
	return &command{
		Name: "status", Summary: "what is loaded and attached where, map fill, schema",
		Usage: "[-o json]", Example: "  tenantfw status\n  tenantfw status -o json | jq '.attachments[] | select(.live == false)'",
		Run: func(env *Env, fs *pflag.FlagSet, args []string) error {
			if err := cli.NoArgs(args); err != nil {
				return err
			}
			if err := requireRoot(); err != nil {
				return err
			}
			dp, err := loader.Open(env.PinDir)
			if err != nil {
				return err
			}
			defer dp.Close()
			var meta loader.WorkloadTnMeta
			_ = dp.Maps.TnMetaV1.Lookup(uint32(0), &meta)
			st := StatusView{PinDir: env.PinDir, Schema: meta.SchemaVersion, SampleRate: meta.SampleRate,
				Programs: []ProgramView{}, Attachments: []AttachmentView{}, Maps: []MapView{}}
			progs := dp.Programs()
			for _, name := range slices.Sorted(maps.Keys(progs)) {
				info, err := progs[name].Info()
				if err != nil {
					return err
				}
				id, _ := info.ID()
				insns, _ := info.VerifiedInstructions()
				st.Programs = append(st.Programs, ProgramView{Name: name, ID: uint32(id), Tag: info.Tag, Verified: insns})
			}
			for _, a := range loader.ListAttachments(env.PinDir) {
				v := AttachmentView{Ifindex: a.Ifindex, Hook: string(a.Hook), Mode: string(a.Mode), ProgID: uint32(a.ProgID), Live: a.Live}
				if l, err := netlink.LinkByIndex(a.Ifindex); err == nil {
					v.Ifname = l.Attrs().Name
				}
				st.Attachments = append(st.Attachments, v)
			}
			ms := dp.MapsByName()
			for _, name := range slices.Sorted(maps.Keys(ms)) {
				m := ms[name]
				st.Maps = append(st.Maps, MapView{Name: name, Type: m.Type().String(), Entries: bpfmaps.CountEntries(m), MaxEntries: m.MaxEntries()})
			}
			sort.Slice(st.Attachments, func(i, j int) bool { return st.Attachments[i].Ifindex < st.Attachments[j].Ifindex })
			if env.Output == "json" {
				return cli.JSON(env.Stdout, st)
			}
			fmt.Fprintf(env.Stdout, "datapath at %s, schema v%d, drop events: 1 in %d\n\nPROGRAMS\n", filepath.Clean(env.PinDir), st.Schema, st.SampleRate)
			tw := cli.Table(env.Stdout)
			fmt.Fprintln(tw, "  NAME\tID\tTAG\tVERIFIED INSNS")
			for _, p := range st.Programs {
				fmt.Fprintf(tw, "  %s\t%d\t%s\t%d\n", p.Name, p.ID, p.Tag, p.Verified)
			}
			tw.Flush()
			fmt.Fprintln(env.Stdout, "\nATTACHMENTS")
			tw = cli.Table(env.Stdout)
			fmt.Fprintln(tw, "  IFINDEX\tIFNAME\tHOOK\tMODE\tPROG\tLIVE")
			for _, a := range st.Attachments {
				fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%d\t%v\n", a.Ifindex, a.Ifname, a.Hook, a.Mode, a.ProgID, a.Live)
			}
			tw.Flush()
			fmt.Fprintln(env.Stdout, "\nMAPS")
			tw = cli.Table(env.Stdout)
			fmt.Fprintln(tw, "  NAME\tTYPE\tENTRIES\tMAX\tFILL")
			for _, m := range st.Maps {
				if m.Entries < 0 {
					fmt.Fprintf(tw, "  %s\t%s\t-\t%d\t-\n", m.Name, m.Type, m.MaxEntries)
					continue
				}
				fmt.Fprintf(tw, "  %s\t%s\t%d\t%d\t%.1f%%\n", m.Name, m.Type, m.Entries, m.MaxEntries, 100*float64(m.Entries)/float64(m.MaxEntries))
			}
			return tw.Flush()
		},
	}
}
