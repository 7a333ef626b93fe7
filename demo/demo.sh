#!/usr/bin/env bash
# tenantnet demo: one node in network namespaces with two tenants, their
# workloads, the eBPF firewall driven by tenantfw, and an "internet" host.
#
#   sudo demo/demo.sh up      (what `sudo make demo` runs)
#   sudo demo/demo.sh down    (what `sudo make demo-down` runs)
#
#   internet (tn-demo-ext) 2001:db8:ffff::5
#        | uplink (XDP prefilter)
#   node (tn-demo-node) --- pa1 --- a1 (tenant 1) 2001:db8:a::1
#                       --- pa2 --- a2 (tenant 1) 2001:db8:a::2
#                       --- pb1 --- b1 (tenant 2) 2001:db8:b::1
set -euo pipefail
cd "$(dirname "$0")/.."

NODE=tn-demo-node EXT=tn-demo-ext
WLS=(a1:1:2001:db8:a::1 a2:1:2001:db8:a::2 b1:2:2001:db8:b::1)
RUN=/run/tenantnet-demo
TENANTFW="$PWD/bin/tenantfw"
fails=0 passes=0

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
# tenantfw must see /sys/fs/bpf: enter only the network namespace.
fw() { nsenter --net=/run/netns/$NODE "$TENANTFW" "$@"; }

check() { # check "what" expected(ok|blocked) command...
	local what=$1 want=$2; shift 2
	local got=blocked
	if "$@" >/dev/null 2>&1; then got=ok; fi
	if [[ $got == "$want" ]]; then
		printf '  \033[32mPASS\033[0m %-58s %s\n' "$what" "$got"; passes=$((passes + 1))
	else
		printf '  \033[31mFAIL\033[0m %-58s %s (want %s)\n' "$what" "$got" "$want"; fails=$((fails + 1))
	fi
}

tcp() { # tcp NS ADDR PORT: connect within 2 s
	in_ns "$1" timeout 3 bash -c "exec 3<>/dev/tcp/$2/$3" 
}

down() {
	say "removing the demo"
	if [[ -d $RUN ]]; then
		for p in "$RUN"/*.pid; do [[ -f $p ]] && kill "$(cat "$p")" 2>/dev/null || true; done
	fi
	if [[ -e /run/netns/$NODE && -x $TENANTFW ]]; then fw datapath unload >/dev/null 2>&1 || true; fi
	"$TENANTFW" datapath unload >/dev/null 2>&1 || true
	for ns in $NODE $EXT tn-demo-a1 tn-demo-a2 tn-demo-b1; do ip netns del "$ns" 2>/dev/null || true; done
	rm -rf "$RUN" /var/lib/tenantnet /sys/fs/bpf/tenantnet
	local left
	left=$(ip netns list | grep -c '^tn-demo' || true)
	if [[ $left != 0 || -e /sys/fs/bpf/tenantnet ]]; then
		echo "leftovers: $(ip netns list | grep '^tn-demo') $(ls /sys/fs/bpf/tenantnet 2>/dev/null)" >&2
		exit 1
	fi
	echo "  nothing left: no tn-demo namespace, no pins, no state"
}

up() {
	[[ -x $TENANTFW ]] || { echo "build first: make build" >&2; exit 1; }
	down >/dev/null 2>&1 || true
	mkdir -p "$RUN"

	say "creating the node, the internet and three workloads (network namespaces)"
	for ns in $NODE $EXT; do ip netns add "$ns"; done
	in_ns $NODE sysctl -qw net.ipv6.conf.all.forwarding=1
	ip -n $NODE link add uplink type veth peer name eth0 netns $EXT
	ip -n $NODE addr add 2001:db8:ffff::1/64 dev uplink nodad
	ip -n $NODE link set uplink up
	ip -n $EXT addr add 2001:db8:ffff::5/64 dev eth0 nodad
	ip -n $EXT link set eth0 up
	ip -n $EXT link set lo up
	ip -n $EXT route add default via 2001:db8:ffff::1

	say "loading the datapath (tenantfw datapath load --uplink uplink)"
	fw datapath load --uplink uplink
	fw tenant add --tenant 1 --name acme --prefix 2001:db8:a::/64
	fw tenant add --tenant 2 --name globex --prefix 2001:db8:b::/64

	for w in "${WLS[@]}"; do
		name=${w%%:*}; rest=${w#*:}; tenant=${rest%%:*}; addr=${rest#*:}
		ns=tn-demo-$name port=p$name
		ip netns add "$ns"
		ip -n $NODE link add "$port" type veth peer name eth0 netns "$ns"
		# Attach before the port comes up: no packet crosses it unfiltered.
		fw port attach --ifname "$port" --tenant "$tenant" --addr "$addr"
		ip -n $NODE addr add fe80::1/64 dev "$port" nodad
		ip -n $NODE link set "$port" up
		ip -n $NODE route add "$addr/128" dev "$port"
		ip -n "$ns" link set lo up
		ip -n "$ns" addr add "$addr/128" dev eth0 nodad
		ip -n "$ns" link set eth0 up
		ip -n "$ns" route add default via fe80::1 dev eth0
	done

	say "starting TCP services (port 8080 and 22 on every workload, 25 on the internet)"
	for w in "${WLS[@]}"; do
		name=${w%%:*}
		for p in 8080 22; do
			in_ns tn-demo-$name iperf3 -s -p $p -D --pidfile "$RUN/$name-$p.pid" >/dev/null
		done
	done
	in_ns $EXT iperf3 -s -p 25 -D --pidfile "$RUN/ext-25.pid" >/dev/null
	sleep 1

	say "applying the firewall policy (tenantfw apply -f demo/rules.yaml)"
	fw apply -f demo/rules.yaml

	say "checks"
	check "a2 -> a1 tcp/8080 (same tenant, rule allows)" ok tcp tn-demo-a2 2001:db8:a::1 8080
	check "a2 -> a1 tcp/22 (no rule: default deny)" blocked tcp tn-demo-a2 2001:db8:a::1 22
	check "a2 -> a1 ping (icmpv6 rule)" ok in_ns tn-demo-a2 ping -c1 -W2 2001:db8:a::1
	check "b1 -> a1 tcp/8080 (other tenant: isolation)" blocked tcp tn-demo-b1 2001:db8:a::1 8080
	check "a1 -> b1 tcp/8080 (other tenant, although b allows 8080)" blocked tcp tn-demo-a1 2001:db8:b::1 8080
	check "internet -> a1 tcp/8080 (rule)" ok tcp $EXT 2001:db8:a::1 8080
	check "internet -> a1 tcp/22 (dropped by the XDP prefilter)" blocked tcp $EXT 2001:db8:a::1 22
	check "internet -> b1 tcp/8080 (tenant 2's rule)" ok tcp $EXT 2001:db8:b::1 8080
	check "a1 -> internet tcp/25 (outbound deny rule)" blocked tcp tn-demo-a1 2001:db8:ffff::5 25
	ip -n tn-demo-a2 addr add 2001:db8:a::99/128 dev eth0 nodad
	check "a2 spoofing 2001:db8:a::99 -> a1 ping" blocked in_ns tn-demo-a2 ping -c1 -W2 -I 2001:db8:a::99 2001:db8:a::1
	ip -n tn-demo-a2 addr del 2001:db8:a::99/128 dev eth0
	stats=$(fw stats -o json)
	for r in pass-rule default-deny cross-tenant spoof policy; do
		check "counter '$r' counted" ok grep -q "\"reason\": \"$r\"" <<<"$stats"
	done

	say "what was built"
	fw tenant list
	echo
	fw port list
	echo
	fw status | sed -n '/ATTACHMENTS/,/^$/p'
	fw stats
	echo
	if ((fails > 0)); then
		say "$fails of $((passes + fails)) checks FAILED"
		exit 1
	fi
	say "all $passes checks passed"
	cat <<EOT

Explore (as root):
  ip netns exec tn-demo-a2 ping -c2 2001:db8:a::1
  nsenter --net=/run/netns/$NODE bin/tenantfw stats            # counters by reason
  nsenter --net=/run/netns/$NODE bin/tenantfw monitor          # live drops (then: ip netns exec tn-demo-b1 ping 2001:db8:a::1)
  bin/tenantfw rule list;  bin/tenantfw flows;  bin/tenantfw status
  bin/tenantfw check --tenant 1 --src 2001:db8:ffff::5 --dst 2001:db8:a::1 --proto tcp --dport 22
  bpftool link show                                   # TCX links show as "type 11" with bpftool 7.1
  bpftool map dump pinned /sys/fs/bpf/tenantnet/tn_ports_v1
  bpftool map dump pinned /sys/fs/bpf/tenantnet/tn_ct_v1
Remove it all: sudo make demo-down
EOT
}

case "${1:-}" in
up) up ;;
down) down ;;
*) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
