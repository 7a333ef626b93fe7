package wg

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Key rotation with an overlap window: the node stages its next key and
// announces its public half with the time it takes over; every member
// node switches its peer entry to the new key at that time, and the node
// switches its device to it. The overlap (announcement to switch) must
// cover the time every member needs to read the announcement.

// NextKey is a staged key and when it takes over.
type NextKey struct {
	Key wgtypes.Key
	At  time.Time
}

// nextFile is NextKey on disk.
type nextFile struct {
	Key string    `json:"private_key"` // base64, as wg(8) writes keys
	At  time.Time `json:"at"`
}

func nextPath(dir, network string) string { return filepath.Join(dir, network+".next") }

// StageKey generates the network's next key, to take over at at, and keeps
// it (0600) beside the current one. Staging again replaces a staged key
// that has not taken over yet.
func StageKey(dir, network string, at time.Time) (NextKey, error) {
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return NextKey{}, err
	}
	n := NextKey{Key: k, At: at.UTC()}
	b, err := json.Marshal(nextFile{Key: k.String(), At: n.At})
	if err != nil {
		return NextKey{}, err
	}
	if err := writeFileAtomic(nextPath(dir, network), b); err != nil {
		return NextKey{}, fmt.Errorf("stage key of %s: %w", network, err)
	}
	return n, nil
}

// StagedNetworks lists the networks of dir with a staged key: one read of
// the directory, where asking LoadNextKey of each of a thousand networks
// on every reconcile is a thousand failed opens.
func StagedNetworks(dir string) (map[string]bool, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, e := range entries {
		if n, ok := strings.CutSuffix(e.Name(), ".next"); ok {
			out[n] = true
		}
	}
	return out, nil
}

// LoadNextKey returns the staged key, if any.
func LoadNextKey(dir, network string) (NextKey, bool, error) {
	b, err := os.ReadFile(nextPath(dir, network))
	if errors.Is(err, os.ErrNotExist) {
		return NextKey{}, false, nil
	}
	if err != nil {
		return NextKey{}, false, err
	}
	var f nextFile
	if err := json.Unmarshal(b, &f); err != nil {
		return NextKey{}, false, fmt.Errorf("staged key of %s: %w", network, err)
	}
	k, err := wgtypes.ParseKey(f.Key)
	if err != nil {
		return NextKey{}, false, fmt.Errorf("staged key of %s: %w", network, err)
	}
	return NextKey{Key: k, At: f.At}, true, nil
}

// PromoteKey makes the staged key the network's key. A crash between the
// two steps leaves both files holding the new key: promoting again is
// harmless.
func PromoteKey(dir, network string) error {
	n, ok, err := LoadNextKey(dir, network)
	if err != nil || !ok {
		return err
	}
	if err := writeFileAtomic(filepath.Join(dir, network+".key"), []byte(n.Key.String())); err != nil {
		return fmt.Errorf("promote key of %s: %w", network, err)
	}
	return os.Remove(nextPath(dir, network))
}

// UnstageKey drops a staged key that must not take over.
func UnstageKey(dir, network string) error { return ignoreMissing(os.Remove(nextPath(dir, network))) }

// RemoveKeys deletes the network's keys (the network left the node).
func RemoveKeys(dir, network string) error {
	return errors.Join(ignoreMissing(os.Remove(filepath.Join(dir, network+".key"))), ignoreMissing(os.Remove(nextPath(dir, network))))
}

func ignoreMissing(err error) error {
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// writeFileAtomic replaces path with b so that a crash or power loss at
// any point leaves the old file or the new one, whole: the data is synced
// before the rename, and the directory after it (else the rename itself
// may be lost, or land before the data: an empty key file).
func writeFileAtomic(path string, b []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // after the rename: nothing
	err = f.Chmod(0o600)
	if err == nil {
		_, err = f.Write(b)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// SetPrivateKey switches the device to key. Current sessions end; the
// next packet starts a handshake under the new key.
func (d *Device) SetPrivateKey(key wgtypes.Key) error {
	if d.dev != nil {
		if err := d.dev.IpcSet(fmt.Sprintf("private_key=%s\n", hex.EncodeToString(key[:]))); err != nil {
			return fmt.Errorf("set key of %s: %w", d.Name, err)
		}
		return nil
	}
	if err := d.wgc.ConfigureDevice(d.Name, wgtypes.Config{PrivateKey: &key}); err != nil {
		return fmt.Errorf("set key of %s: %w", d.Name, err)
	}
	return nil
}
