// Command tenantfw is the operator's CLI on the tenantnet firewall maps.
// See docs/tenantfw.md.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"sync"
	"syscall"
)

// profileEnv names a file to write a CPU profile of this run to: how the
// time of one command splits between start, parsing, the store and the
// maps (BENCHMARKS.md, "Where the time of a rule change goes").
const profileEnv = "TENANTFW_CPUPROFILE"

func main() {
	// SIGINT and SIGTERM are ignored, as they always were (a change runs
	// to its end), unless a command asks for them (monitor stops on
	// Ctrl-C). Ignoring them costs nothing; catching them starts the
	// signal goroutine, and with it a thread and its wake-ups: 10% of the
	// CPU of a one-rule change and a fifth of its context switches
	// (BENCHMARKS.md, "Where the time of a rule change goes").
	signal.Ignore(os.Interrupt, syscall.SIGTERM)
	interrupt := sync.OnceValue(func() <-chan struct{} {
		c := make(chan struct{})
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
		go func() { <-sig; close(c) }()
		return c
	})
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
