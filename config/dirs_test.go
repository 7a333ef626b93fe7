package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPrepareStateDir(t *testing.T) {
	dir := t.TempDir()
	prep := func(d string) (string, error) { return (&Node{StateDir: d}).PrepareStateDir() }
	// Made 0700 when missing.
	fresh := filepath.Join(dir, "fresh", "state")
	if _, err := prep(fresh); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(fresh); st == nil || st.Mode().Perm() != 0o700 {
		t.Errorf("fresh: %v", st)
	}
	// A loose one (network declare, or an operator's mkdir) is tightened.
	loose := filepath.Join(dir, "loose")
	os.Mkdir(loose, 0o755)
	os.Chmod(loose, 0o777)
	if note, err := prep(loose); err != nil || !strings.Contains(note, "was 0777: tightened to 0700") {
		t.Errorf("loose: %q %v", note, err)
	}
	if st, _ := os.Stat(loose); st.Mode().Perm() != 0o700 {
		t.Errorf("loose: still %v", st.Mode())
	}
	// A symlink is followed to what it names: "/" through a link is "/".
	root := filepath.Join(dir, "root")
	os.Symlink("/", root)
	if _, err := prep(root); err == nil || !strings.Contains(err.Error(), "resolves to the system directory /") {
		t.Errorf("symlink to /: %v", err)
	}
	etc := filepath.Join(dir, "etc")
	os.Symlink("/etc/", etc)
	if _, err := prep(etc); err == nil || !strings.Contains(err.Error(), "system directory /etc") {
		t.Errorf("symlink to /etc: %v", err)
	}
	link := filepath.Join(dir, "link")
	os.Symlink(loose, link)
	if _, err := prep(link); err != nil {
		t.Errorf("symlink to a directory of its own: %v", err)
	}
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o600)
	if _, err := prep(file); err == nil || !strings.Contains(err.Error(), "state_dir "+file+": not a directory") {
		t.Errorf("a file: %v", err)
	}
	if os.Geteuid() == 0 {
		other := filepath.Join(dir, "other")
		os.Mkdir(other, 0o700)
		os.Chown(other, 65534, 65534)
		if _, err := prep(other); err == nil || !strings.Contains(err.Error(), "owned by uid 65534") {
			t.Errorf("another user's directory: %v", err)
		}
	}
}
