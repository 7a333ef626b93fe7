package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// ensureBPFFS makes sure dir lies on a mounted bpffs, mounting one at
// /sys/fs/bpf when nothing is there yet (minimal systems, fresh VMs), and
// creates dir with mode 0700: pinned maps hold tenants' rules.
func ensureBPFFS(dir string) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(dir), err)
	}
	if !onBPFFS(filepath.Dir(dir)) {
		root := "/sys/fs/bpf"
		if !isUnder(dir, root) {
			return fmt.Errorf("pin directory %s is not on a bpffs mount", dir)
		}
		if err := os.MkdirAll(root, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", root, err)
		}
		if err := unix.Mount("bpf", root, "bpf", 0, "mode=0700"); err != nil {
			return fmt.Errorf("mount bpffs at %s: %w", root, err)
		}
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("create pin directory %s: %w", dir, err)
	}
	for _, sub := range []string{progsDir, linksDir} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("create %s: %w", filepath.Join(dir, sub), err)
		}
	}
	return nil
}

func onBPFFS(path string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false
	}
	return st.Type == unix.BPF_FS_MAGIC
}

func isUnder(path, root string) bool {
	rel, err := filepath.Rel(root, path)
	return err == nil && rel != ".." && !filepath.IsAbs(rel) && (len(rel) < 3 || rel[:3] != "../")
}
