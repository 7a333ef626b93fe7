// Package bpfmaps is the typed Go view of the datapath's maps: rules
// compiled to LPM keys and applied as diffs, port bindings, tenant
// policies and prefixes, routes, flows, counters and drop events. Every
// write goes through here, so each encoding lives in one place.
package bpfmaps
