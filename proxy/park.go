package proxy

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// parkAfter is how long a direction waits for bytes in Go's poller, with
// its goroutine, before it parks: its goroutine ends and the socket waits
// in the parking epoll set, at no memory but the kernel's epoll entry.
// A pause shorter than this (a reply being computed, a FIN on its way)
// costs nothing more than Go's poller; a connection idle for longer holds
// no goroutine (a goroutine and its stack are most of what an idle
// connection costs). Short, because a goroutine that ends gives its stack
// back only to Go's pool: the pool grows to the goroutines waiting at
// once, about the connection rate times this window (20 ms at 2,000 new
// connections/s: 40 goroutines), not to every connection that was opened.
// A parked direction costs an epoll_ctl and a goroutine start when it
// wakes (~2 µs); in a stream, a pause of 20 ms dwarfs that. A variable
// for the tests.
var parkAfter = 20 * time.Millisecond

// parker is the process's parking epoll set and the one goroutine that
// waits on it. A parked direction's socket is armed once
// (EPOLLIN|EPOLLRDHUP|EPOLLONESHOT): bytes, a FIN, a reset or a socket
// error (EPOLLERR and EPOLLHUP are always reported) wake it, and its
// direction starts again in a new goroutine. A closed socket leaves the
// set by itself (the kernel drops an epoll entry with the file).
type parker struct {
	epfd int
	f    *os.File // epfd, kept open for the process's life
	rc   syscall.RawConn

	mu      sync.Mutex
	next    uint64
	waiting map[uint64]*direction
}

// armFault, set by tests, fails arm as the kernel may (ENOSPC at
// fs.epoll.max_user_watches).
var armFault func() error

var (
	parkOnce  sync.Once
	theParker atomic.Pointer[parker] // set once; read by the tests too
	parkErr   error
)

func getParker() (*parker, error) {
	parkOnce.Do(func() {
		fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if err != nil {
			parkErr = fmt.Errorf("epoll_create1: %w", err)
			return
		}
		// The set's own descriptor waits in Go's poller (an epoll set is
		// readable while it has events): the parker's goroutine holds no
		// thread in epoll_wait, and Go's sysmon has no blocked system
		// call to take a P back from at each wake-up.
		if err := unix.SetNonblock(fd, true); err != nil {
			unix.Close(fd)
			parkErr = fmt.Errorf("epoll set: %w", err)
			return
		}
		f := os.NewFile(uintptr(fd), "proxy-parking-epoll")
		rc, err := f.SyscallConn()
		if err != nil {
			f.Close()
			parkErr = fmt.Errorf("epoll set: %w", err)
			return
		}
		p := &parker{epfd: fd, f: f, rc: rc, waiting: map[uint64]*direction{}}
		theParker.Store(p)
		go p.loop()
	})
	return theParker.Load(), parkErr
}

// arm puts d's source socket in the set, or re-arms it. The caller holds
// d.c.mu, and d's socket is open (the caller is in its RawConn.Control).
func (p *parker) arm(d *direction, fd int) error {
	if armFault != nil {
		if err := armFault(); err != nil {
			return err
		}
	}
	p.mu.Lock()
	p.next++
	tok := p.next
	p.waiting[tok] = d
	p.mu.Unlock()
	d.token = tok
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(tok), Pad: int32(tok >> 32)}
	op := unix.EPOLL_CTL_MOD
	if !d.inSet {
		op = unix.EPOLL_CTL_ADD
	}
	if err := unix.EpollCtl(p.epfd, op, fd, &ev); err != nil {
		p.forget(tok)
		return fmt.Errorf("epoll_ctl: %w", err)
	}
	d.inSet = true
	return nil
}

func (p *parker) forget(tok uint64) {
	p.mu.Lock()
	delete(p.waiting, tok)
	p.mu.Unlock()
}

func (p *parker) loop() {
	evs := make([]unix.EpollEvent, 128)
	for {
		var n int
		var werr error
		err := p.rc.Read(func(fd uintptr) bool {
			for {
				n, werr = unix.EpollWait(int(fd), evs, 0)
				if werr == unix.EINTR {
					continue
				}
				return werr != nil || n > 0 // none: wait in Go's poller
			}
		})
		if err == nil {
			err = werr
		}
		if err != nil {
			// Not expected (EBADF, EFAULT, EINVAL are bugs): parked
			// directions would never wake; say so loudly rather than spin.
			panic(fmt.Sprintf("proxy: epoll_wait on the parking set: %v", err))
		}
		for _, ev := range evs[:n] {
			tok := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			p.mu.Lock()
			d := p.waiting[tok]
			delete(p.waiting, tok)
			p.mu.Unlock()
			if d != nil {
				d.wake(tok)
			}
		}
	}
}
