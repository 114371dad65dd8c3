#!/usr/bin/env bash
# lab.sh builds and tears down the pathtrace lab: a two-node, Kubernetes-like
# network (flannel VXLAN overlay + kube-proxy iptables service VIP) made only
# of network namespaces. It never touches interfaces of the root namespace
# and all traffic it causes stays inside the namespaces it creates.
#
#   underlay ns:  br0 ──┬── node-a ═ eth0 (node-a ns, 10.0.0.11)
#                       └── node-b ═ eth0 (node-b ns, 10.0.0.12)
#   node ns:      eth0, flannel.1 (VXLAN 1, udp/8472), cni0 bridge 10.244.N.1/24
#   pod ns:       eth0 ═ vethXXXX (enslaved to cni0 in the node ns)
set -Eeuo pipefail

usage() {
	cat <<'EOF'
Usage: scripts/lab.sh up | down | status | fault NAME [off] | clear

Builds the pathtrace lab: two "nodes" joined by flannel VXLAN, three "pods"
running labpod servers, and a kube-proxy style service VIP, all in network
namespaces (nothing is created in the root namespace). Must be run as root.

Commands:
  up              create the lab and start the pod servers. If any namespace
                  of the lab already exists, up refuses and exits 1: run
                  'down' first. If a step fails, up removes what it created.
  down            stop the servers and delete the lab's namespaces; succeeds
                  when the lab is partly present or absent.
  status          print the namespaces, node addresses, servers and faults.
  fault NAME      inject a fault; 'fault NAME off' removes it (both idempotent).
  clear           remove every fault.

Faults:
  policy     both nodes: FORWARD DROP of tcp/6379 to redis 10.244.1.42
  rpfilter   node-b: strict rp_filter (all, flannel.1) and an asymmetric
             route to 10.244.1.23 via eth0, so traffic from it is dropped
  blackhole  node-a: blackhole route to 10.244.2.57
  slow       node-a: 1mbit tbf qdisc on flannel.1 (a slow tunnel)
  nomasq     node-a: flannel's POSTROUTING MASQUERADE rule removed (pods on
             node-a can no longer talk to ext: their SYNs leave, nothing returns)
  underlay   the switch (P-underlay, outside both nodes) drops VXLAN (udp/8472)
             on its way to node-b (an nftables bridge rule): packets leave node-a's eth0, never reach
             node-b's
  mtu        the underlay's MTU lowered to 1400 (both nodes' eth0, the switch's
             ports, ext) while pods, cni0 and flannel.1 keep 1450, and flannel.1
             copies the inner DF bit to the outer header (df inherit): a full-size
             TCP segment from a pod no longer fits once VXLAN adds 50 bytes and is
             dropped on the node (an MTU black hole: iperf3 moves 0 bytes)
  hairpin    both nodes: kube-proxy's hairpin MASQUERADE (KUBE-SEP-API-* -s POD
             -j KUBE-MARK-MASQ) removed and hairpin mode off on the pods' bridge
             ports: a pod reaching itself through the VIP gets no answer
  neighbour  node-a: flannel lost its peer: the VXLAN FDB entry for node-b's
             VTEP MAC (0a:f1:00:00:00:02 dst 10.0.0.12) deleted from flannel.1
  conntrack  the machine-wide nf_conntrack_max (init network namespace) lowered
             to 1, below what the nodes hold: new connections are dropped. Runs
             only with PATHTRACE_VM=1 (in a VM of scripts/vm.sh); the value is
             saved at on and restored by off, clear and down

Lab (P = $LAB_PREFIX):
  P-underlay  bridge br0, ports node-a, node-b
  P-node-a    eth0 10.0.0.11/24, cni0 10.244.1.1/24, flannel.1 10.244.1.0/32
  P-node-b    eth0 10.0.0.12/24, cni0 10.244.2.1/24, flannel.1 10.244.2.0/32
  P-a-api     10.244.1.23 (veth1a23)  labpod api-a  tcp+udp 8080
  P-a-redis   10.244.1.42 (veth1a42)  labpod redis  tcp 6379
  P-b-api     10.244.2.57 (veth2b57)  labpod api-b  tcp+udp 8080
  P-ext       10.0.0.100 on the underlay, outside the cluster (no route to
              the pods: reachable from them only through MASQUERADE)
              labpod ext tcp 80
  service VIP 10.96.12.34:80/tcp -> 10.244.1.23:8080, 10.244.2.57:8080

Environment:
  LAB_PREFIX  prefix of every namespace name (default: pt), so that a test
              lab (e.g. LAB_PREFIX=ptt) can coexist with a demo lab
  LABPOD      labpod binary (default: go build -o REPO/bin/labpod ./cmd/labpod)
EOF
}

P=${LAB_PREFIX:-pt}
script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$script_dir/.." && pwd)
run_dir=/run/pathtrace-lab/$P

NS_UNDERLAY=$P-underlay
NS_NODE_A=$P-node-a
NS_NODE_B=$P-node-b
NS_A_API=$P-a-api
NS_A_REDIS=$P-a-redis
NS_B_API=$P-b-api
NS_EXT=$P-ext
# Pods first: down deletes in this order.
ALL_NS=("$NS_A_API" "$NS_A_REDIS" "$NS_B_API" "$NS_EXT" "$NS_NODE_A" "$NS_NODE_B" "$NS_UNDERLAY")

VIP=10.96.12.34
POD_CIDR=10.244.0.0/16
FAULTS=(policy rpfilter blackhole slow nomasq underlay mtu hairpin neighbour conntrack)

log() { printf 'lab.sh: %s\n' "$*" || true; }
die() {
	printf 'lab.sh: error: %s\n' "$*" >&2
	exit 1
}
# usage_error MSG: a mistake on the command line (exit 2).
usage_error() {
	printf 'lab.sh: %s\n' "$*" >&2
	printf 'Usage: scripts/lab.sh up | down | status | fault NAME [off] | clear   (-h for help)\n' >&2
	exit 2
}

# ---- helpers -------------------------------------------------------------

ns_exec() {
	local ns=$1
	shift
	ip netns exec "$ns" "$@"
}

ns_exists() { [[ -e /run/netns/$1 ]]; }

# ns_sysctl NS KEY VALUE writes /proc/sys/KEY from inside NS. KEY uses '/'
# so that interface names with dots (flannel.1) need no escaping.
ns_sysctl() {
	local ns=$1 key=$2 value=$3
	ns_exec "$ns" sh -c 'printf "%s\n" "$1" > "/proc/sys/$2"' sh "$value" "$key"
}

ns_ipt() {
	local ns=$1
	shift
	ns_exec "$ns" iptables -w "$@"
}

# ns_ipt_ensure NS TABLE CHAIN RULE... appends RULE unless it is present.
ns_ipt_ensure() {
	local ns=$1 table=$2 chain=$3
	shift 3
	if ! ns_ipt "$ns" -t "$table" -C "$chain" "$@" 2>/dev/null; then
		ns_ipt "$ns" -t "$table" -A "$chain" "$@"
	fi
}

require_root() {
	[[ ${EUID:-$(id -u)} -eq 0 ]] || die "must be run as root (network namespaces, iptables); try: sudo $0 $*"
}

check_prefix() {
	[[ $P =~ ^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$ ]] ||
		die "LAB_PREFIX '$P' must be 1-32 characters of [A-Za-z0-9_-]"
}

present_ns() {
	local ns
	for ns in "${ALL_NS[@]}"; do
		if ns_exists "$ns"; then printf '%s\n' "$ns"; fi
	done
}

require_lab() {
	local ns
	for ns in "${ALL_NS[@]}"; do
		ns_exists "$ns" || die "lab '$P' is not up (namespace $ns missing); run: scripts/lab.sh up"
	done
}

# ---- building blocks ----------------------------------------------------

# mk_ns NS creates a namespace with loopback up and a quiet, predictable
# configuration. Defaults are set before any interface exists so that every
# interface created later inherits them: IPv4 conf in a new namespace is
# copied from the root namespace, which may use rp_filter=1 or 2.
mk_ns() {
	local ns=$1
	ip netns add "$ns"
	ns_exec "$ns" ip link set lo up
	ns_sysctl "$ns" net/ipv4/conf/all/rp_filter 0
	ns_sysctl "$ns" net/ipv4/conf/default/rp_filter 0
	# IPv4-only lab: no router solicitations, ND or MLD chatter in traces
	# (nothing to do on a kernel without IPv6).
	if ns_exec "$ns" test -d /proc/sys/net/ipv6; then
		ns_sysctl "$ns" net/ipv6/conf/all/disable_ipv6 1
		ns_sysctl "$ns" net/ipv6/conf/default/disable_ipv6 1
	fi
}

# set_bridge_nf NS VALUE: whether bridged IPv4 traffic goes through
# iptables. Kubernetes needs it on nodes (br_netfilter): without it the
# reply of a pod to a same-node client that reached it through the VIP is
# bridged straight back and never un-DNATed. The module is not loaded
# here: that would change bridging in the root namespace too.
set_bridge_nf() {
	local ns=$1 value=$2
	if ns_exec "$ns" test -e /proc/sys/net/bridge/bridge-nf-call-iptables; then
		ns_sysctl "$ns" net/bridge/bridge-nf-call-iptables "$value"
	elif [[ $value == 1 ]]; then
		log "warning: br_netfilter is not loaded (modprobe br_netfilter); the VIP will not work towards a pod on the client's own node"
	fi
}

# mk_underlay creates the "switch" joining the nodes' eth0.
mk_underlay() {
	mk_ns "$NS_UNDERLAY"
	set_bridge_nf "$NS_UNDERLAY" 0
	ns_exec "$NS_UNDERLAY" ip link add br0 type bridge
	ns_exec "$NS_UNDERLAY" ip link set br0 up
}

# mk_ext: a host outside the cluster, on the underlay, that knows no route to
# the pod network: pods reach it only through the nodes' MASQUERADE.
mk_ext() {
	mk_ns "$NS_EXT"
	ip link add ext netns "$NS_UNDERLAY" type veth peer name eth0 netns "$NS_EXT"
	ns_exec "$NS_UNDERLAY" ip link set ext master br0
	ns_exec "$NS_UNDERLAY" ip link set ext up
	ns_exec "$NS_EXT" ip addr add 10.0.0.100/24 dev eth0
	ns_exec "$NS_EXT" ip link set eth0 up
}

# mk_node NS NAME IDX: a node namespace with eth0 on the underlay switch and
# cni0 for its pods. NAME is node-a/node-b (switch port name), IDX 1 or 2.
mk_node() {
	local ns=$1 name=$2 idx=$3
	local ip=10.0.0.1$idx
	mk_ns "$ns"
	set_bridge_nf "$ns" 1
	ns_sysctl "$ns" net/ipv4/ip_forward 1

	# Both ends are created directly in their namespaces: nothing appears
	# in the root namespace, not even for a moment.
	ip link add "$name" netns "$NS_UNDERLAY" type veth peer name eth0 netns "$ns"
	ns_exec "$NS_UNDERLAY" ip link set "$name" master br0
	ns_exec "$NS_UNDERLAY" ip link set "$name" up
	ns_exec "$ns" ip link set eth0 mtu 1500
	ns_exec "$ns" ip addr add "$ip/24" dev eth0
	ns_exec "$ns" ip link set eth0 up

	ns_exec "$ns" ip link add cni0 type bridge
	ns_exec "$ns" ip link set cni0 mtu 1450
	ns_exec "$ns" ip addr add "10.244.$idx.1/24" dev cni0
	ns_exec "$ns" ip link set cni0 up
}

# mk_flannel NS IDX PEER_IDX: flannel's VXLAN device and the static routes,
# neighbours and FDB entries flanneld would program for the peer node.
mk_flannel() {
	local ns=$1 idx=$2 peer=$3
	local mac=0a:f1:00:00:00:0$idx peer_mac=0a:f1:00:00:00:0$peer
	ns_exec "$ns" ip link add flannel.1 type vxlan id 1 dstport 8472 local "10.0.0.1$idx" dev eth0 nolearning
	ns_exec "$ns" ip link set flannel.1 mtu 1450 address "$mac"
	ns_exec "$ns" ip addr add "10.244.$idx.0/32" dev flannel.1
	ns_exec "$ns" ip link set flannel.1 up
	ns_exec "$ns" ip route add "10.244.$peer.0/24" via "10.244.$peer.0" dev flannel.1 onlink
	flannel_peer_neigh add "$ns" "$peer"
	flannel_peer_fdb add "$ns" "$peer"
}

# flannel_peer_neigh add|check NS PEER_IDX: the permanent neighbour entry of the peer's
# VTEP (10.244.PEER.0 at its flannel.1 MAC), as flanneld writes it.
flannel_peer_neigh() {
	local op=$1 ns=$2 peer=$3
	local mac=0a:f1:00:00:00:0$peer
	case $op in
	add) ns_exec "$ns" ip neigh replace "10.244.$peer.0" lladdr "$mac" dev flannel.1 nud permanent ;;
	check) [[ $(ns_exec "$ns" ip neigh show "10.244.$peer.0" dev flannel.1) == *"lladdr $mac PERMANENT"* ]] ;;
	esac
}

# flannel_peer_fdb add|del|check NS PEER_IDX: the VXLAN FDB entry that sends frames for
# the peer's VTEP MAC to the peer node's eth0, as flanneld writes it.
flannel_peer_fdb() {
	local op=$1 ns=$2 peer=$3
	local mac=0a:f1:00:00:00:0$peer dst=10.0.0.1$peer
	case $op in
	add) ns_exec "$ns" bridge fdb append "$mac" dev flannel.1 dst "$dst" ;;
	del) ns_exec "$ns" bridge fdb del "$mac" dev flannel.1 dst "$dst" ;;
	check) [[ $'\n'$(ns_exec "$ns" bridge fdb show dev flannel.1) == *$'\n'"$mac dst $dst "* ]] ;;
	esac
}

# mk_pod NODE_NS POD_NS HOST_VETH IP GW: a pod namespace whose eth0 is
# paired with HOST_VETH on the node's cni0.
mk_pod() {
	local node=$1 ns=$2 veth=$3 ip=$4 gw=$5
	mk_ns "$ns"
	ip link add "$veth" netns "$node" type veth peer name eth0 netns "$ns"
	ns_exec "$node" ip link set "$veth" mtu 1450 master cni0
	# Like kubelet's hairpin mode: a pod may reach itself through the VIP.
	ns_exec "$node" ip link set "$veth" type bridge_slave hairpin on
	ns_exec "$node" ip link set "$veth" up
	ns_exec "$ns" ip link set eth0 mtu 1450
	ns_exec "$ns" ip addr add "$ip/24" dev eth0
	ns_exec "$ns" ip link set eth0 up
	ns_exec "$ns" ip route add default via "$gw" dev eth0
}

# mk_kube_proxy NS: the nat rules kube-proxy (iptables mode) and flannel
# install on every node for service api (VIP:80 -> both api pods).
mk_kube_proxy() {
	local ns=$1 chain
	for chain in KUBE-SERVICES KUBE-SVC-API KUBE-SEP-API-A KUBE-SEP-API-B KUBE-MARK-MASQ KUBE-POSTROUTING; do
		ns_ipt "$ns" -t nat -N "$chain"
	done
	ns_ipt "$ns" -t nat -A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
	ns_ipt "$ns" -t nat -A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
	ns_ipt "$ns" -t nat -A KUBE-SERVICES -d "$VIP/32" -p tcp --dport 80 \
		-m comment --comment "default/api cluster IP" -j KUBE-SVC-API
	# Two endpoints: the first is picked half of the time, else the second.
	ns_ipt "$ns" -t nat -A KUBE-SVC-API -m statistic --mode random --probability 0.5 -j KUBE-SEP-API-A
	ns_ipt "$ns" -t nat -A KUBE-SVC-API -j KUBE-SEP-API-B
	# A pod reaching itself through the VIP is masqueraded (hairpin), as
	# kube-proxy does; otherwise its reply would bypass the node's conntrack.
	ns_ipt "$ns" -t nat -A KUBE-SEP-API-A -s 10.244.1.23/32 -j KUBE-MARK-MASQ
	ns_ipt "$ns" -t nat -A KUBE-SEP-API-A -p tcp -j DNAT --to-destination 10.244.1.23:8080
	ns_ipt "$ns" -t nat -A KUBE-SEP-API-B -s 10.244.2.57/32 -j KUBE-MARK-MASQ
	ns_ipt "$ns" -t nat -A KUBE-SEP-API-B -p tcp -j DNAT --to-destination 10.244.2.57:8080
	ns_ipt "$ns" -t nat -A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
	ns_ipt "$ns" -t nat -A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
	ns_ipt "$ns" -t nat -A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
	ns_ipt "$ns" -t nat -A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
	ns_ipt "$ns" -t nat -A KUBE-POSTROUTING -j MASQUERADE
	# flannel: pods talking to anything outside the pod network get the
	# node's address.
	masq_rule add "$ns"
}

# masq_rule add|del|check NS: flannel's MASQUERADE rule.
masq_rule() {
	local op=$1 ns=$2
	local rule=(POSTROUTING -s "$POD_CIDR" ! -d "$POD_CIDR" -j MASQUERADE)
	case $op in
	add) ns_ipt_ensure "$ns" nat "${rule[@]}" ;;
	del) ns_ipt "$ns" -t nat -D "${rule[@]}" ;;
	check) ns_ipt "$ns" -t nat -C "${rule[@]}" 2>/dev/null ;;
	esac
}

# reset_rp_filter NS sets rp_filter=0 on every interface of NS (interfaces
# created before 'default' was set keep their own value).
reset_rp_filter() {
	ns_exec "$1" sh -c 'for f in /proc/sys/net/ipv4/conf/*/rp_filter; do echo 0 > "$f"; done'
}

# ---- servers ------------------------------------------------------------

labpod_bin() {
	if [[ -n ${LABPOD:-} ]]; then
		[[ -x $LABPOD ]] || die "LABPOD=$LABPOD is not an executable file"
		# Absolute, so that the pid-file check and later probes do not
		# depend on the current directory.
		LABPOD=$(cd "$(dirname "$LABPOD")" && pwd)/$(basename "$LABPOD")
	else
		command -v go >/dev/null || die "go not found; build labpod yourself and set LABPOD=/path/to/labpod"
		log "building $repo/bin/labpod"
		(cd "$repo" && go build -o "$repo/bin/labpod" ./cmd/labpod)
		LABPOD=$repo/bin/labpod
	fi
}

# start_server NS NAME ARGS...: labpod serve in the background of NS, with
# its pid and log under $run_dir.
start_server() {
	local ns=$1 name=$2
	shift 2
	# ip netns exec and nohup both exec, so $! is labpod's own pid.
	ip netns exec "$ns" nohup "$LABPOD" serve --name "$name" "$@" \
		</dev/null >"$run_dir/$name.log" 2>&1 &
	echo $! >"$run_dir/$name.pid"
}

# wait_server NS NAME PROTO:PORT...: waits (up to ~5 s) until the server
# answers on every port, probing from inside its own namespace.
wait_server() {
	local ns=$1 name=$2
	shift 2
	local pid spec port i
	pid=$(<"$run_dir/$name.pid")
	for spec in "$@"; do
		port=${spec#*:}
		for ((i = 0; ; i++)); do
			if [[ $spec == tcp:* ]] &&
				ns_exec "$ns" "$LABPOD" tcp "127.0.0.1:$port" --timeout 200ms >/dev/null 2>&1; then
				break
			fi
			if [[ $spec == udp:* ]] &&
				ns_exec "$ns" "$LABPOD" udp "127.0.0.1:$port" --wait 200ms 2>/dev/null | grep -qx 'replies=1'; then
				break
			fi
			if ! kill -0 "$pid" 2>/dev/null; then
				cat "$run_dir/$name.log" >&2 || true
				die "server $name in $ns exited"
			fi
			((i < 50)) || die "server $name in $ns does not answer on $spec after 5 s"
			sleep 0.1
		done
	done
	log "server $name answers in $ns (${*})"
}

start_servers() {
	mkdir -p "$run_dir"
	start_server "$NS_A_API" api-a --tcp 8080 --udp 8080
	start_server "$NS_A_REDIS" redis --tcp 6379
	start_server "$NS_B_API" api-b --tcp 8080 --udp 8080
	start_server "$NS_EXT" ext --tcp 80
	wait_server "$NS_A_API" api-a tcp:8080 udp:8080
	wait_server "$NS_A_REDIS" redis tcp:6379
	wait_server "$NS_B_API" api-b tcp:8080 udp:8080
	wait_server "$NS_EXT" ext tcp:80
}

# is_our_labpod PID: the pid still belongs to a labpod process (guards
# against a recycled pid).
is_our_labpod() {
	local pid=$1
	[[ $pid =~ ^[0-9]+$ ]] && [[ -r /proc/$pid/cmdline ]] &&
		tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'labpod serve'
}

# stop_pid PID: SIGTERM, then SIGKILL after ~2 s.
stop_pid() {
	local pid=$1 i
	kill -TERM "$pid" 2>/dev/null || return 0
	for ((i = 0; i < 20; i++)); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
}

stop_servers() {
	local f pid ns
	if [[ -d $run_dir ]]; then
		for f in "$run_dir"/*.pid; do
			[[ -e $f ]] || continue
			pid=$(<"$f")
			if is_our_labpod "$pid"; then
				log "stopping $(basename "$f" .pid) (pid $pid)"
				stop_pid "$pid"
			fi
			rm -f "$f"
		done
	fi
	# Anything else still running inside the lab's namespaces was started
	# there by someone using the lab; it would keep a deleted namespace
	# alive, so stop it too.
	for ns in "${ALL_NS[@]}"; do
		ns_exists "$ns" || continue
		for pid in $(ip netns pids "$ns" 2>/dev/null); do
			log "stopping pid $pid left in $ns"
			stop_pid "$pid"
		done
	done
}

# ---- commands -----------------------------------------------------------

# on_up_err CMD ARGS...: names the failed command and the functions it ran
# in (innermost first) with the lines they were called from, and, when
# the failing command is ns_exec & co, the arguments they got.
on_up_err() {
	local cmd=$1 i where=""
	shift
	for ((i = 2; i < ${#FUNCNAME[@]}; i++)); do
		where+=" ${FUNCNAME[i]}@${BASH_LINENO[i - 1]}"
	done
	printf 'lab.sh: failed: %s [args: %s] in:%s\n' "$cmd" "$*" "$where" >&2 || true
}

on_up_exit() {
	local rc=$?
	if ((rc != 0)); then
		printf 'lab.sh: up failed (exit %d); removing what was created\n' "$rc" >&2 || true
		cmd_down >&2 || true
	fi
	exit "$rc"
}

cmd_up() {
	local existing
	existing=$(present_ns | tr '\n' ' ')
	if [[ -n $existing ]]; then
		die "lab '$P' already exists (namespaces: ${existing% }); run 'scripts/lab.sh down' first"
	fi
	labpod_bin
	command -v iptables >/dev/null || die "iptables not found"

	# A closed stdout/stderr (e.g. "| head") must neither kill up halfway
	# nor stop its cleanup: ignore SIGPIPE, and log() ignores write errors.
	trap '' PIPE
	trap on_up_exit EXIT
	trap 'exit 130' INT TERM
	trap 'on_up_err "$BASH_COMMAND" "$@"' ERR

	# A lab that vanished without 'down' may have left nf_conntrack_max lowered.
	conntrack_restore
	rm -rf "$run_dir"
	mkdir -p "$run_dir"
	log "creating lab '$P'"
	mk_underlay
	mk_node "$NS_NODE_A" node-a 1
	mk_node "$NS_NODE_B" node-b 2
	mk_flannel "$NS_NODE_A" 1 2
	mk_flannel "$NS_NODE_B" 2 1
	mk_pod "$NS_NODE_A" "$NS_A_API" veth1a23 10.244.1.23 10.244.1.1
	mk_pod "$NS_NODE_A" "$NS_A_REDIS" veth1a42 10.244.1.42 10.244.1.1
	mk_pod "$NS_NODE_B" "$NS_B_API" veth2b57 10.244.2.57 10.244.2.1
	mk_ext
	local ns
	for ns in "${ALL_NS[@]}"; do
		reset_rp_filter "$ns"
	done
	mk_kube_proxy "$NS_NODE_A"
	mk_kube_proxy "$NS_NODE_B"
	start_servers

	trap - EXIT INT TERM ERR
	log "lab '$P' is up: namespaces ${ALL_NS[*]}"
}

cmd_down() {
	local ns
	stop_servers
	for ns in "${ALL_NS[@]}"; do
		if ns_exists "$ns"; then
			ip netns del "$ns" || log "warning: could not delete namespace $ns"
			log "deleted namespace $ns"
		fi
	done
	conntrack_restore
	rm -rf "$run_dir"
	rmdir /run/pathtrace-lab 2>/dev/null || true
	log "lab '$P' is down"
}

cmd_status() {
	local present ns name pid f
	present=$(present_ns)
	if [[ -z $present ]]; then
		echo "lab '$P': not present"
		return 0
	fi
	echo "lab '$P' namespaces:"
	printf '  %s\n' $present
	for ns in "$NS_UNDERLAY" "$NS_NODE_A" "$NS_NODE_B" "$NS_A_API" "$NS_A_REDIS" "$NS_B_API"; do
		ns_exists "$ns" || continue
		echo "addresses in $ns:"
		ns_exec "$ns" ip -br addr | sed 's/^/  /'
	done
	echo "servers:"
	for f in "$run_dir"/*.pid; do
		[[ -e $f ]] || continue
		name=$(basename "$f" .pid)
		pid=$(<"$f")
		if is_our_labpod "$pid"; then
			echo "  $name: running (pid $pid)"
		else
			echo "  $name: NOT running (see $run_dir/$name.log)"
		fi
	done
	echo "faults:"
	local any=0 fault
	for fault in "${FAULTS[@]}"; do
		if ns_exists "$NS_NODE_A" && ns_exists "$NS_NODE_B" && "fault_${fault}_active"; then
			echo "  $fault: active"
			any=1
		fi
	done
	((any)) || echo "  none"
}

# ---- faults -------------------------------------------------------------
# Each fault has fault_X_active (state read back from the kernel, so the
# status is right whoever changed it), fault_X_on and fault_X_off.

POLICY_RULE=(FORWARD -d 10.244.1.42/32 -p tcp --dport 6379 -j DROP)

fault_policy_active() { ns_ipt "$NS_NODE_A" -C "${POLICY_RULE[@]}" 2>/dev/null; }
fault_policy_on() {
	local ns
	for ns in "$NS_NODE_A" "$NS_NODE_B"; do
		if ns_ipt "$ns" -C "${POLICY_RULE[@]}" 2>/dev/null; then
			log "policy: $ns already drops tcp/6379 to 10.244.1.42"
		else
			ns_ipt "$ns" -I "${POLICY_RULE[0]}" 1 "${POLICY_RULE[@]:1}"
			log "policy: $ns: inserted 'iptables -I ${POLICY_RULE[*]}' at position 1"
		fi
	done
}
fault_policy_off() {
	local ns
	for ns in "$NS_NODE_A" "$NS_NODE_B"; do
		if ns_ipt "$ns" -C "${POLICY_RULE[@]}" 2>/dev/null; then
			while ns_ipt "$ns" -D "${POLICY_RULE[@]}" 2>/dev/null; do :; done
			log "policy: $ns: deleted '${POLICY_RULE[*]}'"
		else
			log "policy: $ns: rule not present"
		fi
	done
}

fault_rpfilter_active() { [[ -n $(ns_exec "$NS_NODE_B" ip route show 10.244.1.23/32) ]]; }
fault_rpfilter_on() {
	ns_sysctl "$NS_NODE_B" net/ipv4/conf/all/rp_filter 1
	ns_sysctl "$NS_NODE_B" net/ipv4/conf/flannel.1/rp_filter 1
	log "rpfilter: $NS_NODE_B: rp_filter=1 on all and flannel.1"
	if fault_rpfilter_active; then
		log "rpfilter: $NS_NODE_B: route 10.244.1.23/32 via 10.0.0.11 dev eth0 already present"
	else
		ns_exec "$NS_NODE_B" ip route add 10.244.1.23/32 via 10.0.0.11 dev eth0
		log "rpfilter: $NS_NODE_B: added route 10.244.1.23/32 via 10.0.0.11 dev eth0 (reverse path no longer flannel.1)"
	fi
}
fault_rpfilter_off() {
	ns_sysctl "$NS_NODE_B" net/ipv4/conf/all/rp_filter 0
	ns_sysctl "$NS_NODE_B" net/ipv4/conf/flannel.1/rp_filter 0
	log "rpfilter: $NS_NODE_B: rp_filter=0 on all and flannel.1"
	if fault_rpfilter_active; then
		ns_exec "$NS_NODE_B" ip route del 10.244.1.23/32
		log "rpfilter: $NS_NODE_B: deleted route 10.244.1.23/32"
	else
		log "rpfilter: $NS_NODE_B: route 10.244.1.23/32 not present"
	fi
}

fault_blackhole_active() { [[ -n $(ns_exec "$NS_NODE_A" ip route show type blackhole 10.244.2.57/32) ]]; }
fault_blackhole_on() {
	if fault_blackhole_active; then
		log "blackhole: $NS_NODE_A: blackhole route to 10.244.2.57 already present"
	else
		ns_exec "$NS_NODE_A" ip route add blackhole 10.244.2.57/32
		log "blackhole: $NS_NODE_A: added 'blackhole 10.244.2.57/32'"
	fi
}
fault_blackhole_off() {
	if fault_blackhole_active; then
		ns_exec "$NS_NODE_A" ip route del blackhole 10.244.2.57/32
		log "blackhole: $NS_NODE_A: deleted 'blackhole 10.244.2.57/32'"
	else
		log "blackhole: $NS_NODE_A: no blackhole route to 10.244.2.57"
	fi
}

fault_slow_active() { ns_exec "$NS_NODE_A" tc qdisc show dev flannel.1 root | grep -q '^qdisc tbf '; }
fault_slow_on() {
	if fault_slow_active; then
		log "slow: $NS_NODE_A: tbf already on flannel.1"
	else
		ns_exec "$NS_NODE_A" tc qdisc add dev flannel.1 root tbf rate 1mbit burst 1600 limit 30000
		log "slow: $NS_NODE_A: added 'tbf rate 1mbit burst 1600 limit 30000' on flannel.1"
	fi
}
fault_slow_off() {
	if fault_slow_active; then
		ns_exec "$NS_NODE_A" tc qdisc del dev flannel.1 root
		log "slow: $NS_NODE_A: deleted tbf on flannel.1"
	else
		log "slow: $NS_NODE_A: no tbf on flannel.1"
	fi
}

# The underlay fault: an nftables bridge rule on the switch drops VXLAN on its way
# out of the port toward node-b (a lossy underlay; neither node sees it die).
fault_underlay_active() { ns_exec "$NS_UNDERLAY" nft list table bridge lab_underlay >/dev/null 2>&1; }
fault_underlay_on() {
	if fault_underlay_active; then
		log "underlay: $NS_UNDERLAY: VXLAN to node-b already dropped"
		return
	fi
	ns_exec "$NS_UNDERLAY" nft -f - <<'NFT'
table bridge lab_underlay {
	chain forward {
		type filter hook forward priority 0; policy accept;
		oifname "node-b" udp dport 8472 counter drop
	}
}
NFT
	log "underlay: $NS_UNDERLAY: dropping udp/8472 (VXLAN) on the switch port to node-b"
}
fault_underlay_off() {
	if fault_underlay_active; then
		ns_exec "$NS_UNDERLAY" nft delete table bridge lab_underlay
		log "underlay: $NS_UNDERLAY: VXLAN to node-b passes again"
	else
		log "underlay: $NS_UNDERLAY: VXLAN to node-b was not dropped"
	fi
}

fault_nomasq_active() { ! masq_rule check "$NS_NODE_A"; }
fault_nomasq_on() {
	if masq_rule check "$NS_NODE_A"; then
		while masq_rule check "$NS_NODE_A"; do masq_rule del "$NS_NODE_A"; done
		log "nomasq: $NS_NODE_A: deleted 'POSTROUTING -s $POD_CIDR ! -d $POD_CIDR -j MASQUERADE'"
	else
		log "nomasq: $NS_NODE_A: MASQUERADE rule already absent"
	fi
}
fault_nomasq_off() {
	if masq_rule check "$NS_NODE_A"; then
		log "nomasq: $NS_NODE_A: MASQUERADE rule already present"
	else
		masq_rule add "$NS_NODE_A"
		log "nomasq: $NS_NODE_A: restored 'POSTROUTING -s $POD_CIDR ! -d $POD_CIDR -j MASQUERADE'"
	fi
}

# The mtu fault. The underlay is one L2 segment (both nodes' eth0, the switch's ports,
# ext's eth0) and goes to 1400 as a whole: ends that disagree would have frames dropped
# by the veth or the switch itself, which is another fault. Pods, cni0 and flannel.1 keep
# 1450, so a full-size packet from a pod (1450 bytes) is 1500 once VXLAN adds its 50
# and no longer fits eth0. What the kernel then does depends on flannel.1's df:
#  - df unset (flannel's own setting, and the lab's otherwise): the outer UDP packet has
#    no DF, so node-a fragments it and node-b reassembles it. Nothing is dropped and
#    nothing stalls (iperf3 still moves ~1 Gbit/s here, with thousands of retransmits).
#    The pod never learns the smaller MTU either: vxlan records a PMTU of 1350 toward
#    the peer pod, but forwarded packets ignore learned PMTUs
#    (net.ipv4.ip_forward_use_pmtu=0), and vxlan answers frag-needed itself only as a
#    bridge port, which flannel.1 is not.
#  - df inherit (the outer DF copied from the inner packet) or df set: the outer packet
#    of a DF segment is dropped on node-a in ip_fragment (IpFragFails), and the
#    frag-needed goes to the outer packet's source, node-a itself, not to the pod: the
#    pod sends the same segment again and again, an MTU black hole (iperf3: 0 bytes).
# The fault uses df inherit: DF packets (TCP's, as Linux sends them) die, packets
# without DF still pass fragmented, as over a real underlay whose MTU shrank.
MTU_LOW=1400
# "NS DEV" of each end on the underlay. (Arrays, not a process substitution: the VMs of
# scripts/vm.sh have no /dev/fd.)
MTU_LINKS=("$NS_NODE_A eth0" "$NS_NODE_B eth0" "$NS_UNDERLAY node-a" "$NS_UNDERLAY node-b"
	"$NS_UNDERLAY ext" "$NS_EXT eth0")
link_mtu() { ns_exec "$1" ip -o link show dev "$2" | sed -n 's/.* mtu \([0-9]*\) .*/\1/p'; }
# vxlan_df NS: flannel.1's df setting (unset, set or inherit).
vxlan_df() {
	local df
	df=$(ns_exec "$1" ip -d -o link show dev flannel.1 | sed -n 's/.* df \([a-z]*\) .*/\1/p')
	echo "${df:-unset}"
}
fault_mtu_active() {
	local ns dev link
	for link in "${MTU_LINKS[@]}"; do
		ns=${link% *} dev=${link#* }
		[[ $(link_mtu "$ns" "$dev") == 1500 ]] || return 0
	done
	[[ $(vxlan_df "$NS_NODE_A") != unset || $(vxlan_df "$NS_NODE_B") != unset ]]
}
fault_mtu_on() {
	local ns dev link
	for ns in "$NS_NODE_A" "$NS_NODE_B"; do
		if [[ $(vxlan_df "$ns") == inherit ]]; then
			log "mtu: $ns: flannel.1 already copies the inner DF (df inherit)"
		else
			ns_exec "$ns" ip link set flannel.1 type vxlan df inherit
			log "mtu: $ns: flannel.1 df inherit (the outer header copies the inner DF bit)"
		fi
	done
	for link in "${MTU_LINKS[@]}"; do
		ns=${link% *} dev=${link#* }
		if [[ $(link_mtu "$ns" "$dev") == "$MTU_LOW" ]]; then
			log "mtu: $ns: $dev already at mtu $MTU_LOW"
		else
			ns_exec "$ns" ip link set dev "$dev" mtu "$MTU_LOW"
			log "mtu: $ns: $dev mtu $MTU_LOW"
		fi
	done
}
fault_mtu_off() {
	local ns dev link
	for link in "${MTU_LINKS[@]}"; do
		ns=${link% *} dev=${link#* }
		if [[ $(link_mtu "$ns" "$dev") == 1500 ]]; then
			log "mtu: $ns: $dev already at mtu 1500"
		else
			ns_exec "$ns" ip link set dev "$dev" mtu 1500
			log "mtu: $ns: $dev mtu 1500"
		fi
	done
	for ns in "$NS_NODE_A" "$NS_NODE_B"; do
		if [[ $(vxlan_df "$ns") == unset ]]; then
			log "mtu: $ns: flannel.1 df already unset"
		else
			ns_exec "$ns" ip link set flannel.1 type vxlan df unset
			log "mtu: $ns: flannel.1 df unset"
		fi
		# The PMTUs learned during the fault (1400 toward the peer node, 1350 toward
		# its pods) would otherwise stay for 10 minutes.
		ns_exec "$ns" ip route flush cache
	done
}

# The hairpin fault: a pod that reaches itself through the VIP needs both kube-proxy's
# masquerade (else the reply's source would be the pod's own address, and the reply
# would skip the node's conntrack) and the bridge's hairpin mode on its port (else the
# bridge will not send the frame back out of the port it came in by).
HAIRPIN_MASQ=("KUBE-SEP-API-A -s 10.244.1.23/32 -j KUBE-MARK-MASQ"
	"KUBE-SEP-API-B -s 10.244.2.57/32 -j KUBE-MARK-MASQ")
POD_PORTS=("$NS_NODE_A veth1a23" "$NS_NODE_A veth1a42" "$NS_NODE_B veth2b57")
hairpin_mode() { ns_exec "$1" ip -d -o link show dev "$2" | sed -n 's/.* hairpin \([a-z]*\) .*/\1/p'; }
fault_hairpin_active() {
	local ns dev rule link
	for ns in "$NS_NODE_A" "$NS_NODE_B"; do
		for rule in "${HAIRPIN_MASQ[@]}"; do
			# shellcheck disable=SC2086 # the rule is words
			ns_ipt "$ns" -t nat -C $rule 2>/dev/null || return 0
		done
	done
	for link in "${POD_PORTS[@]}"; do
		ns=${link% *} dev=${link#* }
		[[ $(hairpin_mode "$ns" "$dev") == on ]] || return 0
	done
	return 1
}
fault_hairpin_on() {
	local ns dev rule link
	for ns in "$NS_NODE_A" "$NS_NODE_B"; do
		for rule in "${HAIRPIN_MASQ[@]}"; do
			# shellcheck disable=SC2086
			if ns_ipt "$ns" -t nat -C $rule 2>/dev/null; then
				while ns_ipt "$ns" -t nat -D $rule 2>/dev/null; do :; done
				log "hairpin: $ns: deleted 'nat $rule'"
			else
				log "hairpin: $ns: 'nat $rule' already absent"
			fi
		done
	done
	for link in "${POD_PORTS[@]}"; do
		ns=${link% *} dev=${link#* }
		if [[ $(hairpin_mode "$ns" "$dev") == off ]]; then
			log "hairpin: $ns: $dev hairpin already off"
		else
			ns_exec "$ns" ip link set "$dev" type bridge_slave hairpin off
			log "hairpin: $ns: $dev hairpin off"
		fi
	done
}
fault_hairpin_off() {
	local ns dev rule link
	for ns in "$NS_NODE_A" "$NS_NODE_B"; do
		for rule in "${HAIRPIN_MASQ[@]}"; do
			# shellcheck disable=SC2086
			if ns_ipt "$ns" -t nat -C $rule 2>/dev/null; then
				log "hairpin: $ns: 'nat $rule' already present"
			else
				# First in its chain, before the DNAT, as mk_kube_proxy writes it.
				ns_ipt "$ns" -t nat -I ${rule%% *} 1 ${rule#* }
				log "hairpin: $ns: restored 'nat $rule'"
			fi
		done
	done
	for link in "${POD_PORTS[@]}"; do
		ns=${link% *} dev=${link#* }
		if [[ $(hairpin_mode "$ns" "$dev") == on ]]; then
			log "hairpin: $ns: $dev hairpin already on"
		else
			ns_exec "$ns" ip link set "$dev" type bridge_slave hairpin on
			log "hairpin: $ns: $dev hairpin on"
		fi
	done
}

# The neighbour fault: node-a's flannel "lost" node-b. Of flanneld's two entries for
# the peer, the VXLAN FDB entry is the one deleted: the kernel then drops node-a's
# packets to node-b's pods in vxlan_xmit at once (a drop pathtrace names). Deleting the
# neighbour entry of 10.244.2.0 instead makes the packets wait for ARP on flannel.1
# (which the FDB cannot carry) and be freed ~3 s later, in neigh_invalidate, after
# pathtrace has judged them lost. off restores both entries as mk_flannel writes them,
# so it also repairs the neighbour variant done by hand; active reads both.
fault_neighbour_active() {
	! flannel_peer_fdb check "$NS_NODE_A" 2 || ! flannel_peer_neigh check "$NS_NODE_A" 2
}
fault_neighbour_on() {
	if flannel_peer_fdb check "$NS_NODE_A" 2; then
		while flannel_peer_fdb check "$NS_NODE_A" 2; do flannel_peer_fdb del "$NS_NODE_A" 2; done
		log "neighbour: $NS_NODE_A: deleted fdb '0a:f1:00:00:00:02 dev flannel.1 dst 10.0.0.12'"
	else
		log "neighbour: $NS_NODE_A: fdb entry for 0a:f1:00:00:00:02 already absent"
	fi
}
fault_neighbour_off() {
	if flannel_peer_fdb check "$NS_NODE_A" 2; then
		log "neighbour: $NS_NODE_A: fdb entry for 0a:f1:00:00:00:02 already present"
	else
		flannel_peer_fdb add "$NS_NODE_A" 2
		log "neighbour: $NS_NODE_A: restored fdb '0a:f1:00:00:00:02 dev flannel.1 dst 10.0.0.12'"
	fi
	if flannel_peer_neigh check "$NS_NODE_A" 2; then
		log "neighbour: $NS_NODE_A: neighbour 10.244.2.0 already present"
	else
		flannel_peer_neigh add "$NS_NODE_A" 2
		log "neighbour: $NS_NODE_A: restored neighbour '10.244.2.0 lladdr 0a:f1:00:00:00:02 nud permanent'"
	fi
}

# The conntrack fault: the table full. nf_conntrack_max is one value for the whole
# machine, writable only from the init network namespace (read-only in the others), and
# compared with each namespace's own count: lowering it refuses new connections in every
# namespace of the machine, the host's own included. So on refuses unless
# PATHTRACE_VM=1 says the machine is a VM of its own (scripts/test-kernels.sh sets it,
# as for cmd/pathtrace's TestConntrackFull). As that test does, on first makes two TCP
# connections on each node to its own pod (closed connections stay in TIME_WAIT, assured,
# which early_drop may not evict), then sets the max to 1: below what each node then
# holds, so the next new connection is refused whatever expires meanwhile (0 would mean
# no limit). The value it had is saved under the run dir; off, clear, down and the next
# up put it back.
CT_MAX=/proc/sys/net/netfilter/nf_conntrack_max
ct_saved() { echo "$run_dir/nf_conntrack_max.saved"; }
fault_conntrack_active() {
	local saved
	saved=$(ct_saved)
	[[ -f $saved && -r $CT_MAX ]] && [[ $(<"$CT_MAX") != "$(<"$saved")" ]]
}
# conntrack_restore: puts back a saved nf_conntrack_max (nothing when none is saved).
conntrack_restore() {
	local saved
	saved=$(ct_saved)
	[[ -f $saved ]] || return 0
	if [[ $(<"$CT_MAX") != "$(<"$saved")" ]]; then
		cat "$saved" >"$CT_MAX"
		log "conntrack: nf_conntrack_max restored to $(<"$saved")"
	fi
	rm -f "$saved"
}
fault_conntrack_on() {
	[[ ${PATHTRACE_VM:-} == 1 ]] ||
		die "fault conntrack lowers net.netfilter.nf_conntrack_max, one value for the whole machine (the host's own connections too): it runs only in a VM of its own, with PATHTRACE_VM=1 (e.g. scripts/vm.sh run bookworm -- env PATHTRACE_VM=1 scripts/lab.sh fault conntrack)"
	[[ $(readlink /proc/self/ns/net) == "$(readlink /proc/1/ns/net)" ]] ||
		die "fault conntrack: nf_conntrack_max is writable only from the init network namespace; run lab.sh there"
	[[ -w $CT_MAX ]] || die "fault conntrack: $CT_MAX is missing or read-only (nf_conntrack not loaded?)"
	if fault_conntrack_active; then
		log "conntrack: nf_conntrack_max already lowered to $(<"$CT_MAX") (saved $(<"$(ct_saved)"))"
		return
	fi
	local lp i
	lp=$(lab_labpod)
	for i in 1 2; do
		ns_exec "$NS_NODE_A" "$lp" tcp 10.244.1.23:8080 --timeout 2s >/dev/null || die "conntrack: node-a cannot reach api-a"
		ns_exec "$NS_NODE_B" "$lp" tcp 10.244.2.57:8080 --timeout 2s >/dev/null || die "conntrack: node-b cannot reach api-b"
	done
	mkdir -p "$run_dir"
	cat "$CT_MAX" >"$(ct_saved)"
	echo 1 >"$CT_MAX"
	log "conntrack: nf_conntrack_max $(<"$(ct_saved)") -> 1 (node-a holds $(ns_exec "$NS_NODE_A" cat /proc/sys/net/netfilter/nf_conntrack_count), node-b $(ns_exec "$NS_NODE_B" cat /proc/sys/net/netfilter/nf_conntrack_count) entries): new connections are dropped"
}
fault_conntrack_off() {
	if [[ -f $(ct_saved) ]]; then
		conntrack_restore
	else
		log "conntrack: nf_conntrack_max was not lowered by this lab"
	fi
}

# lab_labpod: the labpod binary: $LABPOD, else the one the lab's servers run.
lab_labpod() {
	if [[ -n ${LABPOD:-} ]]; then
		echo "$LABPOD"
		return
	fi
	local pid
	pid=$(cat "$run_dir/api-b.pid" 2>/dev/null) || true
	if is_our_labpod "$pid"; then
		readlink "/proc/$pid/exe"
	elif [[ -x $repo/bin/labpod ]]; then
		echo "$repo/bin/labpod"
	else
		die "no labpod binary: set LABPOD"
	fi
}

cmd_fault() {
	local name=$1 mode=$2
	[[ " ${FAULTS[*]} " == *" $name "* ]] || usage_error "unknown fault '$name' (known: ${FAULTS[*]})"
	[[ $mode == on || $mode == off ]] || usage_error "fault $name: expected 'off' or nothing, got '$mode'"
	require_lab
	"fault_${name}_${mode}"
}

cmd_clear() {
	local fault
	require_lab
	for fault in "${FAULTS[@]}"; do
		"fault_${fault}_off"
	done
}

main() {
	local cmd=${1:-}
	case $cmd in
	-h | --help | help)
		usage
		return 0
		;;
	up | down | status | clear)
		(($# == 1)) || usage_error "$cmd takes no arguments"
		;;
	fault)
		(($# == 2 || $# == 3)) || usage_error "fault needs NAME and optionally 'off'"
		;;
	"")
		usage >&2
		exit 2
		;;
	*)
		usage_error "unknown command '$cmd'"
		;;
	esac
	check_prefix
	require_root "$@"
	case $cmd in
	up) cmd_up ;;
	down) cmd_down ;;
	status) cmd_status ;;
	fault) cmd_fault "$2" "${3:-on}" ;;
	clear) cmd_clear ;;
	esac
}

main "$@"
