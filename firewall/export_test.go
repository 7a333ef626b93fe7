package firewall

import "github.com/tenantnet/tenantnet/firewall/internal/store"

// StoreForTest lets the crash tests change the store behind the maps' back.
func (fw *Firewall) StoreForTest() *store.Store { return fw.st }
