package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// PrepareStateDir makes state_dir (0700) or checks the one there before
// anything is written in it: the directory it resolves to (through any
// symlink) is not a system directory, is a directory, is this process's
// own, and is tightened to 0700 if it was looser. note says what was
// tightened, for the log.
func (n *Node) PrepareStateDir() (note string, err error) {
	d := n.StateDir
	real, err := filepath.EvalSymlinks(d)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return "", &FieldError{"state_dir", d, err.Error()}
		}
		return "", nil
	}
	if err != nil {
		return "", &FieldError{"state_dir", d, err.Error()}
	}
	if systemDirs[real] {
		return "", &FieldError{"state_dir", d, fmt.Sprintf("resolves to the system directory %s: the node's state needs a directory of its own", real)}
	}
	st, err := os.Stat(real)
	if err != nil {
		return "", &FieldError{"state_dir", d, err.Error()}
	}
	if !st.IsDir() {
		return "", &FieldError{"state_dir", d, "not a directory"}
	}
	if uid := int(st.Sys().(*syscall.Stat_t).Uid); uid != os.Geteuid() {
		return "", &FieldError{"state_dir", d, fmt.Sprintf("owned by uid %d, not by tenantnetd (uid %d): another user could change the node's state", uid, os.Geteuid())}
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		if err := os.Chmod(real, 0o700); err != nil {
			return "", &FieldError{"state_dir", d, err.Error()}
		}
		return fmt.Sprintf("state_dir %s was %#o: tightened to 0700", d, perm), nil
	}
	return "", nil
}
