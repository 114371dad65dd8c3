#!/usr/bin/env bash
# lab.sh builds and tears down the pathtrace lab: a two-node, Kubernetes-like
# network (a CNI's overlay + kube-proxy iptables service VIP) made only of
# network namespaces. It never touches interfaces of the root namespace and
# all traffic it causes stays inside the namespaces it creates.
#
# The default layout (flannel, IPv4 only):
#   underlay ns:  br0 ──┬── node-a ═ eth0 (node-a ns, 10.0.0.11)
#                       └── node-b ═ eth0 (node-b ns, 10.0.0.12)
#   node ns:      eth0, flannel.1 (VXLAN 1, udp/8472), cni0 bridge 10.244.N.1/24
#   pod ns:       eth0 ═ vethXXXX (enslaved to cni0 in the node ns)
# Other layouts (up --cni ...) imitate what Calico and Cilium program on nodes:
# routed pods behind caliXXX / lxcXXX veths, their own tunnels, names and addresses.
set -Eeuo pipefail

usage() {
	cat <<'EOF'
Usage: scripts/lab.sh up [--cni LAYOUT] [--dual-stack] | down | status | env
                      | fault NAME [off] | clear | redirect on|off

Builds the pathtrace lab: two "nodes" joined by a CNI's overlay, three "pods"
running labpod servers, and a kube-proxy style service VIP, all in network
namespaces (nothing is created in the root namespace). Must be run as root.

Commands:
  up              create the lab and start the pod servers. If any namespace
                  of the lab already exists, up refuses and exits 1: run
                  'down' first. If a step fails, up removes what it created.
                  --cni LAYOUT  flannel (default), calico-vxlan, calico-ipip or
                                geneve (see Layouts)
                  --dual-stack  IPv6 too (flannel only)
                  The layout is remembered under /run/pathtrace-lab/P: down,
                  status, env, fault and redirect need no option.
  down            stop the servers, detach labredirect and delete the lab's
                  namespaces; succeeds when the lab is partly present or absent.
  status          print the layout, namespaces, node addresses, servers,
                  faults and whether the redirect is on.
  env [--cni LAYOUT] [--dual-stack]
                  print KEY=VALUE lines describing the lab (see Env keys): of
                  the lab that is up, else of the layout the options name.
  fault NAME      inject a fault; 'fault NAME off' removes it (both idempotent).
  clear           remove every fault.
  redirect on|off attach (detach) cmd/labredirect, a Cilium-like tc program,
                  on the ingress of both nodes' tunnel device(s): packets to a
                  local pod go with bpf_redirect_peer straight into the pod's
                  namespace, skipping the host veth, the bridge and the node's
                  netfilter (so the node's conntrack never sees them: a reply
                  from a remote VIP backend is not un-DNATed). Idempotent;
                  off by default. tcx on kernels >= 6.6 (link pinned under
                  /sys/fs/bpf/labredirect/NS/DEV, '.' in DEV as '_'), else
                  a clsact cls_bpf filter at priority 1. LABREDIRECT_MODE=clsact
                  forces the latter.

Exit status: 0 done, 1 failed, 2 usage error, 3 not possible here: the kernel
lacks what the layout needs (calico-ipip: ipip; geneve: geneve) or the fault
does not exist on this layout. Tests may skip on 3.

Layouts (the namespaces keep their names; devices and addresses differ):
  flannel       cni0 bridge, veths vethNXXX, flannel.1 (VXLAN 1, udp/8472),
                nodes 10.0.0.11-12/24, pods 10.244.N.0/24, VIP 10.96.12.34
  calico-vxlan  no bridge: pods routed by /32 routes on cali + 11 hex veths
                (proxy_arp, pod default via 169.254.1.1 onlink), /26 IPAM
                blocks of 192.168.0.0/16, vxlan.calico (VNI 4096, udp/4789)
                with static route + permanent neighbour + FDB per peer block,
                nodes 172.18.0.2-3/16, VIP 10.100.33.44
  calico-ipip   as calico-vxlan, tunnel tunl0 (IP in IP, protocol 4), routes
                BLOCK via PEER_NODE_IP dev tunl0 onlink
  geneve        Cilium-like: lxc + 12 hex veths, /32 routes, cilium_host (the
                gateway 10.10.N.x/32) and cilium_net, cilium_geneve in external
                (collect_md) mode, routes BLOCK encap ip id 2 dst PEER_NODE_IP,
                udp/6081, pods 10.10.N.0/24, nodes 192.168.56.11-12/24,
                VIP 10.110.55.66
  --dual-stack  (flannel) fd00:10::11-12/64 on the nodes, pods
                fd00:244:N::X/64 on cni0, flannel-v6.1 (VXLAN 1, udp/8472 over
                IPv6), VIP6 fd00:96::1234 with ip6tables kube-proxy chains and
                MASQUERADE

Faults:
  policy     both nodes: FORWARD DROP of tcp/6379 to redis 10.244.1.42 (with
             --dual-stack the ip6tables one to its IPv6 address too)
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
  On the other layouts the faults use the layout's names and addresses (its
  tunnel device, pods, MASQUERADE chain; underlay drops its encapsulation:
  udp/4789, IP protocol 4 or udp/6081); mtu, hairpin and neighbour exist only
  on flannel (elsewhere they exit 3).

Lab (P = $LAB_PREFIX), flannel layout:
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
  'scripts/lab.sh env' prints the same for whichever layout is up.

Env keys (scripts/lab.sh env; an empty value: not in this layout):
  CNI DUAL_STACK       layout name; 1 with --dual-stack, else 0
  PREFIX               $LAB_PREFIX
  ENCAP ENCAP_PORT     vxlan|ipip|geneve; its UDP port (empty for ipip)
  ENCAP_IPPROTO        IP protocol of the outer packets: 17 (UDP) or 4 (ipip)
  TUNNEL TUNNEL6       the nodes' tunnel device (IPv4; IPv6 with --dual-stack)
  UPLINK BRIDGE        the nodes' underlay device (eth0); the pod bridge or empty
  UNDERLAY_NS EXT_NS NODE_A_NS NODE_B_NS   namespaces of switch, ext and nodes
  NODE_A_IP NODE_B_IP NODE_A_IP6 NODE_B_IP6   node underlay addresses
  NODE_A_POD_CIDR NODE_B_POD_CIDR NODE_A_POD_CIDR6 NODE_B_POD_CIDR6
  POD_CIDR POD_CIDR6   the cluster's pod network
  POD_X_NS POD_X_IP POD_X_IP6 POD_X_VETH POD_X_NODE (node-a|node-b)
  POD_X_NODE_NS POD_X_GW   for X in A_API A_REDIS B_API
  EXT_IP EXT_IP6 EXT_PORT  ext's address(es) and labpod port
  VIP VIP6 VIP_PORT BACKEND_PORT   the service and its pods' port
  API_PORT             the api pods' tcp+udp port (8080)
  REDIS_PORT POLICY_PORT   redis's port, the one the policy fault drops (6379)

Environment:
  LAB_PREFIX   prefix of every namespace name (default: pt), so that a test
               lab (e.g. LAB_PREFIX=ptt) can coexist with a demo lab
  LABPOD       labpod binary (default: go build -o REPO/bin/labpod ./cmd/labpod)
  LABREDIRECT  labredirect binary for 'redirect' (default: go build -o
               REPO/bin/labredirect ./cmd/labredirect)
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

FAULTS=(policy rpfilter blackhole slow nomasq underlay mtu hairpin neighbour conntrack)
# Faults that exist only on the flannel layout (a bridge, flannel's VXLAN FDB, df).
FLANNEL_ONLY_FAULTS=(mtu hairpin neighbour)
LAYOUTS=(flannel calico-vxlan calico-ipip geneve)
# Where labredirect pins its tcx links (BPFFS_DIR/NS/DEV).
BPFFS_DIR=/sys/fs/bpf/labredirect

# The layout: CNI and DUAL (1: IPv6 too). up takes them from its options and writes
# them to $layout_file; every other command reads them back from there.
layout_file=$run_dir/layout
CNI=flannel
DUAL=0

# veth_name PREFIX LEN ID: PREFIX and the first LEN hex digits of a hash of ID, as
# Calico (cali + 11 of sha1) and Cilium (lxc + 12 of sha256) name host veths.
veth_name() {
	local sum
	case $1 in
	cali) sum=$(printf '%s' "$3" | sha1sum) ;;
	*) sum=$(printf '%s' "$3" | sha256sum) ;;
	esac
	printf '%s%s\n' "$1" "${sum:0:$2}"
}

# set_layout: the names and addresses of layout $CNI (and IPv6 ones when DUAL=1).
# The flannel values are the lab's historical ones, which tests and fixtures depend on.
set_layout() {
	UPLINK=eth0 VIP_PORT=80 BACKEND_PORT=8080 REDIS_PORT=6379 EXT_PORT=80
	TUNNEL6="" NODE_A_IP6="" NODE_B_IP6="" EXT_IP6="" POD_CIDR6="" VIP6=""
	NODE_A_POD_CIDR6="" NODE_B_POD_CIDR6=""
	POD_A_API_IP6="" POD_A_REDIS_IP6="" POD_B_API_IP6="" POD_A_GW6="" POD_B_GW6=""
	ENCAP_IPPROTO=17 BRIDGE=""
	case $CNI in
	flannel)
		ENCAP=vxlan ENCAP_PORT=8472 TUNNEL=flannel.1 BRIDGE=cni0
		UNDERLAY_LEN=24 NODE_A_IP=10.0.0.11 NODE_B_IP=10.0.0.12 EXT_IP=10.0.0.100
		POD_CIDR=10.244.0.0/16 NODE_A_POD_CIDR=10.244.1.0/24 NODE_B_POD_CIDR=10.244.2.0/24
		POD_A_API_IP=10.244.1.23 POD_A_REDIS_IP=10.244.1.42 POD_B_API_IP=10.244.2.57
		POD_A_API_VETH=veth1a23 POD_A_REDIS_VETH=veth1a42 POD_B_API_VETH=veth2b57
		POD_A_GW=10.244.1.1 POD_B_GW=10.244.2.1
		VIP=10.96.12.34 MASQ_CHAIN=POSTROUTING
		if ((DUAL)); then
			TUNNEL6=flannel-v6.1
			NODE_A_IP6=fd00:10::11 NODE_B_IP6=fd00:10::12 EXT_IP6=fd00:10::100
			POD_CIDR6=fd00:244::/32 NODE_A_POD_CIDR6=fd00:244:1::/64 NODE_B_POD_CIDR6=fd00:244:2::/64
			POD_A_API_IP6=fd00:244:1::23 POD_A_REDIS_IP6=fd00:244:1::42 POD_B_API_IP6=fd00:244:2::57
			POD_A_GW6=fd00:244:1::1 POD_B_GW6=fd00:244:2::1
			VIP6=fd00:96::1234
		fi
		;;
	calico-vxlan | calico-ipip)
		if [[ $CNI == calico-vxlan ]]; then
			ENCAP=vxlan ENCAP_PORT=4789 TUNNEL=vxlan.calico
		else
			ENCAP=ipip ENCAP_PORT="" ENCAP_IPPROTO=4 TUNNEL=tunl0
		fi
		UNDERLAY_LEN=16 NODE_A_IP=172.18.0.2 NODE_B_IP=172.18.0.3 EXT_IP=172.18.0.100
		POD_CIDR=192.168.0.0/16 NODE_A_POD_CIDR=192.168.10.64/26 NODE_B_POD_CIDR=192.168.20.128/26
		# The tunnel addresses Calico's IPAM gives each node: the first of its block.
		NODE_A_VTEP=192.168.10.64 NODE_B_VTEP=192.168.20.128
		POD_A_API_IP=192.168.10.70 POD_A_REDIS_IP=192.168.10.77 POD_B_API_IP=192.168.20.141
		POD_A_API_VETH=$(veth_name cali 11 default.a-api)
		POD_A_REDIS_VETH=$(veth_name cali 11 default.a-redis)
		POD_B_API_VETH=$(veth_name cali 11 default.b-api)
		POD_A_GW=169.254.1.1 POD_B_GW=169.254.1.1
		VIP=10.100.33.44 MASQ_CHAIN=cali-nat-outgoing
		;;
	geneve)
		ENCAP=geneve ENCAP_PORT=6081 TUNNEL=cilium_geneve
		UNDERLAY_LEN=24 NODE_A_IP=192.168.56.11 NODE_B_IP=192.168.56.12 EXT_IP=192.168.56.100
		POD_CIDR=10.10.0.0/16 NODE_A_POD_CIDR=10.10.0.0/24 NODE_B_POD_CIDR=10.10.1.0/24
		POD_A_API_IP=10.10.0.57 POD_A_REDIS_IP=10.10.0.201 POD_B_API_IP=10.10.1.88
		POD_A_API_VETH=$(veth_name lxc 12 default/a-api)
		POD_A_REDIS_VETH=$(veth_name lxc 12 default/a-redis)
		POD_B_API_VETH=$(veth_name lxc 12 default/b-api)
		# cilium_host's address on each node (Cilium's "router IP"): the pods' gateway.
		POD_A_GW=10.10.0.114 POD_B_GW=10.10.1.75
		VIP=10.110.55.66 MASQ_CHAIN=CILIUM_POST_nat
		;;
	esac
	case $ENCAP in
	vxlan) ENCAP_DESC="udp/$ENCAP_PORT (VXLAN)" ENCAP_NAME=VXLAN ;;
	geneve) ENCAP_DESC="udp/$ENCAP_PORT (Geneve)" ENCAP_NAME=Geneve ;;
	ipip) ENCAP_DESC="IP protocol 4 (IP in IP)" ENCAP_NAME="IP in IP" ;;
	esac
	POLICY_RULE=(FORWARD -d "$POD_A_REDIS_IP/32" -p tcp --dport "$REDIS_PORT" -j DROP)
	POLICY_RULE6=()
	if ((DUAL)); then
		POLICY_RULE6=(FORWARD -d "$POD_A_REDIS_IP6/128" -p tcp --dport "$REDIS_PORT" -j DROP)
	fi
	HAIRPIN_MASQ=("KUBE-SEP-API-A -s $POD_A_API_IP/32 -j KUBE-MARK-MASQ"
		"KUBE-SEP-API-B -s $POD_B_API_IP/32 -j KUBE-MARK-MASQ")
	POD_PORTS=("$NS_NODE_A $POD_A_API_VETH" "$NS_NODE_A $POD_A_REDIS_VETH" "$NS_NODE_B $POD_B_API_VETH")
}

# load_layout: the layout of the lab that is up (flannel, IPv4 when none is recorded:
# a lab made before layouts existed, or none).
load_layout() {
	local line
	if [[ -r $layout_file ]]; then
		while IFS= read -r line; do
			case $line in
			CNI=*) CNI=${line#CNI=} ;;
			DUAL=*) DUAL=${line#DUAL=} ;;
			esac
		done <"$layout_file"
	fi
	[[ " ${LAYOUTS[*]} " == *" $CNI "* ]] || die "$layout_file names an unknown layout '$CNI'"
	[[ $DUAL == 0 || $DUAL == 1 ]] || die "$layout_file: DUAL must be 0 or 1, not '$DUAL'"
	set_layout
}

# parse_layout_opts ARGS...: up's and env's --cni LAYOUT and --dual-stack.
parse_layout_opts() {
	while (($#)); do
		case $1 in
		--cni)
			(($# >= 2)) || usage_error "--cni needs a layout (${LAYOUTS[*]})"
			CNI=$2
			shift 2
			;;
		--cni=*)
			CNI=${1#--cni=}
			shift
			;;
		--dual-stack)
			DUAL=1
			shift
			;;
		*) usage_error "unknown option '$1'" ;;
		esac
	done
	[[ " ${LAYOUTS[*]} " == *" $CNI "* ]] || usage_error "unknown layout '$CNI' (known: ${LAYOUTS[*]})"
	if ((DUAL)) && [[ $CNI != flannel ]]; then
		usage_error "--dual-stack is implemented for --cni flannel only"
	fi
	set_layout
}

log() { printf 'lab.sh: %s\n' "$*" || true; }
die() {
	printf 'lab.sh: error: %s\n' "$*" >&2
	exit 1
}
# usage_error MSG: a mistake on the command line (exit 2).
# unsupported MSG: what the command asks for cannot be done here: the kernel lacks it,
# or the layout has no such thing (exit 3, so that tests can skip for that reason only).
unsupported() {
	printf 'lab.sh: not possible here: %s\n' "$*" >&2
	exit 3
}
usage_error() {
	printf 'lab.sh: %s\n' "$*" >&2
	printf 'Usage: scripts/lab.sh up [--cni LAYOUT] [--dual-stack] | down | status | env | fault NAME [off] | clear | redirect on|off   (-h for help)\n' >&2
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

# mk_ns NS [v6] creates a namespace with loopback up and a quiet, predictable
# configuration. Defaults are set before any interface exists so that every
# interface created later inherits them: IPv4 conf in a new namespace is
# copied from the root namespace, which may use rp_filter=1 or 2. With v6
# (a --dual-stack lab) IPv6 stays on, without DAD (addresses usable at once)
# and without router advertisements.
mk_ns() {
	local ns=$1 v6=${2:-}
	ip netns add "$ns"
	ns_exec "$ns" ip link set lo up
	ns_sysctl "$ns" net/ipv4/conf/all/rp_filter 0
	ns_sysctl "$ns" net/ipv4/conf/default/rp_filter 0
	if [[ $v6 == v6 ]]; then
		ns_sysctl "$ns" net/ipv6/conf/all/accept_dad 0
		ns_sysctl "$ns" net/ipv6/conf/default/accept_dad 0
		ns_sysctl "$ns" net/ipv6/conf/all/accept_ra 0
		ns_sysctl "$ns" net/ipv6/conf/default/accept_ra 0
		ns_sysctl "$ns" net/ipv6/conf/all/disable_ipv6 0
		ns_sysctl "$ns" net/ipv6/conf/default/disable_ipv6 0
		return
	fi
	# IPv4-only lab: no router solicitations, ND or MLD chatter in traces
	# (nothing to do on a kernel without IPv6).
	if ns_exec "$ns" test -d /proc/sys/net/ipv6; then
		ns_sysctl "$ns" net/ipv6/conf/all/disable_ipv6 1
		ns_sysctl "$ns" net/ipv6/conf/default/disable_ipv6 1
	fi
}

# v6_flag: "v6" in a --dual-stack lab (mk_ns's second argument).
v6_flag() { if ((DUAL)); then echo v6; fi; }

# set_bridge_nf NS VALUE: whether bridged IPv4 traffic goes through
# iptables. Kubernetes needs it on nodes (br_netfilter): without it the
# reply of a pod to a same-node client that reached it through the VIP is
# bridged straight back and never un-DNATed. The module is not loaded
# here: that would change bridging in the root namespace too.
set_bridge_nf() {
	local ns=$1 value=$2
	if ns_exec "$ns" test -e /proc/sys/net/bridge/bridge-nf-call-iptables; then
		ns_sysctl "$ns" net/bridge/bridge-nf-call-iptables "$value"
		if ((DUAL)); then
			ns_sysctl "$ns" net/bridge/bridge-nf-call-ip6tables "$value"
		fi
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
	mk_ns "$NS_EXT" "$(v6_flag)"
	ip link add ext netns "$NS_UNDERLAY" type veth peer name eth0 netns "$NS_EXT"
	ns_exec "$NS_UNDERLAY" ip link set ext master br0
	ns_exec "$NS_UNDERLAY" ip link set ext up
	ns_exec "$NS_EXT" ip addr add "$EXT_IP/$UNDERLAY_LEN" dev eth0
	if ((DUAL)); then
		ns_exec "$NS_EXT" ip -6 addr add "$EXT_IP6/64" dev eth0 nodad
	fi
	ns_exec "$NS_EXT" ip link set eth0 up
}

# node_ip IDX / node_ip6 IDX: the underlay address of node IDX (1: node-a, 2: node-b).
node_ip() { if (($1 == 1)); then echo "$NODE_A_IP"; else echo "$NODE_B_IP"; fi; }
node_ip6() { if (($1 == 1)); then echo "$NODE_A_IP6"; else echo "$NODE_B_IP6"; fi; }

# mk_node NS NAME IDX: a node namespace with eth0 on the underlay switch and,
# on the flannel layout, cni0 for its pods. NAME is node-a/node-b (switch port
# name), IDX 1 or 2.
mk_node() {
	local ns=$1 name=$2 idx=$3
	local ip
	ip=$(node_ip "$idx")
	mk_ns "$ns" "$(v6_flag)"
	set_bridge_nf "$ns" 1
	ns_sysctl "$ns" net/ipv4/ip_forward 1
	if ((DUAL)); then
		ns_sysctl "$ns" net/ipv6/conf/all/forwarding 1
	fi

	# Both ends are created directly in their namespaces: nothing appears
	# in the root namespace, not even for a moment.
	ip link add "$name" netns "$NS_UNDERLAY" type veth peer name eth0 netns "$ns"
	ns_exec "$NS_UNDERLAY" ip link set "$name" master br0
	ns_exec "$NS_UNDERLAY" ip link set "$name" up
	ns_exec "$ns" ip link set eth0 mtu 1500
	ns_exec "$ns" ip addr add "$ip/$UNDERLAY_LEN" dev eth0
	if ((DUAL)); then
		ns_exec "$ns" ip -6 addr add "$(node_ip6 "$idx")/64" dev eth0 nodad
	fi
	ns_exec "$ns" ip link set eth0 up

	[[ $CNI == flannel ]] || return 0
	ns_exec "$ns" ip link add cni0 type bridge
	ns_exec "$ns" ip link set cni0 mtu 1450
	ns_exec "$ns" ip addr add "10.244.$idx.1/24" dev cni0
	if ((DUAL)); then
		ns_exec "$ns" ip -6 addr add "fd00:244:$idx::1/64" dev cni0 nodad
	fi
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
	if ((DUAL)); then
		mk_flannel_v6 "$ns" "$idx" "$peer"
	fi
}

# mk_flannel_v6 NS IDX PEER_IDX: what flanneld writes for IPv6 in a dual-stack
# cluster: a second VXLAN device, flannel-v6.1 (VNI 1, udp/8472, over the nodes'
# IPv6 addresses), holding the node's subnet address as a /128, and the same
# route + permanent neighbour + FDB entry for the peer's subnet.
mk_flannel_v6() {
	local ns=$1 idx=$2 peer=$3
	local mac=0a:f6:00:00:00:0$idx peer_mac=0a:f6:00:00:00:0$peer
	ns_exec "$ns" ip link add flannel-v6.1 type vxlan id 1 dstport 8472 local "$(node_ip6 "$idx")" dev eth0 nolearning
	ns_exec "$ns" ip link set flannel-v6.1 mtu 1430 address "$mac"
	ns_exec "$ns" ip -6 addr add "fd00:244:$idx::/128" dev flannel-v6.1 nodad
	ns_exec "$ns" ip link set flannel-v6.1 up
	ns_exec "$ns" ip -6 route add "fd00:244:$peer::/64" via "fd00:244:$peer::" dev flannel-v6.1 onlink
	ns_exec "$ns" ip -6 neigh replace "fd00:244:$peer::" lladdr "$peer_mac" dev flannel-v6.1 nud permanent
	ns_exec "$ns" bridge fdb append "$peer_mac" dev flannel-v6.1 dst "$(node_ip6 "$peer")"
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

# mk_pod NODE_NS POD_NS HOST_VETH IP GW [IP6 GW6]: a pod namespace whose eth0 is
# paired with HOST_VETH on the node's cni0.
mk_pod() {
	local node=$1 ns=$2 veth=$3 ip=$4 gw=$5 ip6=${6:-} gw6=${7:-}
	mk_ns "$ns" "$(v6_flag)"
	ip link add "$veth" netns "$node" type veth peer name eth0 netns "$ns"
	ns_exec "$node" ip link set "$veth" mtu 1450 master cni0
	# Like kubelet's hairpin mode: a pod may reach itself through the VIP.
	ns_exec "$node" ip link set "$veth" type bridge_slave hairpin on
	ns_exec "$node" ip link set "$veth" up
	ns_exec "$ns" ip link set eth0 mtu 1450
	ns_exec "$ns" ip addr add "$ip/24" dev eth0
	if [[ -n $ip6 ]]; then
		ns_exec "$ns" ip -6 addr add "$ip6/64" dev eth0 nodad
	fi
	ns_exec "$ns" ip link set eth0 up
	ns_exec "$ns" ip route add default via "$gw" dev eth0
	if [[ -n $ip6 ]]; then
		ns_exec "$ns" ip -6 route add default via "$gw6" dev eth0
	fi
}

# ---- routed layouts (Calico, Cilium) ---------------------------------------

# MAC of the tunnel device of node IDX on the routed layouts (Felix and Cilium pick
# random ones; fixed here so that a lab is the same every time).
tunnel_mac() { echo "66:c1:a0:00:00:0$1"; }

# need_kernel_dev NS KIND: the kernel can make a device of KIND (ipip, geneve), else
# up stops with exit 3 (after removing what it made). ipip's fallback device tunl0
# appears in every namespace once the module is loaded; a probe device is made and
# deleted otherwise.
need_kernel_dev() {
	local ns=$1 kind=$2
	if [[ $kind == ipip ]] && ns_exec "$ns" ip link show tunl0 >/dev/null 2>&1; then
		return 0
	fi
	local probe=(type "$kind" remote 192.0.2.1) config=CONFIG_NET_IPIP
	if [[ $kind == geneve ]]; then probe+=(id 1) config=CONFIG_GENEVE; fi
	# 'ip link add' loads the module if there is one.
	if ns_exec "$ns" ip link add lab-probe0 "${probe[@]}" >/dev/null 2>&1; then
		ns_exec "$ns" ip link del lab-probe0
		return 0
	fi
	unsupported "--cni $CNI needs the kernel's $kind tunnel ($config), which kernel $(uname -r) lacks ('ip link add type $kind' fails; no module to load): use a kernel that has it, e.g. a VM of scripts/vm.sh"
}

# mk_calico_tunnel NS IDX PEER_IDX: what Felix programs for the peer's IPAM block:
# vxlan.calico (VNI 4096, udp/4789) with the node's VTEP address, a route to the
# peer's block via its VTEP onlink, a permanent neighbour and an FDB entry; or, with
# IP in IP, tunl0 with the node's tunnel address and a route via the peer node's
# own address. Felix also blackholes the node's own block (unassigned addresses).
mk_calico_tunnel() {
	local ns=$1 idx=$2 peer=$3
	local vtep peer_vtep block peer_block
	if ((idx == 1)); then
		vtep=$NODE_A_VTEP peer_vtep=$NODE_B_VTEP block=$NODE_A_POD_CIDR peer_block=$NODE_B_POD_CIDR
	else
		vtep=$NODE_B_VTEP peer_vtep=$NODE_A_VTEP block=$NODE_B_POD_CIDR peer_block=$NODE_A_POD_CIDR
	fi
	if [[ $ENCAP == vxlan ]]; then
		ns_exec "$ns" ip link add vxlan.calico type vxlan id 4096 dstport 4789 local "$(node_ip "$idx")" dev eth0 nolearning
		ns_exec "$ns" ip link set vxlan.calico mtu 1450 address "$(tunnel_mac "$idx")"
		ns_exec "$ns" ip addr add "$vtep/32" dev vxlan.calico
		ns_exec "$ns" ip link set vxlan.calico up
		ns_exec "$ns" ip route add "$peer_block" via "$peer_vtep" dev vxlan.calico onlink proto 80
		ns_exec "$ns" ip neigh replace "$peer_vtep" lladdr "$(tunnel_mac "$peer")" dev vxlan.calico nud permanent
		ns_exec "$ns" bridge fdb append "$(tunnel_mac "$peer")" dev vxlan.calico dst "$(node_ip "$peer")"
	else
		if ! ns_exec "$ns" ip link show tunl0 >/dev/null 2>&1; then
			ns_exec "$ns" ip link add tunl0 type ipip
		fi
		ns_exec "$ns" ip link set tunl0 mtu 1480
		ns_exec "$ns" ip addr add "$vtep/32" dev tunl0
		ns_exec "$ns" ip link set tunl0 up
		ns_exec "$ns" ip route add "$peer_block" via "$(node_ip "$peer")" dev tunl0 onlink proto 80
	fi
	ns_exec "$ns" ip route add blackhole "$block" proto 80
	# Nodes have a default route; proxy ARP on the cali veths answers only for
	# addresses the node can route (169.254.1.1 among them). ext stands in for the
	# gateway (it does not forward).
	ns_exec "$ns" ip route add default via "$EXT_IP" dev eth0
}

# mk_cilium_node NS IDX PEER_IDX: the devices and routes Cilium's agent sets up
# for the overlay when routing through the host (legacy host routing with
# per-endpoint routes): cilium_host/cilium_net holding the router IP (the pods'
# gateway), cilium_geneve in external (collect_md) mode on udp/6081, and a
# lightweight-tunnel route to the peer's pod CIDR (encap ip id VNI dst PEER),
# whose next hop is the peer's router IP at its cilium_geneve MAC.
mk_cilium_node() {
	local ns=$1 idx=$2 peer=$3
	local gw peer_gw peer_block
	if ((idx == 1)); then
		gw=$POD_A_GW peer_gw=$POD_B_GW peer_block=$NODE_B_POD_CIDR
	else
		gw=$POD_B_GW peer_gw=$POD_A_GW peer_block=$NODE_A_POD_CIDR
	fi
	ns_exec "$ns" ip link add cilium_host type veth peer name cilium_net
	ns_exec "$ns" ip link set cilium_host mtu 1450
	ns_exec "$ns" ip link set cilium_net mtu 1450
	ns_exec "$ns" ip addr add "$gw/32" dev cilium_host
	ns_exec "$ns" ip link set cilium_net up
	ns_exec "$ns" ip link set cilium_host up
	ns_exec "$ns" ip link add cilium_geneve type geneve external dstport 6081
	ns_exec "$ns" ip link set cilium_geneve mtu 1450 address "$(tunnel_mac "$idx")"
	ns_exec "$ns" ip link set cilium_geneve up
	ns_exec "$ns" ip route add "$peer_block" via "$peer_gw" dev cilium_geneve onlink src "$gw" \
		encap ip id 2 dst "$(node_ip "$peer")"
	ns_exec "$ns" ip neigh replace "$peer_gw" lladdr "$(tunnel_mac "$peer")" dev cilium_geneve nud permanent
}

# mk_routed_pod NODE_NS POD_NS HOST_VETH IP GW: a pod routed by the node (no
# bridge): its eth0 holds IP/32, the node routes IP/32 to HOST_VETH. Calico: the
# host veth answers ARP for the pod's gateway 169.254.1.1 (proxy_arp, MAC
# ee:ee:ee:ee:ee:ee); Cilium: the gateway is the node's router IP, a local address
# the node answers ARP for on any device.
mk_routed_pod() {
	local node=$1 ns=$2 veth=$3 ip=$4 gw=$5
	mk_ns "$ns"
	ip link add "$veth" netns "$node" type veth peer name eth0 netns "$ns"
	ns_exec "$node" ip link set "$veth" mtu 1450
	if [[ $CNI == calico-* ]]; then
		ns_exec "$node" ip link set "$veth" address ee:ee:ee:ee:ee:ee
		ns_sysctl "$node" "net/ipv4/conf/$veth/proxy_arp" 1
		ns_sysctl "$node" "net/ipv4/neigh/$veth/proxy_delay" 0
	fi
	ns_exec "$node" ip link set "$veth" up
	ns_exec "$node" ip route add "$ip/32" dev "$veth" scope link
	ns_exec "$ns" ip link set eth0 mtu 1450
	ns_exec "$ns" ip addr add "$ip/32" dev eth0
	ns_exec "$ns" ip link set eth0 up
	ns_exec "$ns" ip route add "$gw" dev eth0 scope link
	if [[ $CNI == calico-* ]]; then
		ns_exec "$ns" ip route add default via "$gw" dev eth0 onlink
	else
		ns_exec "$ns" ip route add default via "$gw" dev eth0 mtu 1450
	fi
}

# mk_layout: the nodes, tunnels and pods of layout $CNI.
mk_layout() {
	mk_node "$NS_NODE_A" node-a 1
	mk_node "$NS_NODE_B" node-b 2
	case $CNI in
	flannel)
		mk_flannel "$NS_NODE_A" 1 2
		mk_flannel "$NS_NODE_B" 2 1
		mk_pod "$NS_NODE_A" "$NS_A_API" veth1a23 10.244.1.23 10.244.1.1 "$POD_A_API_IP6" "$POD_A_GW6"
		mk_pod "$NS_NODE_A" "$NS_A_REDIS" veth1a42 10.244.1.42 10.244.1.1 "$POD_A_REDIS_IP6" "$POD_A_GW6"
		mk_pod "$NS_NODE_B" "$NS_B_API" veth2b57 10.244.2.57 10.244.2.1 "$POD_B_API_IP6" "$POD_B_GW6"
		;;
	calico-*)
		if [[ $ENCAP == ipip ]]; then need_kernel_dev "$NS_NODE_A" ipip; fi
		mk_calico_tunnel "$NS_NODE_A" 1 2
		mk_calico_tunnel "$NS_NODE_B" 2 1
		;;
	geneve)
		need_kernel_dev "$NS_NODE_A" geneve
		mk_cilium_node "$NS_NODE_A" 1 2
		mk_cilium_node "$NS_NODE_B" 2 1
		;;
	esac
	if [[ $CNI != flannel ]]; then
		mk_routed_pod "$NS_NODE_A" "$NS_A_API" "$POD_A_API_VETH" "$POD_A_API_IP" "$POD_A_GW"
		mk_routed_pod "$NS_NODE_A" "$NS_A_REDIS" "$POD_A_REDIS_VETH" "$POD_A_REDIS_IP" "$POD_A_GW"
		mk_routed_pod "$NS_NODE_B" "$NS_B_API" "$POD_B_API_VETH" "$POD_B_API_IP" "$POD_B_GW"
	fi
}

# mk_kube_proxy NS: the nat rules kube-proxy (iptables mode) and the CNI
# install on every node for service api (VIP:80 -> both api pods), with
# ip6tables for VIP6 in a --dual-stack lab.
mk_kube_proxy() {
	local ns=$1
	kube_proxy_rules "$ns" iptables "$VIP/32" "$POD_A_API_IP" "$POD_B_API_IP" 32
	if ((DUAL)); then
		kube_proxy_rules "$ns" ip6tables "$VIP6/128" "$POD_A_API_IP6" "$POD_B_API_IP6" 128
	fi
	case $MASQ_CHAIN in
	cali-nat-outgoing)
		ns_ipt "$ns" -t nat -N cali-POSTROUTING
		ns_ipt "$ns" -t nat -N cali-nat-outgoing
		ns_ipt "$ns" -t nat -A POSTROUTING -m comment --comment "cali:O3lYWMrLQYEMJtB5" -j cali-POSTROUTING
		ns_ipt "$ns" -t nat -A cali-POSTROUTING -m comment --comment "cali:Z-c7XtVd2Bq7s_hA" -j cali-nat-outgoing
		;;
	CILIUM_POST_nat)
		ns_ipt "$ns" -t nat -N CILIUM_POST_nat
		ns_ipt "$ns" -t nat -A POSTROUTING -m comment --comment "cilium-feeder: CILIUM_POST_nat" -j CILIUM_POST_nat
		;;
	esac
	# The CNI: pods talking to anything outside the pod network get the
	# node's address.
	masq_rule add "$ns"
	if ((DUAL)); then
		masq_rule6 add "$ns"
	fi
}

# kube_proxy_rules NS IPTABLES VIP/LEN POD_A POD_B LEN: kube-proxy's chains for
# service api in one family.
kube_proxy_rules() {
	local ns=$1 ipt=$2 vip=$3 a=$4 b=$5 len=$6 chain da db
	da=$a db=$b
	if [[ $ipt == ip6tables ]]; then da="[$a]" db="[$b]"; fi
	for chain in KUBE-SERVICES KUBE-SVC-API KUBE-SEP-API-A KUBE-SEP-API-B KUBE-MARK-MASQ KUBE-POSTROUTING; do
		ns_exec "$ns" "$ipt" -w -t nat -N "$chain"
	done
	ns_exec "$ns" "$ipt" -w -t nat -A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
	ns_exec "$ns" "$ipt" -w -t nat -A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
	ns_exec "$ns" "$ipt" -w -t nat -A KUBE-SERVICES -d "$vip" -p tcp --dport "$VIP_PORT" \
		-m comment --comment "default/api cluster IP" -j KUBE-SVC-API
	# Two endpoints: the first is picked half of the time, else the second.
	ns_exec "$ns" "$ipt" -w -t nat -A KUBE-SVC-API -m statistic --mode random --probability 0.5 -j KUBE-SEP-API-A
	ns_exec "$ns" "$ipt" -w -t nat -A KUBE-SVC-API -j KUBE-SEP-API-B
	# A pod reaching itself through the VIP is masqueraded (hairpin), as
	# kube-proxy does; otherwise its reply would bypass the node's conntrack.
	ns_exec "$ns" "$ipt" -w -t nat -A KUBE-SEP-API-A -s "$a/$len" -j KUBE-MARK-MASQ
	ns_exec "$ns" "$ipt" -w -t nat -A KUBE-SEP-API-A -p tcp -j DNAT --to-destination "$da:$BACKEND_PORT"
	ns_exec "$ns" "$ipt" -w -t nat -A KUBE-SEP-API-B -s "$b/$len" -j KUBE-MARK-MASQ
	ns_exec "$ns" "$ipt" -w -t nat -A KUBE-SEP-API-B -p tcp -j DNAT --to-destination "$db:$BACKEND_PORT"
	ns_exec "$ns" "$ipt" -w -t nat -A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
	ns_exec "$ns" "$ipt" -w -t nat -A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
	ns_exec "$ns" "$ipt" -w -t nat -A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
	ns_exec "$ns" "$ipt" -w -t nat -A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
	ns_exec "$ns" "$ipt" -w -t nat -A KUBE-POSTROUTING -j MASQUERADE
}

# masq_rule add|del|check NS: the CNI's MASQUERADE rule (flannel's in POSTROUTING,
# Calico's in cali-nat-outgoing, Cilium's in CILIUM_POST_nat).
masq_rule() {
	local op=$1 ns=$2
	local rule=("$MASQ_CHAIN" -s "$POD_CIDR" ! -d "$POD_CIDR" -j MASQUERADE)
	case $op in
	add) ns_ipt_ensure "$ns" nat "${rule[@]}" ;;
	del) ns_ipt "$ns" -t nat -D "${rule[@]}" ;;
	check) ns_ipt "$ns" -t nat -C "${rule[@]}" 2>/dev/null ;;
	esac
}

# masq_rule6 add NS: flannel's IPv6 MASQUERADE rule (ip6tables).
masq_rule6() {
	local ns=$2
	ns_exec "$ns" ip6tables -w -t nat -A POSTROUTING -s "$POD_CIDR6" ! -d "$POD_CIDR6" -j MASQUERADE
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
	if [[ $CNI == flannel ]] && ((!DUAL)); then
		log "creating lab '$P'"
	else
		log "creating lab '$P' (layout $CNI$(if ((DUAL)); then echo ', dual-stack'; fi))"
	fi
	printf 'CNI=%s\nDUAL=%s\n' "$CNI" "$DUAL" >"$layout_file"
	mk_underlay
	mk_layout
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
	# labredirect's tcx links went with their devices; their pins stay until unlinked.
	for ns in "$NS_NODE_A" "$NS_NODE_B"; do
		if [[ -e $BPFFS_DIR/$ns ]]; then
			rm -rf "${BPFFS_DIR:?}/$ns"
			log "removed labredirect's pins $BPFFS_DIR/$ns"
		fi
	done
	rmdir "$BPFFS_DIR" 2>/dev/null || true
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
	echo "lab '$P' layout: $CNI$(if ((DUAL)); then echo ', dual-stack'; fi) (tunnel $TUNNEL${TUNNEL6:+ and $TUNNEL6}, $ENCAP_DESC)"
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
		fault_exists "$fault" || continue
		if ns_exists "$NS_NODE_A" && ns_exists "$NS_NODE_B" && "fault_${fault}_active"; then
			echo "  $fault: active"
			any=1
		fi
	done
	((any)) || echo "  none"
	echo "redirect: $(redirect_state)"
}

# ---- env and redirect -----------------------------------------------------

# cmd_env: the lab as KEY=VALUE lines (the keys are documented in usage).
cmd_env() {
	local pod node
	printf '%s=%s\n' CNI "$CNI" DUAL_STACK "$DUAL" PREFIX "$P" \
		ENCAP "$ENCAP" ENCAP_PORT "$ENCAP_PORT" ENCAP_IPPROTO "$ENCAP_IPPROTO" \
		TUNNEL "$TUNNEL" TUNNEL6 "$TUNNEL6" UPLINK "$UPLINK" BRIDGE "$BRIDGE" \
		UNDERLAY_NS "$NS_UNDERLAY" EXT_NS "$NS_EXT" NODE_A_NS "$NS_NODE_A" NODE_B_NS "$NS_NODE_B" \
		NODE_A_IP "$NODE_A_IP" NODE_B_IP "$NODE_B_IP" NODE_A_IP6 "$NODE_A_IP6" NODE_B_IP6 "$NODE_B_IP6" \
		NODE_A_POD_CIDR "$NODE_A_POD_CIDR" NODE_B_POD_CIDR "$NODE_B_POD_CIDR" \
		NODE_A_POD_CIDR6 "$NODE_A_POD_CIDR6" NODE_B_POD_CIDR6 "$NODE_B_POD_CIDR6" \
		POD_CIDR "$POD_CIDR" POD_CIDR6 "$POD_CIDR6"
	for pod in A_API A_REDIS B_API; do
		node=a
		if [[ $pod == B_* ]]; then node=b; fi
		local ns_var=NS_$pod ip_var=POD_${pod}_IP ip6_var=POD_${pod}_IP6 veth_var=POD_${pod}_VETH
		local gw_var=POD_${node^^}_GW node_ns_var=NS_NODE_${node^^}
		printf 'POD_%s_%s=%s\n' "$pod" NS "${!ns_var}" "$pod" IP "${!ip_var}" "$pod" IP6 "${!ip6_var}" \
			"$pod" VETH "${!veth_var}" "$pod" NODE "node-$node" "$pod" NODE_NS "${!node_ns_var}" \
			"$pod" GW "${!gw_var}"
	done
	printf '%s=%s\n' EXT_IP "$EXT_IP" EXT_IP6 "$EXT_IP6" EXT_PORT "$EXT_PORT" \
		VIP "$VIP" VIP6 "$VIP6" VIP_PORT "$VIP_PORT" BACKEND_PORT "$BACKEND_PORT" API_PORT "$BACKEND_PORT" \
		REDIS_PORT "$REDIS_PORT" POLICY_PORT "$REDIS_PORT"
}

labredirect_bin() {
	if [[ -n ${LABREDIRECT:-} ]]; then
		[[ -x $LABREDIRECT ]] || die "LABREDIRECT=$LABREDIRECT is not an executable file"
	else
		command -v go >/dev/null || die "go not found; build labredirect yourself and set LABREDIRECT=/path/to/labredirect"
		log "building $repo/bin/labredirect"
		(cd "$repo" && CGO_ENABLED=0 go build -o "$repo/bin/labredirect" ./cmd/labredirect)
		LABREDIRECT=$repo/bin/labredirect
	fi
}

# redirect_devs NS: the devices of node NS labredirect attaches to (its tunnels).
redirect_devs() { echo "$TUNNEL" ${TUNNEL6:+"$TUNNEL6"}; }

# redirect_pods NODE_NS: --pod IP=VETH for each pod address on that node.
redirect_pods() {
	if [[ $1 == "$NS_NODE_A" ]]; then
		echo --pod "$POD_A_API_IP=$POD_A_API_VETH" --pod "$POD_A_REDIS_IP=$POD_A_REDIS_VETH"
		if ((DUAL)); then
			echo --pod "$POD_A_API_IP6=$POD_A_API_VETH" --pod "$POD_A_REDIS_IP6=$POD_A_REDIS_VETH"
		fi
	else
		echo --pod "$POD_B_API_IP=$POD_B_API_VETH"
		if ((DUAL)); then echo --pod "$POD_B_API_IP6=$POD_B_API_VETH"; fi
	fi
}

# redirect_state: on (with the attach mode) when labredirect is attached to every
# tunnel device of both nodes, off when to none, else partial. Read from the kernel:
# the tcx pins and the tc filters named labredirect.
redirect_state() {
	local ns dev on=0 off=0 modes=""
	for ns in "$NS_NODE_A" "$NS_NODE_B"; do
		ns_exists "$ns" || continue
		for dev in $(redirect_devs); do
			if [[ -e $BPFFS_DIR/$ns/${dev//./_} ]]; then
				on=$((on + 1)) modes+=" tcx"
			elif ns_exec "$ns" tc filter show dev "$dev" ingress 2>/dev/null | grep -q 'labredirect'; then
				on=$((on + 1)) modes+=" clsact"
			else
				off=$((off + 1))
			fi
		done
	done
	if ((on == 0)); then
		echo off
	elif ((off == 0)); then
		echo "on ($(tr ' ' '\n' <<<"$modes" | sort -u | xargs))"
	else
		echo "partial ($on attached, $off not)"
	fi
}

cmd_redirect() {
	local mode=$1 ns dev
	require_lab
	case $mode in
	on)
		labredirect_bin
		for ns in "$NS_NODE_A" "$NS_NODE_B"; do
			for dev in $(redirect_devs); do
				# shellcheck disable=SC2046 # redirect_pods prints words
				"$LABREDIRECT" attach --netns "$ns" --dev "$dev" $(redirect_pods "$ns") ${LABREDIRECT_MODE:+--mode "$LABREDIRECT_MODE"}
			done
		done
		;;
	off)
		if [[ $(redirect_state) == off ]]; then
			log "redirect: not attached"
			return 0
		fi
		labredirect_bin
		for ns in "$NS_NODE_A" "$NS_NODE_B"; do
			for dev in $(redirect_devs); do
				"$LABREDIRECT" detach --netns "$ns" --dev "$dev"
			done
		done
		;;
	esac
	log "redirect: $(redirect_state)"
}

# ---- faults -------------------------------------------------------------
# Each fault has fault_X_active (state read back from the kernel, so the
# status is right whoever changed it), fault_X_on and fault_X_off.

# (POLICY_RULE and POLICY_RULE6, the IPv6 one of a --dual-stack lab: set_layout.)
fault_policy_active() { ns_ipt "$NS_NODE_A" -C "${POLICY_RULE[@]}" 2>/dev/null; }
fault_policy_on() {
	local ns
	for ns in "$NS_NODE_A" "$NS_NODE_B"; do
		if ns_ipt "$ns" -C "${POLICY_RULE[@]}" 2>/dev/null; then
			log "policy: $ns already drops tcp/$REDIS_PORT to $POD_A_REDIS_IP"
		else
			ns_ipt "$ns" -I "${POLICY_RULE[0]}" 1 "${POLICY_RULE[@]:1}"
			log "policy: $ns: inserted 'iptables -I ${POLICY_RULE[*]}' at position 1"
		fi
		((DUAL)) || continue
		if ns_exec "$ns" ip6tables -w -C "${POLICY_RULE6[@]}" 2>/dev/null; then
			log "policy: $ns already drops tcp/$REDIS_PORT to $POD_A_REDIS_IP6"
		else
			ns_exec "$ns" ip6tables -w -I "${POLICY_RULE6[0]}" 1 "${POLICY_RULE6[@]:1}"
			log "policy: $ns: inserted 'ip6tables -I ${POLICY_RULE6[*]}' at position 1"
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
		((DUAL)) || continue
		if ns_exec "$ns" ip6tables -w -C "${POLICY_RULE6[@]}" 2>/dev/null; then
			while ns_exec "$ns" ip6tables -w -D "${POLICY_RULE6[@]}" 2>/dev/null; do :; done
			log "policy: $ns: deleted ip6tables '${POLICY_RULE6[*]}'"
		else
			log "policy: $ns: ip6tables rule not present"
		fi
	done
}

fault_rpfilter_active() { [[ -n $(ns_exec "$NS_NODE_B" ip route show "$POD_A_API_IP/32") ]]; }
fault_rpfilter_on() {
	ns_sysctl "$NS_NODE_B" net/ipv4/conf/all/rp_filter 1
	ns_sysctl "$NS_NODE_B" "net/ipv4/conf/$TUNNEL/rp_filter" 1
	log "rpfilter: $NS_NODE_B: rp_filter=1 on all and $TUNNEL"
	if fault_rpfilter_active; then
		log "rpfilter: $NS_NODE_B: route $POD_A_API_IP/32 via $NODE_A_IP dev eth0 already present"
	else
		ns_exec "$NS_NODE_B" ip route add "$POD_A_API_IP/32" via "$NODE_A_IP" dev eth0
		log "rpfilter: $NS_NODE_B: added route $POD_A_API_IP/32 via $NODE_A_IP dev eth0 (reverse path no longer $TUNNEL)"
	fi
}
fault_rpfilter_off() {
	ns_sysctl "$NS_NODE_B" net/ipv4/conf/all/rp_filter 0
	ns_sysctl "$NS_NODE_B" "net/ipv4/conf/$TUNNEL/rp_filter" 0
	log "rpfilter: $NS_NODE_B: rp_filter=0 on all and $TUNNEL"
	if fault_rpfilter_active; then
		ns_exec "$NS_NODE_B" ip route del "$POD_A_API_IP/32"
		log "rpfilter: $NS_NODE_B: deleted route $POD_A_API_IP/32"
	else
		log "rpfilter: $NS_NODE_B: route $POD_A_API_IP/32 not present"
	fi
}

fault_blackhole_active() { [[ -n $(ns_exec "$NS_NODE_A" ip route show type blackhole "$POD_B_API_IP/32") ]]; }
fault_blackhole_on() {
	if fault_blackhole_active; then
		log "blackhole: $NS_NODE_A: blackhole route to $POD_B_API_IP already present"
	else
		ns_exec "$NS_NODE_A" ip route add blackhole "$POD_B_API_IP/32"
		log "blackhole: $NS_NODE_A: added 'blackhole $POD_B_API_IP/32'"
	fi
}
fault_blackhole_off() {
	if fault_blackhole_active; then
		ns_exec "$NS_NODE_A" ip route del blackhole "$POD_B_API_IP/32"
		log "blackhole: $NS_NODE_A: deleted 'blackhole $POD_B_API_IP/32'"
	else
		log "blackhole: $NS_NODE_A: no blackhole route to $POD_B_API_IP"
	fi
}

fault_slow_active() { ns_exec "$NS_NODE_A" tc qdisc show dev "$TUNNEL" root | grep -q '^qdisc tbf '; }
fault_slow_on() {
	if fault_slow_active; then
		log "slow: $NS_NODE_A: tbf already on $TUNNEL"
	else
		ns_exec "$NS_NODE_A" tc qdisc add dev "$TUNNEL" root tbf rate 1mbit burst 1600 limit 30000
		log "slow: $NS_NODE_A: added 'tbf rate 1mbit burst 1600 limit 30000' on $TUNNEL"
	fi
}
fault_slow_off() {
	if fault_slow_active; then
		ns_exec "$NS_NODE_A" tc qdisc del dev "$TUNNEL" root
		log "slow: $NS_NODE_A: deleted tbf on $TUNNEL"
	else
		log "slow: $NS_NODE_A: no tbf on $TUNNEL"
	fi
}

# The underlay fault: an nftables bridge rule on the switch drops the layout's tunnel
# packets (VXLAN, Geneve or IP in IP; over IPv4 and IPv6) on their way out of the port
# toward node-b (a lossy underlay; neither node sees it die).
fault_underlay_active() { ns_exec "$NS_UNDERLAY" nft list table bridge lab_underlay >/dev/null 2>&1; }
fault_underlay_on() {
	if fault_underlay_active; then
		log "underlay: $NS_UNDERLAY: $ENCAP_NAME to node-b already dropped"
		return
	fi
	local match="udp dport $ENCAP_PORT"
	if [[ $ENCAP == ipip ]]; then match="ip protocol 4"; fi
	ns_exec "$NS_UNDERLAY" nft -f - <<NFT
table bridge lab_underlay {
	chain forward {
		type filter hook forward priority 0; policy accept;
		oifname "node-b" $match counter drop
	}
}
NFT
	log "underlay: $NS_UNDERLAY: dropping $ENCAP_DESC on the switch port to node-b"
}
fault_underlay_off() {
	if fault_underlay_active; then
		ns_exec "$NS_UNDERLAY" nft delete table bridge lab_underlay
		log "underlay: $NS_UNDERLAY: $ENCAP_NAME to node-b passes again"
	else
		log "underlay: $NS_UNDERLAY: $ENCAP_NAME to node-b was not dropped"
	fi
}

fault_nomasq_active() { ! masq_rule check "$NS_NODE_A"; }
fault_nomasq_on() {
	if masq_rule check "$NS_NODE_A"; then
		while masq_rule check "$NS_NODE_A"; do masq_rule del "$NS_NODE_A"; done
		log "nomasq: $NS_NODE_A: deleted '$MASQ_CHAIN -s $POD_CIDR ! -d $POD_CIDR -j MASQUERADE'"
	else
		log "nomasq: $NS_NODE_A: MASQUERADE rule already absent"
	fi
}
fault_nomasq_off() {
	if masq_rule check "$NS_NODE_A"; then
		log "nomasq: $NS_NODE_A: MASQUERADE rule already present"
	else
		masq_rule add "$NS_NODE_A"
		log "nomasq: $NS_NODE_A: restored '$MASQ_CHAIN -s $POD_CIDR ! -d $POD_CIDR -j MASQUERADE'"
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
# (HAIRPIN_MASQ and POD_PORTS: set_layout.)
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
		ns_exec "$NS_NODE_A" "$lp" tcp "$POD_A_API_IP:$BACKEND_PORT" --timeout 2s >/dev/null || die "conntrack: node-a cannot reach api-a"
		ns_exec "$NS_NODE_B" "$lp" tcp "$POD_B_API_IP:$BACKEND_PORT" --timeout 2s >/dev/null || die "conntrack: node-b cannot reach api-b"
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
	fault_exists "$name" || unsupported "fault $name exists only on the flannel layout (this lab: $CNI)"
	"fault_${name}_${mode}"
}

# fault_exists NAME: the fault has a meaning on this layout.
fault_exists() {
	[[ $CNI == flannel || " ${FLANNEL_ONLY_FAULTS[*]} " != *" $1 "* ]]
}

cmd_clear() {
	local fault
	require_lab
	for fault in "${FAULTS[@]}"; do
		fault_exists "$fault" || continue
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
	down | status | clear)
		(($# == 1)) || usage_error "$cmd takes no arguments"
		;;
	up | env) ;;
	fault)
		(($# == 2 || $# == 3)) || usage_error "fault needs NAME and optionally 'off'"
		;;
	redirect)
		if (($# != 2)) || [[ $2 != on && $2 != off ]]; then usage_error "redirect needs 'on' or 'off'"; fi
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
	case $cmd in
	up) parse_layout_opts "${@:2}" ;;
	env)
		# The lab that is up, else the layout the options name.
		if [[ -r $layout_file ]] && (($# == 1)); then load_layout; else parse_layout_opts "${@:2}"; fi
		cmd_env
		return 0
		;;
	*) load_layout ;;
	esac
	require_root "$@"
	case $cmd in
	up) cmd_up ;;
	down) cmd_down ;;
	status) cmd_status ;;
	fault) cmd_fault "$2" "${3:-on}" ;;
	clear) cmd_clear ;;
	redirect) cmd_redirect "$2" ;;
	esac
}

main "$@"
