// Command tenantnet-bench measures the datapath against nftables and
// iptables (make bench) and writes BENCHMARKS.md.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/tenantnet/tenantnet/test/bench"
)

func main() {
	var o bench.Options
	ns := pflag.StringP("rules", "n", "10,1000,10000,100000", "rule counts")
	pflag.IntVar(&o.Reps, "reps", 5, "repetitions per figure")
	pflag.DurationVar(&o.Dur, "duration", 2*time.Second, "length of one traffic measurement")
	pflag.StringVar(&o.Out, "out", "BENCHMARKS.md", "report")
	napi := pflag.String("fwd-napi", string(bench.NAPISoftirq), "how the uplink's NAPI runs for the node forwarding rate: softirq (on the generator's CPU), threaded (a thread on the other CPU) or threaded-defer (that, with napi_defer_hard_irqs and gro_flush_timeout)")
	pflag.StringVar(&o.Results, "results", "bin/bench-results.json", "figures make bench-grid and make bench-scale recorded, for the summary")
	only := pflag.String("only", "", "measure only this part: rules (loading N rules and adding one; no traffic): write it with --out elsewhere than BENCHMARKS.md")
	pflag.Parse()
	switch *only {
	case "":
	case "rules":
		o.RulesOnly = true
	default:
		fmt.Fprintf(os.Stderr, "tenantnet-bench: --only %s: want rules\n", *only)
		os.Exit(2)
	}
	var err error
	if o.FwdNAPI, err = bench.ParseNAPIMode(*napi); err != nil {
		fmt.Fprintf(os.Stderr, "tenantnet-bench: --fwd-napi: %v\n", err)
		os.Exit(2)
	}
	exe, _ := os.Executable()
	o.Tenantfw = filepath.Join(filepath.Dir(exe), "tenantfw")
	o.RepoDir, _ = os.Getwd()
	o.Log = os.Stdout
	for _, s := range strings.Split(*ns, ",") {
		n, err := strconv.Atoi(s)
		if err != nil || n < 4 {
			fmt.Fprintf(os.Stderr, "tenantnet-bench: -n %s: want rule counts >= 4 (the measured flows are the last four rules)\n", s)
			os.Exit(2)
		}
		o.Ns = append(o.Ns, n)
	}
	if err := bench.Run(o); err != nil {
		fmt.Fprintf(os.Stderr, "tenantnet-bench: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("wrote %s\n", o.Out)
}
