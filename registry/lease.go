package registry

// LeaseKept implements the check of LeaseKept: etcd deletes a record
// when its writer's lease ends, so presence is liveness.
func (*Etcd) LeaseKept() bool { return true }
