// Command tenantnetd is the tenantnet node service and its client.
// See README.md and docs/ARCHITECTURE.md.
package main

import "os"

func main() {
	os.Exit(Main(os.Args[1:], os.Stdout, os.Stderr))
}
