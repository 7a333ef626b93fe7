package loader

import (
	"errors"
	"fmt"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// progQueryAttr is union bpf_attr's BPF_PROG_QUERY part, up to
// link_attach_flags (the kernel wants the rest of what it knows zero; an
// older kernel accepts the fields it does not know while they are zero).
type progQueryAttr struct {
	targetIfindex   uint32
	attachType      uint32
	queryFlags      uint32
	attachFlags     uint32
	progIDs         uint64
	count           uint32
	_               uint32
	progAttachFlags uint64
	linkIDs         uint64
	linkAttachFlags uint64
	revision        uint64
}

// queryProgIDs lists the programs attached to ifindex at attach with one
// BPF_PROG_QUERY in the common case (a handful attached), where
// link.QueryPrograms always makes two, the first for the count. Each takes
// the RTNL lock, and a shallow reconcile makes one per port hook: 4,000
// at 2,000 workloads. More than fit: link.QueryPrograms.
func queryProgIDs(ifindex int, attach ebpf.AttachType) ([]ebpf.ProgramID, error) {
	var ids [8]uint32
	attr := progQueryAttr{targetIfindex: uint32(ifindex), attachType: uint32(attach),
		progIDs: uint64(uintptr(unsafe.Pointer(&ids[0]))), count: uint32(len(ids))}
	_, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_QUERY, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	if errno == unix.ENOSPC {
		res, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: attach})
		if err != nil {
			return nil, err
		}
		out := make([]ebpf.ProgramID, 0, len(res.Programs))
		for _, p := range res.Programs {
			out = append(out, p.ID)
		}
		return out, nil
	}
	if errno != 0 {
		return nil, fmt.Errorf("query programs on ifindex %d: %w", ifindex, errors.Join(errno))
	}
	out := make([]ebpf.ProgramID, 0, attr.count)
	for _, id := range ids[:min(attr.count, uint32(len(ids)))] {
		out = append(out, ebpf.ProgramID(id))
	}
	return out, nil
}
