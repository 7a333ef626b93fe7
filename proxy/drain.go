package proxy

import "fmt"

// StopAccepting closes k's TCP listener and leaves its connections
// running: the mapping stays (its counters too) until Remove or Close.
// A supervisor handing the listening socket to another process calls it
// once that process accepts: the socket lives on in the other process's
// copy of the descriptor, so no connection is refused, and the ones
// established here end in their own time.
//
// A UDP mapping cannot drain this way (its sessions reply through the
// listening socket): Remove it.
func (p *Proxy) StopAccepting(k Key) error {
	p.mu.Lock()
	mp, ok := p.maps[k]
	p.mu.Unlock()
	if !ok {
		return fmt.Errorf("stop accepting %s: no such mapping", k)
	}
	if mp.ln == nil {
		return fmt.Errorf("stop accepting %s: not a TCP mapping", k)
	}
	// serveTCP returns on net.ErrClosed; stop closes it again later,
	// which is harmless.
	mp.ln.Close()
	return nil
}
