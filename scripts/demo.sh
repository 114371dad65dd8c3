#!/usr/bin/env bash
# demo.sh shows pathtrace on the lab: a TCP connection followed across two nodes
# through the VXLAN tunnel, then a connection dropped by a firewall rule, named with the
# kernel's reason. It builds the lab if it is not up, and then tears it down again.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=$repo/bin
export LAB_PREFIX=${LAB_PREFIX:-pt}
export LABPOD=$bin/labpod
P=$LAB_PREFIX
[[ $(id -u) == 0 ]] || { echo "demo.sh: run as root (it builds network namespaces and loads BPF programs)" >&2; exit 1; }
[[ -x $bin/pathtrace && -x $bin/labpod ]] || { echo "demo.sh: run 'make build' first (or 'make demo')" >&2; exit 1; }

work=$(mktemp -d)
pids=()
own_lab=0
calico_lab=0
PC=${P}c # section 5's lab, laid out as Calico does
export LABREDIRECT=$bin/labredirect
cleanup() {
	for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	"$repo/scripts/lab.sh" fault policy off >/dev/null 2>&1 || true
	"$repo/scripts/lab.sh" fault underlay off >/dev/null 2>&1 || true
	"$repo/scripts/lab.sh" fault rpfilter off >/dev/null 2>&1 || true
	"$repo/scripts/lab.sh" fault mtu off >/dev/null 2>&1 || true
	if ((own_lab)); then "$repo/scripts/lab.sh" down >/dev/null || true; fi
	if ((calico_lab)); then LAB_PREFIX=$PC "$repo/scripts/lab.sh" down >/dev/null || true; fi
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ -e /run/netns/$P-node-a ]]; then
	echo "== using the lab that is already up ($P-*)"
else
	echo "== building the lab: two nodes, flannel VXLAN, three pods, a Service VIP"
	own_lab=1
	"$repo/scripts/lab.sh" up | sed 's/^/   /'
fi

# start_follow NAME ARGS...: start `pathtrace follow ARGS`, wait until it follows.
start_follow() {
	local name=$1
	shift
	rm -f "$work/$name.ready"
	"$bin/pathtrace" follow --ready-file "$work/$name.ready" "$@" >"$work/$name.out" 2>"$work/$name.err" &
	pids+=($!)
	for _ in $(seq 100); do
		[[ -e $work/$name.ready ]] && return 0
		kill -0 "${pids[-1]}" 2>/dev/null || break
		sleep 0.1
	done
	cat "$work/$name.err" >&2
	echo "demo.sh: pathtrace follow $* did not get ready" >&2
	exit 1
}
# follow NODE NAME ARGS...: follow in a node's namespace.
follow() { start_follow "$2" --netns "$P-$1" --node "$1" "${@:3}"; }
# follow_agents NAME ARGS...: follow through both nodes' agents.
follow_agents() { start_follow "$1" --agents "unix:$work/node-a.sock,unix:$work/node-b.sock" "${@:2}"; }
# finish NAME: let pathtrace judge what is in flight, stop it, show its output.
finish() {
	local pid=${pids[-1]}
	sleep 1
	kill -INT "$pid" 2>/dev/null || true
	wait "$pid" || true
	unset 'pids[-1]'
}
pod() { ip netns exec "$P-$1" "$LABPOD" "${@:2}"; }

echo
echo "== 1. api pod on node-a (10.244.1.23) connects to the api pod on node-b (10.244.2.57:8080)"
echo "   \$ pathtrace follow --proto tcp --count 3 10.244.2.57:8080   (on each node)"
follow node-b b --proto tcp --count 3 10.244.2.57:8080
follow node-a a --proto tcp --count 3 10.244.2.57:8080
echo "   client says: $(pod a-api tcp 10.244.2.57:8080)"
finish a
finish b
echo
echo "-- node-a: the packets leave through cni0, flannel.1 and eth0 (VXLAN)"
sed 's/^/   /' "$work/a.out"
echo "-- node-b: they arrive on eth0, are decapsulated on flannel.1 and delivered to the pod"
sed 's/^/   /' "$work/b.out"
grep -h "^pathtrace: node" "$work/a.err" | sed 's/^/   /'

echo
echo "== 2. a firewall rule drops redis traffic (lab.sh fault policy); api on node-b calls redis"
"$repo/scripts/lab.sh" fault policy | sed 's/^/   /'
echo "   \$ pathtrace follow --count 1 --pcap drop.pcapng 10.244.1.42:6379   (on node-b)"
follow node-b drop --count 1 --pcap "$work/drop.pcapng" 10.244.1.42:6379
echo "   client says: $(pod b-api tcp 10.244.1.42:6379 --timeout 1s 2>&1 || true)"
finish drop
sed 's/^/   /' "$work/drop.out"
if command -v tshark >/dev/null && [[ -s $work/drop.pcapng ]]; then
	echo "   \$ tshark -r drop.pcapng -T fields -e frame.interface_name -e tcp.flags.str -e frame.comment"
	tshark -r "$work/drop.pcapng" -T fields -e frame.interface_name -e tcp.flags.str -e frame.comment 2>/dev/null |
		sed 's/^/   /'
fi
"$repo/scripts/lab.sh" fault policy off >/dev/null

echo
echo "== 3. one agent per node; one follower joins both nodes' journeys into one path per packet"
for n in a b; do
	"$bin/pathtrace" agent --netns "$P-node-$n" --node "node-$n" --metrics-addr 127.0.0.1:0 \
		--api "unix:$work/node-$n.sock" --ready-file "$work/agent-$n.ready" >"$work/agent-$n.err" 2>&1 &
	pids+=($!)
done
for n in a b; do
	for _ in $(seq 100); do [[ -e $work/agent-$n.ready ]] && break; sleep 0.1; done
	[[ -e $work/agent-$n.ready ]] || { cat "$work/agent-$n.err" >&2; echo "demo.sh: agent on node-$n not ready" >&2; exit 1; }
done
echo "   \$ pathtrace follow --agents unix:node-a.sock,unix:node-b.sock --proto tcp --count 1 10.244.2.57:8080"
follow_agents join --proto tcp --count 1 10.244.2.57:8080
echo "   client says: $(pod a-api tcp 10.244.2.57:8080)"
finish join
sed 's/^/   /' "$work/join.out"
echo
echo "-- the lab's switch (outside both nodes) drops VXLAN to node-b: lab.sh fault underlay"
"$repo/scripts/lab.sh" fault underlay | sed 's/^/   /'
follow_agents lost --proto tcp --count 1 10.244.2.57:8080
echo "   client says: $(pod a-api tcp 10.244.2.57:8080 --timeout 300ms 2>&1 || true)"
sleep 1
finish lost
grep -v '^  +' "$work/lost.out" | sed 's/^/   /'
"$repo/scripts/lab.sh" fault underlay off >/dev/null

# diagnose NODE NAME TRAFFIC... -- SELECTOR...: pathtrace diagnose on a node for 3 s
# while TRAFFIC (a pod and labpod's arguments) runs, then its report.
diagnose() {
	local node=$1 name=$2
	shift 2
	local traffic=()
	while [[ $1 != -- ]]; do traffic+=("$1"); shift; done
	shift
	rm -f "$work/$name.ready"
	"$bin/pathtrace" diagnose --duration 3s --ready-file "$work/$name.ready" --netns "$P-$node" --node "$node" "$@" \
		>"$work/$name.out" 2>"$work/$name.err" &
	pids+=($!)
	for _ in $(seq 100); do [[ -e $work/$name.ready ]] && break; sleep 0.1; done
	[[ -e $work/$name.ready ]] || { cat "$work/$name.err" >&2; echo "demo.sh: pathtrace diagnose did not get ready" >&2; exit 1; }
	echo "   client says: $(pod "${traffic[@]}" 2>&1 | head -c 200 || true)"
	wait "${pids[-1]}" || { cat "$work/$name.err" >&2; exit 1; }
	unset 'pids[-1]'
	sed 's/^/   /' "$work/$name.out"
}

echo
echo "== 4. pathtrace diagnose: the cause, the evidence read from the node, and the fix"
echo "-- strict rp_filter with an asymmetric route on node-b (lab.sh fault rpfilter)"
"$repo/scripts/lab.sh" fault rpfilter | sed 's/^/   /'
echo "   \$ pathtrace diagnose --duration 3s 10.244.1.23   (on node-b)"
diagnose node-b rpf a-api tcp 10.244.2.57:8080 --timeout 1s -- 10.244.1.23
"$repo/scripts/lab.sh" fault rpfilter off >/dev/null
echo
echo "-- the underlay's MTU lowered to 1400 under flannel.1's 1450 (lab.sh fault mtu); a 3000-byte request"
"$repo/scripts/lab.sh" fault mtu | sed 's/^/   /'
echo "   \$ pathtrace diagnose --duration 3s 10.244.2.57:8080   (on node-a)"
diagnose node-a mtu a-api tcp 10.244.2.57:8080 --timeout 2s --msg "$(printf 'x%.0s' $(seq 3000))" -- 10.244.2.57:8080
"$repo/scripts/lab.sh" fault mtu off >/dev/null

echo
echo "== 5. another CNI: two nodes laid out as Calico does (lab.sh up --cni calico-vxlan):"
echo "   pods routed behind cali* veths, no bridge, vxlan.calico on udp/4789, other addresses"
if [[ -e /run/netns/$PC-node-a ]]; then
	echo "   demo.sh: a lab $PC-* is up already; skipping this part" >&2
else
	calico_lab=1
	LAB_PREFIX=$PC "$repo/scripts/lab.sh" up --cni calico-vxlan | sed 's/^/   /' | tail -1
	eval "$(LAB_PREFIX=$PC "$repo/scripts/lab.sh" env | grep -E '^(POD_B_API_IP|POD_A_API_NS|BACKEND_PORT)=')"
	dst=$POD_B_API_IP:$BACKEND_PORT
	echo "   \$ pathtrace follow --proto tcp --count 1 $dst   (on each node, no --ifaces: found)"
	start_follow ca --netns "$PC-node-a" --node node-a --proto tcp --count 1 "$dst"
	start_follow cb --netns "$PC-node-b" --node node-b --proto tcp --count 1 "$dst"
	echo "   client says: $(ip netns exec "$POD_A_API_NS" "$LABPOD" tcp "$dst")"
	finish cb
	finish ca
	grep -h "layout:" "$work/ca.err" | sed 's/^/   /'
	grep -v '^  +.*\(PREROUTING\|FORWARD\|POSTROUTING\|OUTPUT\|INPUT\)' "$work/ca.out" | sed 's/^/   /'
	grep -v '^  +.*\(PREROUTING\|FORWARD\|POSTROUTING\|OUTPUT\|INPUT\)' "$work/cb.out" | sed 's/^/   /'
	echo
	echo "-- a Cilium-like program on vxlan.calico's ingress sends packets for local pods straight"
	echo "   into their namespace (bpf_redirect_peer): lab.sh redirect on"
	LAB_PREFIX=$PC "$repo/scripts/lab.sh" redirect on | sed 's/^/   /' | tail -1
	start_follow cr --netns "$PC-node-b" --node node-b --proto tcp --count 1 "$dst"
	echo "   client says: $(ip netns exec "$POD_A_API_NS" "$LABPOD" tcp "$dst")"
	finish cr
	grep -v '^  +.*\(PREROUTING\|FORWARD\|POSTROUTING\|OUTPUT\|INPUT\)' "$work/cr.out" | sed 's/^/   /'
fi
echo "== done: 'make lab-up' keeps a lab to explore; see README.md for more"
