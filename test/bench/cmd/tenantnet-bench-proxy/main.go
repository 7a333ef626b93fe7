// Command tenantnet-bench-proxy measures tenantnet's IPv4 proxy against
// HAProxy and a plain kernel route (make bench-proxy). Its engine, serve
// and client commands are the processes the run starts in its namespaces.
package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/pflag"

	proxybench "github.com/tenantnet/tenantnet/test/bench/proxy"
)

func main() {
	if len(os.Args) > 1 {
		var err error
		switch os.Args[1] {
		case "engine":
			err = proxybench.Engine(os.Args[2:])
		case "serve":
			err = proxybench.Serve(os.Args[2:])
		case "client":
			err = proxybench.Client(os.Args[2:])
		default:
			goto bench
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "tenantnet-bench-proxy %s: %v\n", os.Args[1], err)
			os.Exit(1)
		}
		return
	}
bench:
	var o proxybench.Options
	pflag.DurationVar(&o.Stream, "stream", 10*time.Second, "length of one iperf3 run")
	pflag.DurationVar(&o.Short, "short", 5*time.Second, "length of one connection or UDP run")
	pflag.IntVar(&o.ConnPar, "conn-par", 32, "parallel clients opening connections")
	pflag.IntVar(&o.UDPPar, "udp-par", 32, "concurrent UDP clients")
	pflag.IntVar(&o.IdleConns, "idle", 0, "idle connections to hold through each proxy (0: 5000, or fewer if the descriptor limit is lower)")
	pflag.IntVar(&o.Reps, "reps", 2, "repetitions of each stream figure (the median is shown)")
	pflag.IntVar(&o.ShortReps, "short-reps", 3, "repetitions of each connection and UDP figure")
	pflag.StringVar(&o.Only, "only", "", "measure only these (comma-separated: tcp1,tcp100,conn,udp,idle)")
	pflag.StringVar(&o.Out, "out", "", "write the IPv4 proxy section of this file (BENCHMARKS.md)")
	pflag.StringVar(&o.Profile, "profile", "", "write tenantnet's CPU profile (tenantnet.pprof) in this directory")
	pflag.Parse()
	o.Exe, _ = os.Executable()
	o.Log = os.Stdout
	if err := proxybench.Run(o); err != nil {
		fmt.Fprintf(os.Stderr, "tenantnet-bench-proxy: %v\n", err)
		os.Exit(1)
	}
}
