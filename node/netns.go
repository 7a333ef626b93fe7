package node

// Workload namespaces: tenantnetd opens paths the API gave it, with root,
// while holding its lock. Such a path must name a network namespace that
// is not the node's own, must keep naming the same one (a /proc/PID path
// outlives its process, and the PID is handed out again), and opening it
// must never block the service (a FIFO blocks an open for reading until a
// writer comes; a hung FUSE or NFS mount blocks the lookup itself).

import (
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/tenantnet/tenantnet/ipam"
)

// netnsOpenTimeout bounds a lookup that the filesystem holds up.
const netnsOpenTimeout = 2 * time.Second

// hung are the paths whose lookup timed out and has not returned yet.
var hung sync.Map

type openedNS struct {
	h   netns.NsHandle
	id  ipam.NetnsID
	err error
}

// openNetns opens path as a network namespace: looked up with O_PATH
// (nothing of the file is opened, so a FIFO or a device does not block or
// act), checked to be on nsfs, reopened through /proc/self/fd only then,
// asked its type (NS_GET_NSTYPE must be CLONE_NEWNET), and refused if it
// is the node's (the host's init or this process's) namespace. It returns
// the handle and the namespace's device and inode. A lookup that takes
// longer than netnsOpenTimeout fails; its goroutine closes what it opened
// when the filesystem lets it go.
func openNetns(path string) (netns.NsHandle, ipam.NetnsID, error) {
	// A path whose last lookup still hangs is not looked up again: each
	// try would pin another thread in the kernel.
	if _, busy := hung.Load(path); busy {
		return -1, ipam.NetnsID{}, fmt.Errorf("netns %s: an earlier lookup of it still has no answer from its filesystem", path)
	}
	// Unbuffered: what the lookup opened is handed over or closed, never
	// left in a channel nobody reads.
	ch := make(chan openedNS)
	done := make(chan struct{})
	go func() {
		defer hung.Delete(path) // after the hand-over: after any Store below
		h, id, err := openNetnsNow(path)
		select {
		case ch <- openedNS{h, id, err}:
		case <-done:
			if err == nil {
				h.Close()
			}
		}
	}()
	t := time.NewTimer(netnsOpenTimeout)
	defer t.Stop()
	select {
	case o := <-ch:
		return o.h, o.id, o.err
	case <-t.C:
		hung.Store(path, true) // until the lookup returns
		close(done)
		// The goroutine may have sent just now.
		select {
		case o := <-ch:
			if o.err == nil {
				o.h.Close()
			}
		default:
		}
		return -1, ipam.NetnsID{}, fmt.Errorf("netns %s: no answer from its filesystem within %s", path, netnsOpenTimeout)
	}
}

func openNetnsNow(path string) (netns.NsHandle, ipam.NetnsID, error) {
	var id ipam.NetnsID
	fd, err := unix.Open(path, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, id, fmt.Errorf("netns %s: %w", path, err)
	}
	defer unix.Close(fd)
	var fs unix.Statfs_t
	if err := unix.Fstatfs(fd, &fs); err != nil {
		return -1, id, fmt.Errorf("netns %s: %w", path, err)
	}
	if fs.Type != unix.NSFS_MAGIC {
		return -1, id, fmt.Errorf("netns %s: not a namespace (a file on a filesystem of type %#x, not nsfs)", path, fs.Type)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return -1, id, fmt.Errorf("netns %s: %w", path, err)
	}
	id = ipam.NetnsID{Dev: st.Dev, Ino: st.Ino}
	nfd, err := unix.Open("/proc/self/fd/"+strconv.Itoa(fd), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, id, fmt.Errorf("netns %s: %w", path, err)
	}
	typ, err := unix.IoctlRetInt(nfd, unix.NS_GET_NSTYPE)
	if err != nil || typ != unix.CLONE_NEWNET {
		unix.Close(nfd)
		if err != nil {
			return -1, id, fmt.Errorf("netns %s: namespace type: %w", path, err)
		}
		return -1, id, fmt.Errorf("netns %s: a namespace, but not a network namespace (type %#x)", path, typ)
	}
	for _, own := range []string{"/proc/1/ns/net", "/proc/self/ns/net"} {
		var o unix.Stat_t
		if unix.Stat(own, &o) == nil && o.Dev == st.Dev && o.Ino == st.Ino {
			unix.Close(nfd)
			return -1, id, fmt.Errorf("netns %s: is the node's own network namespace (%s): a workload must have one of its own", path, own)
		}
	}
	return netns.NsHandle(nfd), id, nil
}

// openWorkloadNetns opens a recorded workload's namespace and checks that
// its path still names the namespace recorded when it was added. A
// record from before namespaces were recorded takes the one found now.
func (s *Service) openWorkloadNetns(w ipam.Workload) (netns.NsHandle, error) {
	h, id, err := openNetns(w.Netns)
	if err != nil {
		return -1, fmt.Errorf("workload %s: %w", w.ID, err)
	}
	switch {
	case w.NetnsID == (ipam.NetnsID{}):
		if err := s.ipam.SetWorkloadNetns(w.ID, w.Netns, id); err != nil {
			h.Close()
			return -1, fmt.Errorf("workload %s: record its namespace: %w", w.ID, err)
		}
	case w.NetnsID != id:
		h.Close()
		s.held.netns[w.ID] = true
		return -1, fmt.Errorf("workload %s: %s names another namespace now (%s, was %s): not plumbed into it; its process may be gone and its PID reused: add the workload again with its current netns",
			w.ID, w.Netns, id, w.NetnsID)
	}
	delete(s.held.netns, w.ID)
	return h, nil
}
