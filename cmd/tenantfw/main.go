// Command tenantfw is the operator's CLI on the tenantnet firewall maps.
// See docs/tenantfw.md.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"syscall"
)

// profileEnv names a file to write a CPU profile of this run to: how the
// time of one command splits between start, parsing, the store and the
// maps (BENCHMARKS.md, "Where the time of a rule change goes").
const profileEnv = "TENANTFW_CPUPROFILE"

func main() {
	interrupt := make(chan struct{})
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() { <-sig; close(interrupt) }()
	if os.Getenv("GOGC") == "" {
		// A short-lived command: collecting less often made loading
		// 100,000 rules 10-15% faster for 90 MB more at its peak (260
		// MB); small commands never reach a first collection anyway.
		debug.SetGCPercent(300)
	}
	stop := startProfile(os.Getenv(profileEnv))
	code := Main(os.Args[1:], os.Stdout, os.Stderr, interrupt)
	stop()
	os.Exit(code)
}

func startProfile(path string) (stop func()) {
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "tenantfw: %s: %v\n", profileEnv, err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		fmt.Fprintf(os.Stderr, "tenantfw: %s: %v\n", profileEnv, err)
		f.Close()
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}
