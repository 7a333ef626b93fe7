#!/bin/bash
# Checks the shipped unit's stop/restart behaviour under a real systemd
# where systemd is not PID 1 (a sandbox, a container): a user manager runs
# the unit (same unit and kill logic as the system manager; /run/systemd/
# system faked in a private mount namespace so it agrees to start), with
# tenantnetd in a network namespace and one embedded WireGuard device (a
# user peer). It prints the device process's PID through systemctl
# restart, stop/start, SIGKILL of the main process, and the old
# KillMode=mixed for contrast; likewise the IPv4 proxy process
# (ipv4_pool set, so tenantnetd starts it: docs/proxy.md). As root, with wireguard-go embedded (no
# kernel module) and the built binary: deploy/unit-check.sh BIN
# Creates namespaces tn-sd[ne]-<pid>: take the e2e lock on a shared machine.
set -u
if [ "${1:-}" != --inner ]; then
BIN=$(realpath "${1:?usage: unit-check.sh path/to/tenantnetd}")
P=$$; W=$(mktemp -d /tmp/tenantnet-unit-check.XXXXXX)
NS=tn-sdn-$P; EXT=tn-sde-$P
ip netns add $NS; ip netns add $EXT
ip -n $NS link add uplink type veth peer name ext0 netns $EXT
ip -n $NS addr add 2001:db8:fff0::1/64 dev uplink nodad; ip -n $NS link set uplink up; ip -n $NS link set lo up
ip -n $EXT addr add 2001:db8:fff0::2/64 dev ext0 nodad; ip -n $EXT link set ext0 up
cat > $W/node.yaml <<EOC
node_id: sdnode-$P
uplinks: [uplink]
class: dual-stack
prefixes: ["2001:db8:200::/48"]
ipv4_pool: ["198.51.100.8/30"]
addresses: ["2001:db8:fff0::1"]
state_dir: $W/state
bpf_dir: /sys/fs/bpf/tenantnet-sd-$P
api_socket: $W/api.sock
metrics_listen: 127.0.0.1:19555
reconcile_interval: 1s
registry: {type: file, dir: $W/reg}
insecure_registry: true
EOC
mkdir -p $W/config/systemd/user
sed "s#^ExecStart=.*#ExecStart=/usr/bin/nsenter --net=/run/netns/$NS $BIN run --config $W/node.yaml#" \
  "$(dirname "$0")/tenantnetd.service" > $W/config/systemd/user/tenantnetd.service
CG=/sys/fs/cgroup/systemd; [ -d $CG ] || CG=/sys/fs/cgroup
CG=$CG/tenantnet-unit-check-$P
export W NS P BIN CG
unshare --mount --propagation private "$0" --inner
echo "== cleanup"
nsenter --net=/run/netns/$NS $BIN cleanup --config $W/node.yaml
ip netns del $NS; ip netns del $EXT
find $CG -depth -type d -exec rmdir {} \; 2>/dev/null
rm -rf $W
exit 0
fi
mount -t tmpfs none /run/systemd 2>/dev/null || { mkdir -p /run/systemd && mount -t tmpfs none /run/systemd; }
mkdir -p /run/systemd/system
mkdir -p $CG
echo $$ > $CG/cgroup.procs
export XDG_RUNTIME_DIR=$W/xdg XDG_CONFIG_HOME=$W/config XDG_STATE_HOME=$W/statehome
mkdir -p -m 700 $XDG_RUNTIME_DIR
SYSTEMD_LOG_TARGET=console /lib/systemd/systemd --user > $W/systemd.log 2>&1 &
SD=$!
for i in $(seq 50); do [ -S $XDG_RUNTIME_DIR/systemd/private ] && break; sleep 0.1; done
sc() { systemctl --user "$@"; }
c() { $BIN "$@" --socket $W/api.sock; }
up() { for i in $(seq 100); do c status >/dev/null 2>&1 && return; sleep 0.1; done; echo "tenantnetd not up"; }
devpid() { nsenter --net=/run/netns/$NS ss -xlpn | grep "/var/run/wireguard/tg" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2; }
mainpid() { sc show -p MainPID --value tenantnetd; }
pxpid() { cat $W/state/proxy/proxy.pid 2>/dev/null || echo none; }
mkdir -p $XDG_CONFIG_HOME/systemd/user/tenantnetd.service.d
printf "[Service]\nStandardOutput=append:$W/tenantnetd.log\nStandardError=inherit\n" > $XDG_CONFIG_HOME/systemd/user/tenantnetd.service.d/log.conf
sc daemon-reload
echo "== start"; sc start tenantnetd; up
c network add --id acme >/dev/null
K=$(wg genkey | wg pubkey)
c user add --id u1 --network acme --public-key $K >/dev/null
sleep 1
D=$(devpid); X=$(pxpid); echo "main $(mainpid) device process $D; its cgroup: $(grep -m1 "name=systemd\|^0::" /proc/$D/cgroup); proxy process $X, session $(ps -o sid= -p $X)"
echo "== systemctl restart"; sc restart tenantnetd; up; sleep 1
echo "main $(mainpid) device process $(devpid) (was $D) proxy $(pxpid) (was $X)"
echo "== systemctl stop"; sc stop tenantnetd; sleep 0.5
echo "unit $(sc is-active tenantnetd); device process alive: $(kill -0 $D 2>/dev/null && echo yes || echo no), link: $(ip -n $NS -br link | grep -o '^tg[0-9a-f]*'); proxy alive: $(kill -0 $X 2>/dev/null && echo yes || echo no)"
echo "== systemctl start"; sc start tenantnetd; up; sleep 1
echo "main $(mainpid) device process $(devpid) (was $D) proxy $(pxpid) (was $X)"
echo "== kill -9 of the main process (systemctl kill --kill-whom=main -s KILL), Restart=on-failure"
M=$(mainpid); sc kill --kill-whom=main -s KILL tenantnetd; sleep 3; up; sleep 1
echo "main $(mainpid) (was $M) device process $(devpid) (was $D) proxy $(pxpid) (was $X)"
grep -h '"wireguard adopted"\|"wireguard started"\|"proxy adopted"\|"proxy started"\|left-over\|remains running' $W/systemd.log $W/tenantnetd.log | sed 's/^/  log: /' | cut -c1-220
echo "== the same unit with KillMode=mixed (the old one): restart"
mkdir -p $XDG_CONFIG_HOME/systemd/user/tenantnetd.service.d
printf '[Service]\nKillMode=mixed\n' > $XDG_CONFIG_HOME/systemd/user/tenantnetd.service.d/mixed.conf
sc daemon-reload; sc restart tenantnetd; up; sleep 1.5
echo "main $(mainpid) device process $(devpid) (was $D); old alive: $(kill -0 $D 2>/dev/null && echo yes || echo no); proxy $(pxpid) (was $X), old alive: $(kill -0 $X 2>/dev/null && echo yes || echo no)"
sc stop tenantnetd
kill $SD; wait $SD
