// Command tenantfw is the operator's CLI on the tenantnet firewall maps.
// See docs/tenantfw.md.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	interrupt := make(chan struct{})
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() { <-sig; close(interrupt) }()
	os.Exit(Main(os.Args[1:], os.Stdout, os.Stderr, interrupt))
}
