package config

import "testing"

// The example in deploy/ must stay valid.
func TestExample(t *testing.T) {
	if _, err := Load("../deploy/node.yaml"); err != nil {
		t.Fatal(err)
	}
}
