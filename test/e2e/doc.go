// Package e2e tests tenantnet end to end in network namespaces: real
// tenantnetd and tenantfw processes, real WireGuard, real TCP, UDP and
// ICMPv6 traffic through the datapath. Its tests need root and clean up
// every namespace, link, pin and process they make.
package e2e
