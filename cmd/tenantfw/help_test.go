package main

import (
	"bytes"
	"strings"
	"testing"
)

// Every subcommand answers --help with its usage and examples, exit 0.
func TestHelpHasExamples(t *testing.T) {
	for _, cmd := range [][]string{
		{"rule", "add"}, {"rule", "del"}, {"rule", "list"}, {"rule", "flush"}, {"apply"}, {"policy", "set"}, {"policy", "show"},
		{"tenant", "add"}, {"tenant", "del"}, {"tenant", "list"}, {"port", "attach"}, {"port", "detach"}, {"port", "list"},
		{"stats"}, {"monitor"}, {"flows"}, {"status"}, {"check"}, {"datapath", "load"}, {"datapath", "unload"},
	} {
		var o, e bytes.Buffer
		code := Main(append(cmd, "--help"), &o, &e, nil)
		if code != 0 || !strings.Contains(o.String(), "Usage: tenantfw") || !strings.Contains(o.String(), "Examples:") {
			t.Errorf("tenantfw %s --help: exit %d, output %q", strings.Join(cmd, " "), code, o.String())
		}
	}
}
