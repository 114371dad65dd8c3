#!/usr/bin/env bash
# record-faults.sh OUT [CASE...]: records what pathtrace sees for each of lab.sh's faults
# (and a healthy flow), as the evidence issue 14's diagnosis is written and tested against.
# It brings a lab up (LAB_PREFIX, default ptf; a lab of that prefix already up is taken
# down first), and for each case injects the fault, starts `pathtrace follow --json` in
# the node namespaces where the fault shows, makes the traffic that hits it, waits for
# the verdicts (and one-way reports), stops the followers and takes the fault off. Then
# the lab goes down again.
#
# The same script runs on the host and in a VM of scripts/vm.sh (which mounts the host's
# / read-only: OUT must then be VM_SHARE or under it):
#
#   CGO_ENABLED=0 go build -o bin/vm/pathtrace ./cmd/pathtrace
#   CGO_ENABLED=0 go build -o bin/vm/labpod ./cmd/labpod
#   mkdir -p /tmp/rec-6.1 && VM_SHARE=/tmp/rec-6.1 scripts/vm.sh run bookworm -- \
#       env PATHTRACE_VM=1 scripts/record-faults.sh /tmp/rec-6.1
#
# OUT/FAULT-NODE.jsonl   the journey/oneway lines of the flows concerned (at most
#                        RECORD_LINES, 10: the abnormal ones first, then the other lines
#                        of their flows, in the order they came)
# OUT/raw/               every follower's whole output and stderr, not for committing
# OUT/notes.txt          per case: the kernel, the follow and traffic commands, their output
#                        and, with RECORD_TEXT=1, the text output of a second run
#
# Cases (default: all): healthy policy rpfilter blackhole slow nomasq underlay mtu hairpin
# hairpin_masq neighbour neighbour_arp conntrack. hairpin_masq and neighbour_arp are not
# lab.sh faults but the other variants of two: only the hairpin masquerade removed (hairpin
# mode on), and the neighbour entry of node-b's VTEP deleted instead of the FDB entry. conntrack runs only with PATHTRACE_VM=1 (lab.sh refuses otherwise);
# without it the case is skipped, saying so.
#
# Environment: PATHTRACE (default bin/vm/pathtrace, else bin/pathtrace), LABPOD (default
# bin/vm/labpod, else bin/labpod), LAB_PREFIX, RECORD_TEXT, RECORD_LINES.
set -Eeuo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:?usage: scripts/record-faults.sh OUT [CASE...]}
shift
all=(healthy policy rpfilter blackhole slow nomasq underlay mtu hairpin hairpin_masq neighbour neighbour_arp conntrack)
cases=("$@")
((${#cases[@]})) || cases=("${all[@]}")

pick() {
	local f
	for f in "$@"; do
		[[ -x $f ]] && { echo "$f"; return; }
	done
	echo "record-faults.sh: none of $* is built (go build -o bin/vm/... ./cmd/...)" >&2
	exit 1
}
PT=${PATHTRACE:-$(pick "$repo/bin/vm/pathtrace" "$repo/bin/pathtrace")}
LP=${LABPOD:-$(pick "$repo/bin/vm/labpod" "$repo/bin/labpod")}
export LAB_PREFIX=${LAB_PREFIX:-ptf} LABPOD=$LP
P=$LAB_PREFIX
lab=$repo/scripts/lab.sh
lines=${RECORD_LINES:-10}

mkdir -p "$out/raw"
out=$(cd "$out" && pwd)
notes=$out/notes.txt
kernel=$(uname -r)
note() { printf '%s\n' "${*//$out/OUT}" >>"$notes"; }
say() { printf 'record-faults: %s\n' "$*" >&2; }

# ---- followers -------------------------------------------------------------

pids=()
# follow_start CASE NODE MODE ARGS...: pathtrace follow in NODE's namespace, MODE json or
# text, output in raw/CASE-NODE.MODE; waits until its programs are attached.
follow_start() {
	local c=$1 node=$2 mode=$3
	shift 3
	local base=$out/raw/$c-$node ready=$out/raw/.ready-$c-$node
	local args=(follow --netns "$P-$node" --node "$node" --ready-file "$ready" "$@")
	[[ $mode == json ]] && args=(follow --json "${args[@]:1}")
	rm -f "$ready"
	note "  follow ($mode): pathtrace ${args[*]}"
	"$PT" "${args[@]}" >"$base.$mode" 2>"$base.$mode.err" &
	pids+=($!)
	local i
	for ((i = 0; i < 1200; i++)); do
		[[ -e $ready ]] && { rm -f "$ready"; return 0; }
		kill -0 "${pids[-1]}" 2>/dev/null || break
		sleep 0.1
	done
	say "$c: follower on $node not ready: $(cat "$base.$mode.err")"
	return 1
}

# follow_stop SECONDS: waits that long (verdicts, one-way reports), then stops the followers.
follow_stop() {
	sleep "$1"
	local pid
	for pid in "${pids[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
	pids=()
}

# traffic NS CMD...: runs CMD in namespace NS, writing the command and its output to the
# notes; a failing command (the fault) is expected.
traffic() {
	local ns=$1
	shift
	local a shown=()
	for a in "$@"; do
		[[ $a == "$LP" ]] && a=labpod
		((${#a} > 60)) && a="'${a:0:3}...' (${#a} bytes)"
		shown+=("$a")
	done
	note "  traffic: ip netns exec $ns ${shown[*]}"
	local o rc=0
	o=$(timeout 60 ip netns exec "$ns" "$@" 2>&1) || rc=$?
	[[ -n $o ]] && printf '%s\n' "$o" | head -5 | sed 's/^/    | /' >>"$notes"
	note "    (exit $rc)"
}

# keep CASE NODE REGEX [ALWAYS]: the lines of raw/CASE-NODE.json whose "SRC DST" matches
# REGEX, at most $lines of them, into CASE-NODE.jsonl: first the odd ones (not delivered
# or forwarded, stalled, one-way, or whose "SRC DST" matches ALWAYS; no more than two
# alike), then the other lines of their flows. TCP and UDP flows an earlier case saw are
# left out: a connection a fault stalled may still retransmit in the next cases.
keep() {
	local c=$1 node=$2 re=$3 always=${4:-'^$'} name=${1//_/-}
	touch "$out/raw/seen-flows"
	jq -c -s --arg re "$re" --arg always "$always" --argjson n "$lines" \
		--rawfile seen "$out/raw/seen-flows" '
	def key: [.flow.src, .flow.dst] | sort | join(" ");
	($seen | split("\n") | map({(.): true}) | add // {}) as $old |
	def odd: .kind != "journey" or (.verdict != "delivered" and .verdict != "forwarded") or (.stall != null)
		or ((.flow.src + " " + .flow.dst) | test($always));
	def sig: [.kind, .flow.proto, .tcp_flags, .len, .verdict, .summary, (.hops | length)] | tostring;
	[.[] | select(.kind == "journey" or .kind == "oneway" or .kind == "path")
	     | select((.flow.src + " " + .flow.dst) | test($re)) | select(((key | test(":")) and ($old[key] // false)) | not)] as $all
	| [range(0; $all | length) as $i | {i: $i, j: $all[$i]}] as $ix
	| (reduce ($ix[] | select(.j | odd)) as $x ({seen: {}, out: []};
		($x.j | sig) as $s | if (.seen[$s] // 0) < 2 then .seen[$s] += 1 | .out += [$x] else . end)
	  | .out[:$n]) as $odd
	| if ($odd | length) == 0 then $all[:$n][]
	  else ($odd | map(.j | key) | unique) as $keys
	  | ($ix | map(select((.j | odd | not) and ((.j | key) as $k | any($keys[]; . == $k))))) as $ctx
	  | ($odd + $ctx[:($n - ($odd | length))]) | sort_by(.i) | .[].j
	  end' "$out/raw/$c-$node.json" >"$out/$name-$node.jsonl"
	note "  kept $(wc -l <"$out/$name-$node.jsonl") of $(grep -c . "$out/raw/$c-$node.json" || true) lines in $name-$node.jsonl (flows matching $re)"
}

# ---- cases -------------------------------------------------------------------
# Each case_X sets: FAULT (lab.sh fault, or empty), NODES, SEL (follow's selectors and
# flags), RE (the flows kept), SETTLE (seconds between the traffic and stopping), and may
# set ALWAYS (flows kept first, as abnormal ones are); traffic_X makes the traffic; a case
# without a lab.sh fault may have on_X and off_X.

case_healthy() {
	FAULT="" NODES="node-a node-b" SEL="--proto tcp 10.244.2.57:8080" RE='10\.244\.2\.57:8080' SETTLE=2
}
traffic_healthy() { traffic "$P-a-api" "$LP" tcp 10.244.2.57:8080; }

case_policy() {
	FAULT=policy NODES="node-b" SEL="--proto tcp 10.244.1.42:6379" RE='10\.244\.1\.42:6379' SETTLE=4
}
traffic_policy() { traffic "$P-b-api" "$LP" tcp 10.244.1.42:6379 --timeout 2s; }

case_rpfilter() {
	FAULT=rpfilter NODES="node-a node-b" SEL="10.244.1.23 10.244.2.57:8080" RE='10\.244\.1\.23:.* 10\.244\.2\.57:8080|10\.244\.2\.57:8080 10\.244\.1\.23' SETTLE=4
}
traffic_rpfilter() {
	traffic "$P-a-api" "$LP" tcp 10.244.2.57:8080 --timeout 2s
	traffic "$P-a-api" "$LP" udp 10.244.2.57:8080 --wait 500ms
}

case_blackhole() {
	FAULT=blackhole NODES="node-a" SEL="10.244.2.57:8080" RE='10\.244\.2\.57:8080' SETTLE=4
}
traffic_blackhole() {
	traffic "$P-a-api" "$LP" tcp 10.244.2.57:8080 --timeout 2s
	traffic "$P-a-api" "$LP" udp 10.244.2.57:8080 --wait 500ms
}

case_slow() {
	FAULT=slow NODES="node-a" SEL="--proto udp 10.244.2.57:8080" RE='10\.244\.2\.57:8080' SETTLE=2
}
traffic_slow() { traffic "$P-a-api" "$LP" udp 10.244.2.57:8080 --count 60 --size 1000 --wait 1s; }

case_nomasq() {
	FAULT=nomasq NODES="node-a" SEL="--proto tcp 10.0.0.100:80" RE='10\.0\.0\.100:80' SETTLE=5
}
traffic_nomasq() { traffic "$P-a-api" "$LP" tcp 10.0.0.100:80 --timeout 2s; }

case_underlay() {
	FAULT=underlay NODES="node-a node-b" SEL="--proto tcp 10.244.2.57:8080" RE='10\.244\.2\.57:8080' SETTLE=5
}
traffic_underlay() { traffic "$P-a-api" "$LP" tcp 10.244.2.57:8080 --timeout 2s; }

# mtu: a 3000-byte message makes full-size (1450-byte, DF) segments after a handshake of
# small packets; 10.0.0.11 catches the frag-needed node-a sends (to itself: the outer
# packet's source) and the outer packets.
case_mtu() {
	FAULT=mtu NODES="node-a node-b" SEL="10.244.2.57 10.0.0.11" RE='10\.244\.2\.57|^10\.0\.0\.1[12] 10\.0\.0\.1[12]$' SETTLE=4
	ALWAYS='^10\.0\.0\.1[12] 10\.0\.0\.1[12]$'
}
traffic_mtu() {
	# The frag-needed's type, code and MTU: journeys do not show them.
	local dump=$out/raw/mtu-icmp.txt tpid=""
	if command -v tcpdump >/dev/null; then
		# ip netns exec and timeout exec: $! is timeout's pid, which passes SIGINT on.
		ip netns exec "$P-node-a" timeout 20 tcpdump -l -n -v -i any -c 6 icmp >"$dump" 2>&1 &
		tpid=$!
		sleep 1
	fi
	traffic "$P-a-api" "$LP" tcp 10.244.2.57:8080 --timeout 3s --msg "$(head -c 3000 /dev/zero | tr '\0' x)"
	traffic "$P-a-api" ping -c 2 -i 0.5 -M do -s 1422 10.244.2.57
	if [[ -n $tpid ]]; then
		sleep 1
		kill -INT "$tpid" 2>/dev/null || true
		wait "$tpid" 2>/dev/null || true
		note "  node-a's ICMP (ip netns exec $P-node-a tcpdump -n -v -i any icmp):"
		grep -v "^tcpdump" "$dump" | head -8 | sed 's/^/    | /' >>"$notes"
	fi
}

# hairpin: the VIP picks a backend at random: connect until at least two connections
# failed (landed on api-b itself), at most 12 tries. The backend is followed too: before
# 6.4 (the kprobe on nf_hook_slow, hooks seen on entry) a packet that PREROUTING's DNAT
# sent to a backend and that dies before the next hook is not recognised at its drop
# from the VIP alone, and its journey ends "lost after PREROUTING entry".
case_hairpin() {
	FAULT=hairpin NODES="node-b" SEL="--proto tcp 10.96.12.34:80 10.244.2.57:8080" RE='10\.96\.12\.34:80' SETTLE=2
}
traffic_hairpin() {
	local i failed=0
	for ((i = 0; i < 12 && failed < 2; i++)); do
		ip netns exec "$P-b-api" "$LP" tcp 10.96.12.34:80 --timeout 1s >/dev/null 2>&1 || failed=$((failed + 1))
	done
	note "  traffic: ip netns exec $P-b-api labpod tcp 10.96.12.34:80 --timeout 1s, repeated until 2 failed: $i tries, $failed failed"
}

# hairpin_masq: half of the hairpin fault: the hairpin masquerade removed by hand, hairpin
# mode left on (hairpin mode off alone gives what the whole fault gives: the bridge
# drops the frame before the masquerade matters).
case_hairpin_masq() {
	FAULT="" NODES="node-b" SEL="--proto tcp 10.96.12.34:80 10.244.2.57:8080" RE='10\.96\.12\.34:80' SETTLE=2
}
on_hairpin_masq() {
	local n
	note "  fault: on both nodes: iptables -t nat -D KUBE-SEP-API-A -s 10.244.1.23/32 -j KUBE-MARK-MASQ, and the same of KUBE-SEP-API-B -s 10.244.2.57/32 (restored by lab.sh fault hairpin off)"
	for n in a b; do
		ip netns exec "$P-node-$n" iptables -w -t nat -D KUBE-SEP-API-A -s 10.244.1.23/32 -j KUBE-MARK-MASQ
		ip netns exec "$P-node-$n" iptables -w -t nat -D KUBE-SEP-API-B -s 10.244.2.57/32 -j KUBE-MARK-MASQ
	done
}
traffic_hairpin_masq() { traffic_hairpin; }
off_hairpin_masq() { "$lab" fault hairpin off >/dev/null; }

case_neighbour() {
	FAULT=neighbour NODES="node-a" SEL="10.244.2.57" RE='10\.244\.2\.57' SETTLE=2
}
traffic_neighbour() {
	traffic "$P-a-api" "$LP" tcp 10.244.2.57:8080 --timeout 2s
	traffic "$P-a-api" "$LP" udp 10.244.2.57:8080 --wait 500ms
	traffic "$P-a-api" ping -c 1 -W 1 10.244.2.57
}

# neighbour_arp: the other way to lose the peer: its VTEP's neighbour entry instead of the
# FDB entry. Packets wait for ARP (3 probes, 1 s apart), then are freed: SETTLE covers it.
case_neighbour_arp() {
	FAULT="" NODES="node-a" SEL="10.244.2.57" RE='10\.244\.2\.57' SETTLE=6
}
on_neighbour_arp() {
	note "  fault: ip netns exec $P-node-a ip neigh del 10.244.2.0 dev flannel.1 (restored by lab.sh fault neighbour off)"
	ip netns exec "$P-node-a" ip neigh del 10.244.2.0 dev flannel.1
}
traffic_neighbour_arp() {
	traffic "$P-a-api" "$LP" tcp 10.244.2.57:8080 --timeout 2s
	traffic "$P-a-api" "$LP" udp 10.244.2.57:8080 --wait 500ms
}
off_neighbour_arp() { "$lab" fault neighbour off >/dev/null; }

# conntrack: as TestConntrackFull: node-b connects to its own pod (the SYN dies at OUTPUT),
# and api-a on node-a to api-b (forwarded: it dies where node-a's conntrack would make
# its entry).
case_conntrack() {
	FAULT=conntrack NODES="node-a node-b" SEL="--proto tcp 10.244.2.57:8080" RE='10\.244\.2\.57:8080' SETTLE=4
}
traffic_conntrack() {
	traffic "$P-node-b" "$LP" tcp 10.244.2.57:8080 --timeout 1500ms
	traffic "$P-a-api" "$LP" tcp 10.244.2.57:8080 --timeout 1500ms
}

# run_case CASE MODE: one pass of a case.
run_case() {
	local c=$1 mode=$2 node
	"case_$c"
	if [[ -n $FAULT ]]; then
		note "  fault: scripts/lab.sh fault $FAULT"
		if ! "$lab" fault "$FAULT" >>"$out/raw/lab.log" 2>&1; then
			note "  (lab.sh fault $FAULT failed: see raw/lab.log)"
			"$lab" fault "$FAULT" off >>"$out/raw/lab.log" 2>&1 || true
			return 1
		fi
	elif declare -F "on_$c" >/dev/null; then
		"on_$c"
	fi
	local ok=1
	for node in $NODES; do
		# shellcheck disable=SC2086 # SEL is words
		follow_start "$c" "$node" "$mode" $SEL || ok=0
	done
	((ok)) && "traffic_$c"
	follow_stop "$SETTLE"
	if [[ -n $FAULT ]]; then
		"$lab" fault "$FAULT" off >>"$out/raw/lab.log" 2>&1
	elif declare -F "off_$c" >/dev/null; then
		"off_$c"
	fi
	((ok))
}

on_exit() {
	local pid
	for pid in "${pids[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
	"$lab" down >>"$out/raw/lab.log" 2>&1 || true
}

say "kernel $kernel; lab $P; pathtrace $PT; out $out"
: >"$notes"
: >"$out/raw/seen-flows"
note "record-faults.sh on kernel $kernel ($(date -u +%FT%TZ)), lab prefix $P"
"$lab" down >"$out/raw/lab.log" 2>&1 || true
trap on_exit EXIT
"$lab" up >>"$out/raw/lab.log" 2>&1 || { cat "$out/raw/lab.log" >&2; exit 1; }

for c in "${cases[@]}"; do
	declare -F "case_$c" >/dev/null || { say "unknown case $c (known: ${all[*]})"; exit 2; }
	note ""
	note "== $c"
	if [[ $c == conntrack && ${PATHTRACE_VM:-} != 1 ]]; then
		note "  skipped: the conntrack fault changes the machine-wide nf_conntrack_max; it runs only with PATHTRACE_VM=1 (in a VM)"
		say "$c: skipped (PATHTRACE_VM=1 only)"
		continue
	fi
	say "$c"
	start=$(date +%s)
	if run_case "$c" json; then
		ALWAYS='^$'
		"case_$c"
		for node in $NODES; do keep "$c" "$node" "$RE" "$ALWAYS"; done
		for node in $NODES; do
			jq -r 'select(.flow) | [.flow.src, .flow.dst] | sort | join(" ")' "$out/raw/$c-$node.json"
		done | sort -u >>"$out/raw/seen-flows"
	else
		note "  FAILED: see raw/$c-*.err"
	fi
	if [[ ${RECORD_TEXT:-} == 1 ]]; then
		run_case "$c" text || true
		for node in $NODES; do
			note "  text output on $node (of the flows concerned: up to 4 abnormal journeys with different verdicts, else 2 others; all in raw/$c-$node.text):"
			# Journeys are paragraphs; the first line names the flow.
			LC_ALL=C awk -v re="$RE" -v RS= '
				{ nl = split($0, l, "\n"); split(l[1], w, " "); if ((w[1] " " w[3]) !~ re) next }
				/dropped|lost|one-way|stall|unfinished|incomplete/ {
					odd++; v = l[nl]; sub(/^ +/, "", v)
					if (!(v in seen) && shown++ < 4) { seen[v] = 1; print $0 "\n" }
					next
				}
				{ if (n++ < 2) other = other $0 "\n\n" }
				END { if (!odd) printf "%s", other }' "$out/raw/$c-$node.text" | sed 's/^/    /' >>"$notes"
			# Its flows too are not the next cases'.
			LC_ALL=C awk '$2 == "→" { a = $1; b = $3; if (a > b) { t = a; a = b; b = t }; print a " " b }' \
				"$out/raw/$c-$node.text" | sort -u >>"$out/raw/seen-flows"
		done
	fi
	note "  ($(($(date +%s) - start)) s)"
done
"$lab" clear >>"$out/raw/lab.log" 2>&1
say "done: $out"
