package main

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"time"

	"github.com/spf13/pflag"

	"github.com/tenantnet/tenantnet/internal/cli"
	"github.com/tenantnet/tenantnet/policy"
)

// EventView is the JSON shape of a drop event (one object per line).
type EventView struct {
	Time    string `json:"time"`
	Tenant  uint32 `json:"tenant"`
	Ifindex uint32 `json:"ifindex"`
	Dir     string `json:"dir"`
	Reason  string `json:"reason"`
	Proto   string `json:"proto"`
	Src     string `json:"src"`
	Dst     string `json:"dst"`
	Sport   uint16 `json:"sport"`
	Dport   uint16 `json:"dport"`
}

func endpoint(a netip.Addr, port uint16, proto uint8) string {
	if !a.IsValid() {
		return "?"
	}
	if proto == policy.ProtoTCP || proto == policy.ProtoUDP {
		return netip.AddrPortFrom(a, port).String()
	}
	return a.String()
}

func monitorCmd() *command {
	var tenant uint32
	var reason string
	var count int
	return &command{
		Name: "monitor", Summary: "print drop events as they happen, until Ctrl-C",
		Usage: "[--tenant T] [--reason R] [--count N] [-o json]",
		Example: `  tenantfw monitor --tenant 7
  tenantfw monitor --reason spoof -o json
  Reasons: truncated malformed ext-limit l3-proto no-port spoof rogue-ra cross-tenant frag-untracked policy default-deny.
  Events are sampled by the datapath (every drop by default); one reader sees each event.`,
		Flags: func(fs *pflag.FlagSet, _ *Env) {
			fs.Uint32Var(&tenant, "tenant", 0, "only this tenant")
			fs.StringVar(&reason, "reason", "", "only this drop reason")
			fs.IntVar(&count, "count", 0, "exit after N events (0: until Ctrl-C)")
		},
		Run: func(env *Env, fs *pflag.FlagSet, args []string) error {
			if err := cli.NoArgs(args); err != nil {
				return err
			}
			var want policy.Reason
			if reason != "" {
				r, err := policy.ParseReason(reason)
				if err != nil || !r.IsDrop() {
					return fieldErr("reason", reason, "not a drop reason (see --help)")
				}
				want = r
			}
			m, done, err := openMaps(env)
			if err != nil {
				return err
			}
			defer done()
			rd, err := m.NewEventReader()
			if err != nil {
				return err
			}
			var interrupted <-chan struct{} // nil (never) in tests
			if env.Interrupt != nil {
				interrupted = env.Interrupt()
			}
			stop := make(chan struct{})
			go func() {
				select {
				case <-interrupted:
				case <-stop:
				}
				rd.Close()
			}()
			defer close(stop)
			if env.Output == "table" {
				fmt.Fprintln(env.Stdout, "TIME          TENANT  DIR        REASON          PROTO   SRC -> DST")
			}
			// Event times are CLOCK_MONOTONIC: map them to wall time.
			// Events already queued before we started (nobody read the
			// ring) are skipped: monitor shows live drops.
			start := monotonicNow()
			offset := time.Now().UnixNano() - int64(start)
			n := 0
			for {
				ev, err := rd.Read()
				if err != nil {
					if errors.Is(err, os.ErrClosed) {
						return nil
					}
					return err
				}
				if ev.TimeNs < start || (tenant != 0 && ev.Tenant != tenant) || (want != 0 && ev.Reason != want) {
					continue
				}
				ts := time.Unix(0, int64(ev.TimeNs)+offset)
				v := EventView{Time: ts.Format(time.RFC3339Nano), Tenant: ev.Tenant, Ifindex: ev.Ifindex, Dir: ev.Dir.String(),
					Reason: ev.Reason.String(), Proto: policy.ProtoName(ev.Proto), Src: ev.Src.String(), Dst: ev.Dst.String(), Sport: ev.Sport, Dport: ev.Dport}
				if env.Output == "json" {
					if err := printJSONLine(env, v); err != nil {
						return err
					}
				} else {
					fmt.Fprintf(env.Stdout, "%s  %-6d  %-9s  %-14s  %-6s  %s -> %s (if %s)\n", ts.Format("15:04:05.000"), ev.Tenant, v.Dir,
						v.Reason, v.Proto, endpoint(ev.Src, ev.Sport, ev.Proto), endpoint(ev.Dst, ev.Dport, ev.Proto), strconv.Itoa(int(ev.Ifindex)))
				}
				n++
				if count > 0 && n >= count {
					return nil
				}
			}
		},
	}
}
