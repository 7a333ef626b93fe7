package trust

import (
	"crypto/ed25519"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestKeys(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "grid.key")
	pub, err := GenerateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := GenerateKey(path); !os.IsExist(err) {
		t.Errorf("a second GenerateKey over the key: %v, want it refused", err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v", st.Mode())
	}
	k, err := LoadKey(path)
	if err != nil || !pub.Equal(k.Public()) {
		t.Fatalf("LoadKey: %v", err)
	}
	os.WriteFile(path, []byte("damaged"), 0o600)
	if _, err := LoadKey(path); err == nil {
		t.Error("a damaged key loaded")
	}
	state := filepath.Join(dir, "state")
	id1, err := Identity(state)
	if err != nil {
		t.Fatal(err)
	}
	id2, _ := Identity(state)
	if !id1.Equal(id2) {
		t.Error("the identity changed between starts")
	}
	os.WriteFile(IdentityPath(state), []byte("x"), 0o600)
	if _, err := Identity(state); err == nil {
		t.Error("a damaged identity key was replaced silently")
	}
}

func TestOpen(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(nil)
	b, _ := SignJSON(key, KindNodeRecord, map[string]string{"a": "b"})
	if _, err := Open(b, KindNodeRecord, pub); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(b, KindNetwork, pub); ReasonOf(err) != "malformed" {
		t.Errorf("another kind: %v", err)
	}
	// The signature covers the exact payload bytes: a byte changed fails.
	s := Sign(key, KindNodeRecord, []byte(`{"a":"b"}`))
	s.Payload = []byte(`{"a":"c"}`)
	if err := verifySigned(s, pub); ReasonOf(err) != "bad-signature" {
		t.Errorf("a changed payload: %v", err)
	}
}

func verifySigned(s Signed, pub ed25519.PublicKey) error {
	if !ed25519.Verify(pub, message(s.Kind, s.Payload), s.Signature) {
		return Reject("bad-signature", "")
	}
	return nil
}

func TestLoadGrid(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(nil)
	idPub, _, _ := ed25519.GenerateKey(nil)
	now := time.Now()
	en := func(id string, exp time.Duration) Entry {
		b, _ := SignJSON(key, KindEnrollment, Enrollment{NodeID: id, Identity: idPub, Class: "dual-stack",
			Prefixes: nil, Issued: now.Add(-time.Hour), Expires: now.Add(exp)})
		return Entry{Name: id, Data: b}
	}
	good := en("a", time.Hour)
	var e Enrollment
	OpenJSON(good.Data, KindEnrollment, pub, &e)
	g, bad, err := LoadGrid(pub, []Entry{good, {Name: "b", Data: good.Data}}, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	// No prefixes: invalid; named b, for a: mismatch.
	if ReasonOf(bad["a"]) != "enrollment-invalid" || ReasonOf(bad["b"]) != "node-id-mismatch" || len(g.Enrollments) != 0 {
		t.Errorf("bad %v, enrollments %v", bad, g.Enrollments)
	}
	if _, _, err := LoadGrid(pub, nil, []byte(`{"kind":"revocations","payload":"e30="}`), now); err == nil {
		t.Error("an unsigned revocation list believed")
	}
}

// A node without native IPv6 may be enrolled without prefixes (its exits
// delegate its /64s); a dual-stack node may not.
func TestEnrollmentPrefixes(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(nil)
	now := time.Now()
	for class, ok := range map[string]bool{"dual-stack": false, "ipv4-only": true, "home-nat": true, "home-ipv6": true} {
		err := Enrollment{NodeID: "n", Identity: pub, Class: class, Issued: now, Expires: now.Add(time.Hour)}.Validate()
		if (err == nil) != ok {
			t.Errorf("class %s without prefixes: %v", class, err)
		}
	}
}
