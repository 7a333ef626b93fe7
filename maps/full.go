package maps

import (
	"errors"

	"golang.org/x/sys/unix"
)

// isFull reports the kernel's "map is full" (E2BIG for hash maps, ENOSPC
// for LPM tries).
func isFull(err error) bool {
	return errors.Is(err, unix.E2BIG) || errors.Is(err, unix.ENOSPC)
}
