#!/usr/bin/env bash
# bench.sh measures what the pathtrace agent costs the traffic it watches, on a lab
# of its own (LAB_PREFIX=ptb): TCP throughput and small-packet UDP rate between the
# pods of the two nodes, in alternating runs without and with one agent per node
# namespace, and, during the runs with agents, the kernel's own accounting of each
# BPF program (kernel.bpf_stats_enabled), the agents' CPU time and resident memory.
#
# The shell only runs things and records what they report, raw, in a work directory
# (iperf3's JSON, bpftool snapshots, the agents' CPU and memory, /metrics scrapes, and
# list files naming them: the formats are in scripts/benchagent/report's doc.go). At
# the end scripts/benchagent, tested Go, reads them and prints one table: each figure
# is the median of its runs, the pairs' ratios with/without with their mean and
# standard error, and the target each is held to. It exits non-zero only when
# something could not be measured (not root, a missing tool, the lab prefix in use, a
# build, an agent or iperf3 failing, a raw file benchagent cannot read); a missed
# target is reported in the table, not by the exit status.
#
# Environment: BENCH_PAIRS (20) off/on pairs, BENCH_SECONDS (4) per iperf3 run,
# BENCH_SAMPLES (0 64 16 1) the --sample settings whose cost is measured,
# BENCH_CAPTURE_RATES (5000 10000 20000 40000 80000 0) the UDP rates offered to agents
# with --pcap-dir (0: as fast as it goes), BENCH_PREFIX (ptb) the lab's namespace
# prefix, BENCH_KEEP=1 keeps the work directory: `go run ./scripts/benchagent -work DIR
# ...` (the flags bench.sh passed are printed under the table) prints the table again.
set -Eeuo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$script_dir/.." && pwd)
PAIRS=${BENCH_PAIRS:-20}
SETTLE=2 # seconds between an agent being ready and the runs with it
SECS=${BENCH_SECONDS:-4}
P=${BENCH_PREFIX:-ptb}
CLIENT_CPU=0
SERVER_CPU=$(($(nproc) > 1 ? 1 : 0))
SERVER_IP=10.244.2.57 # api pod on node-b
GO=${GO:-go}
IPERF_PORT=5201
# The tc programs, held to the per-packet target. Every program the agents hold is
# measured (tc_*, kfree_skb_*, nf_first, nf_last or kp_nf_hook_slow, by attach mode).
TC_PROGS=(tc_ingress tc_egress tc_ingress_l3 tc_egress_l3)
TCP_ARGS=(-c "$SERVER_IP" -p "$IPERF_PORT" -t "$SECS" -J)
UDP_ARGS=(-c "$SERVER_IP" -p "$IPERF_PORT" -u -l 64 -b 0 -t "$SECS" -J)

log() { printf 'bench.sh: %s\n' "$*" >&2 || true; }
die() {
	printf 'bench.sh: error: %s\n' "$*" >&2
	exit 1
}

[[ $PAIRS =~ ^[1-9][0-9]?$ ]] || die "BENCH_PAIRS='$PAIRS': want 1..99"
[[ $SECS =~ ^[1-9][0-9]?$ ]] || die "BENCH_SECONDS='$SECS': want 1..99"
[[ $P =~ ^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$ ]] || die "BENCH_PREFIX='$P': want 1-32 characters of [A-Za-z0-9_-]"
[[ $(id -u) == 0 ]] || die "run as root: the benchmark builds network namespaces and loads BPF programs"
missing=()
for t in ip iperf3 bpftool jq sysctl ss timeout flock make taskset curl "$GO"; do
	command -v "$t" >/dev/null || missing+=("$t")
done
((${#missing[@]} == 0)) || die "missing ${missing[*]} (Debian: apt-get install iproute2 iperf3 bpftool jq util-linux make curl)"

NS_A_API=$P-a-api NS_B_API=$P-b-api

# ---- state and cleanup -----------------------------------------------------

work=""
own_lab=0
stats_old=""
server_pid=""
client_pid=""
agent_pids=()

# alive PID: the process exists and is not a zombie waiting to be reaped.
alive() {
	local st
	st=$(sed -n 's/^.*) \(.\) .*$/\1/p' "/proc/$1/stat" 2>/dev/null) || return 1
	[[ -n $st && $st != Z ]]
}

# stop_child PID: SIGTERM, SIGKILL after ~5 s; reaps it. Returns its exit status.
stop_child() {
	local pid=$1 i rc=0
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 50; i++)); do
		alive "$pid" || break
		sleep 0.1
	done
	if alive "$pid"; then
		log "pid $pid did not stop on SIGTERM within 5 s: SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || rc=$?
	return "$rc"
}

cleanup() {
	local rc=$? pid
	trap - EXIT INT TERM ERR
	set +e
	[[ -n $client_pid ]] && stop_child "$client_pid"
	for pid in "${agent_pids[@]}"; do stop_child "$pid"; done
	[[ -n $server_pid ]] && stop_child "$server_pid"
	if [[ -n $stats_old ]]; then
		sysctl -qw kernel.bpf_stats_enabled="$stats_old" >/dev/null
	fi
	if ((own_lab)); then
		LAB_PREFIX=$P "$repo/scripts/lab.sh" down >"$work/lab-down.log" 2>&1 ||
			{ log "lab down failed:"; cat "$work/lab-down.log" >&2; }
	fi
	if [[ -n $work ]]; then
		if ((rc != 0)) || [[ ${BENCH_KEEP:-} == 1 ]]; then
			log "logs kept in $work"
		else
			rm -rf "$work"
		fi
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'log "failed (exit $?): $BASH_COMMAND (line $LINENO)"' ERR

# One benchmark per prefix at a time; and a lab under our prefix that someone else
# built (or a stale one) is not ours to use or to tear down.
lock_dir=/run/lock
[[ -d $lock_dir && -w $lock_dir ]] || lock_dir=/tmp
exec 9>"$lock_dir/pathtrace-bench-$P.lock"
flock -n 9 || die "another bench.sh is running with prefix '$P'"
in_use=$(ls -d /run/netns/"$P"-* /run/pathtrace-lab/"$P" 2>/dev/null | tr '\n' ' ' || true)
[[ -z $in_use ]] || die "lab prefix '$P' is in use (${in_use% }): if it is stale, 'LAB_PREFIX=$P scripts/lab.sh down'"
work=$(mktemp -d /tmp/pathtrace-bench.XXXXXX)

# ---- build, lab, iperf3 server --------------------------------------------------

log "make build"
make -s -C "$repo" build >"$work/build.log" 2>&1 || { cat "$work/build.log" >&2; die "make build failed"; }
# Copies: another 'make build' during the run cannot change what is measured.
mkdir -p "$work/bin"
cp "$repo/bin/pathtrace" "$repo/bin/labpod" "$work/bin/"
PT=$work/bin/pathtrace
# The report too, now: a report that does not build is found before the runs, not after.
(cd "$repo" && "$GO" build -o "$work/bin/benchagent" ./scripts/benchagent) >"$work/build-benchagent.log" 2>&1 ||
	{ cat "$work/build-benchagent.log" >&2; die "cannot build scripts/benchagent"; }

log "lab up (prefix $P)"
own_lab=1
LAB_PREFIX=$P LABPOD=$work/bin/labpod "$repo/scripts/lab.sh" up >"$work/lab-up.log" 2>&1 ||
	{ own_lab=0; cat "$work/lab-up.log" >&2; die "lab up failed"; }

# ip netns exec execs iperf3: $! is the server's own pid.
# Client and server each on a CPU of their own, the same in every run: left to the
# scheduler they sometimes share one, and the runs split into two throughputs.
ip netns exec "$NS_B_API" taskset -c "$SERVER_CPU" iperf3 -s -B "$SERVER_IP" -p "$IPERF_PORT" >"$work/iperf3-server.log" 2>&1 &
server_pid=$!
for ((i = 0; ; i++)); do
	[[ -n $(ip netns exec "$NS_B_API" ss -Hltn "sport = :$IPERF_PORT") ]] && break
	alive "$server_pid" || { cat "$work/iperf3-server.log" >&2; die "iperf3 server exited"; }
	((i < 50)) || die "iperf3 server not listening after 5 s"
	sleep 0.1
done

# free_port FROM: the first TCP port from FROM on that nothing listens on (root netns).
free_port() {
	local p=$1
	while [[ -n $(ss -Hltn "sport = :$p") ]]; do ((p++)); done
	echo "$p"
}
port_a=$(free_port 19965)
port_b=$(free_port $((port_a + 1)))
extra_agent_args=() # more flags for the agents of a phase
agent_args() { # NODE PORT: sets args
	args=("$PT" agent --netns "$P-$1" --node "$1" --metrics-addr "127.0.0.1:$2"
		--api "unix:$work/agent-$1.sock" --ready-file "$work/agent-$1.ready")
}

# ---- measuring -------------------------------------------------------------

# iperf NAME ARGS...: one iperf3 client run in the client pod, JSON in $work/NAME.json;
# one retry after a second (the server may still be closing the previous test).
iperf() {
	local name=$1 try rc
	shift
	for try in 1 2; do
		ip netns exec "$NS_A_API" timeout $((SECS + 25)) taskset -c "$CLIENT_CPU" iperf3 "$@" >"$work/$name.json" 2>"$work/$name.err" &
		client_pid=$!
		rc=0
		wait "$client_pid" || rc=$?
		client_pid=""
		if ((rc == 0)) && jq -e '.end.sum_received' "$work/$name.json" >/dev/null 2>&1; then
			return 0
		fi
		log "$name: iperf3 failed (exit $rc): $(jq -r '.error // empty' "$work/$name.json" 2>/dev/null) $(head -c 300 "$work/$name.err")"
		sleep 1
	done
	die "iperf3 $name failed twice"
}

# cpu_ns PID...: CPU time of the processes, all their threads, in ns (schedstat).
cpu_ns() {
	local pid sum=0 f v
	for pid in "$@"; do
		for f in /proc/"$pid"/task/*/schedstat; do
			read -r v _ <"$f" 2>/dev/null || continue
			((sum += v))
		done
	done
	echo "$sum"
}

rss_kib() { sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\) kB$/\1/p' "/proc/$1/status"; }
hwm_kib() { sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB$/\1/p' "/proc/$1/status"; }

# prog_ids PID...: ids of the BPF programs the processes hold.
prog_ids() {
	local pid
	for pid in "$@"; do
		sed -n 's/^prog_id:[[:space:]]*//p' /proc/"$pid"/fdinfo/* 2>/dev/null || true
	done | sort -un | paste -sd, -
}

# bpf_snap NAME IDS: "id name run_time_ns run_cnt" of the programs with these ids, in
# $work/NAME. benchagent takes the differences between two snapshots.
bpf_snap() {
	bpftool prog show -j | jq -r --argjson ids "[$2]" \
		'.[] | select(.id as $i | $ids | index($i)) | "\(.id) \(.name) \(.run_time_ns // 0) \(.run_cnt // 0)"' >"$work/$1"
}

# A 106-byte frame: Ethernet, IPv4 10.244.1.23 -> 10.244.2.57, UDP, 64 bytes of payload.
FRAME_HEX=02000000000202000000000108004500005c04d2400040111c880af401170af402399c40145100480000$(printf '78%.0s' {1..64})

# stats_cost IDS: what kernel.bpf_stats_enabled itself adds to a run of tc_ingress,
# from BPF_PROG_TEST_RUN on a synthetic frame (bpftool prog run), stats off and on,
# three times each; "0|1 ns" lines in $work/stats-cost.raw. Best effort.
stats_cost() {
	local id s i ns
	id=$(bpftool prog show -j | jq -r --argjson ids "[$1]" \
		'[.[] | select((.id as $i | $ids | index($i)) and .name == "tc_ingress")][0].id // empty')
	[[ -n $id ]] || return 0
	printf '%b' "$(sed 's/../\\x&/g' <<<"$FRAME_HEX")" >"$work/frame.bin"
	for i in 1 2 3; do
		for s in 0 1; do
			sysctl -qw kernel.bpf_stats_enabled=$s
			ns=$(bpftool prog run id "$id" data_in "$work/frame.bin" repeat 200000 2>&1 |
				sed -n 's/.*duration (average): \([0-9]*\)ns.*/\1/p') || true
			if [[ -n $ns ]]; then echo "$s $ns" >>"$work/stats-cost.raw"; fi
		done
	done
	sysctl -qw kernel.bpf_stats_enabled=1
}

start_agents() {
	local node port i args pid
	agent_pids=()
	for node in node-a node-b; do
		port=$port_a
		if [[ $node == node-b ]]; then port=$port_b; fi
		rm -f "$work/agent-$node.ready"
		agent_args "$node" "$port"
		if ((capture)); then
			mkdir -p -m 0700 "$work/pcap-$node"
			args+=(--pcap-dir "$work/pcap-$node")
		fi
		args+=("${extra_agent_args[@]}")
		"${args[@]}" >"$work/agent-$node.log" 2>&1 &
		agent_pids+=($!)
	done
	for node in node-a node-b; do
		i=0
		while [[ ! -e $work/agent-$node.ready ]]; do
			for pid in "${agent_pids[@]}"; do
				alive "$pid" || { cat "$work"/agent-*.log >&2; die "an agent exited before it was ready"; }
			done
			((i++ < 300)) || { cat "$work"/agent-*.log >&2; die "agent on $node not ready after 30 s"; }
			sleep 0.1
		done
	done
}

stop_agents() {
	local pid rc
	for pid in "${agent_pids[@]}"; do
		rc=0
		stop_child "$pid" || rc=$?
		((rc == 0)) || log "warning: agent pid $pid exited with status $rc (logs: $work/agent-*.log)"
	done
	agent_pids=()
}

# off_run K FIRST / on_run K FIRST: the K-th runs of each kind, TCP and UDP. In a pair
# whose runs without the agents come first (FIRST=1), those go TCP then UDP and the
# runs with the agents UDP then TCP; the other pairs the mirror image. Each pair's two
# UDP runs are thus next to each other (UDP is where the agent's cost shows: a program
# run per hop on every small packet), its TCP runs around them.
off_run() {
	local k=$1
	if (($2)); then
		iperf "off$k-tcp" "${TCP_ARGS[@]}"
		iperf "off$k-udp" "${UDP_ARGS[@]}"
	else
		iperf "off$k-udp" "${UDP_ARGS[@]}"
		iperf "off$k-tcp" "${TCP_ARGS[@]}"
	fi
	echo "off $k off$k-tcp.json off$k-udp.json" >>"$work/runs"
}

# The throughput runs keep the kernel's BPF accounting off, as an agent runs in
# production: with kernel.bpf_stats_enabled=1 every program run also pays for two clock
# reads (stats_cost measures how much). The BPF figures come from a TCP and a UDP run
# more, with the accounting on: after the throughput runs when the agents' runs come
# second in the pair, before them when first.
on_run() {
	local k=$1 ids c0 c1 pid rss="" hwm=""
	start_agents
	ids=$(prog_ids "${agent_pids[@]}")
	[[ -n $ids ]] || die "the agents hold no BPF programs"
	# What is measured is the agent running, not the agent starting.
	sleep "$SETTLE"
	if (($2)); then
		acct_runs "$k"
		iperf "on$k-tcp" "${TCP_ARGS[@]}"
		c0=$(cpu_ns "${agent_pids[@]}")
		iperf "on$k-udp" "${UDP_ARGS[@]}"
		c1=$(cpu_ns "${agent_pids[@]}")
	else
		c0=$(cpu_ns "${agent_pids[@]}")
		iperf "on$k-udp" "${UDP_ARGS[@]}"
		c1=$(cpu_ns "${agent_pids[@]}")
		iperf "on$k-tcp" "${TCP_ARGS[@]}"
		acct_runs "$k"
	fi
	for pid in "${agent_pids[@]}"; do
		alive "$pid" || { cat "$work"/agent-*.log >&2; die "an agent died during on run $k"; }
		rss+="${rss:+,}$(rss_kib "$pid")"
		hwm+="${hwm:+,}$(hwm_kib "$pid")"
	done
	stop_agents
	echo "on $k on$k-tcp.json on$k-udp.json $c0 $c1 $rss $hwm" >>"$work/runs"
}

# acct_runs K: a TCP and a UDP run with the accounting on and the empty program beside
# the agents' (the floor, below); the programs' run time and count before and after each.
acct_runs() {
	local k=$1
	floor_on
	sysctl -qw kernel.bpf_stats_enabled=1
	bpf_snap "on$k-bpf0" "$ids,$empty_ids"
	iperf "acct$k-tcp" "${TCP_ARGS[@]}"
	bpf_snap "on$k-bpf1" "$ids,$empty_ids"
	iperf "acct$k-udp" "${UDP_ARGS[@]}"
	bpf_snap "on$k-bpf2" "$ids,$empty_ids"
	if ((k == PAIRS)); then stats_cost "$ids"; fi
	sysctl -qw kernel.bpf_stats_enabled=0
	floor_off
	echo "tcp:$k on$k-bpf0 on$k-bpf1 acct$k-tcp.json" >>"$work/bpf.list"
	echo "udp:$k on$k-bpf1 on$k-bpf2 acct$k-udp.json" >>"$work/bpf.list"
}

# ---- the accounting floor -----------------------------------------------------
# An empty tc program on the same hooks (clsact, in the lab's node namespaces only),
# during each accounting run with the agents: the same packets pass the agents' tcx
# programs and then it, so each run gives what any tc program costs by that measure
# before it does anything (the accounting's clock reads, the hook's call) next to
# what the agents' programs cost, and the host's swings fall on both alike.
clang-14 -O2 -g -target bpf -I/usr/include/"$(uname -m)"-linux-gnu -c "$repo/scripts/bench-empty-tc.c" -o "$work/empty.o" 2>"$work/empty.log" ||
	{ cat "$work/empty.log" >&2; die "cannot build the empty tc program"; }
# At a priority of its own, behind the agents' filters when they use clsact too (kernels
# without tcx); floor_off takes away its filters, and the qdisc only where it added it.
EMPTY_PREF=49152
empty_devs=() # node/dev/1 where floor_on added the qdisc, node/dev/0 where it was there
floor_on() { # sets empty_ids
	local node dev added
	empty_devs=()
	for node in node-a node-b; do
		for dev in $(ip -n "$P-$node" -j link show | jq -r '.[].ifname'); do
			case $dev in veth* | cni0 | flannel.1 | eth0) ;; *) continue ;; esac
			added=0
			if ip netns exec "$P-$node" tc qdisc add dev "$dev" clsact 2>/dev/null; then added=1; fi
			empty_devs+=("$node/$dev/$added")
			ip netns exec "$P-$node" tc filter add dev "$dev" ingress pref $EMPTY_PREF bpf da obj "$work/empty.o" sec tc &&
				ip netns exec "$P-$node" tc filter add dev "$dev" egress pref $EMPTY_PREF bpf da obj "$work/empty.o" sec tc ||
				die "attach the empty tc program to $dev in $P-$node"
		done
	done
	empty_ids=$(bpftool prog show -j | jq -r '[.[] | select(.name == "empty") | .id] | map(tostring) | join(",")')
	[[ -n $empty_ids ]] || die "the empty tc programs are not loaded"
}
floor_off() {
	local nd node dev added dir
	for nd in "${empty_devs[@]}"; do
		IFS=/ read -r node dev added <<<"$nd"
		for dir in ingress egress; do
			ip netns exec "$P-$node" tc filter del dev "$dev" $dir pref $EMPTY_PREF 2>/dev/null || true
		done
		if ((added)); then ip netns exec "$P-$node" tc qdisc del dev "$dev" clsact 2>/dev/null || true; fi
	done
	empty_devs=()
}

stats_old=$(sysctl -n kernel.bpf_stats_enabled)
[[ $stats_old =~ ^[0-9]+$ ]] || die "cannot read kernel.bpf_stats_enabled"
sysctl -qw kernel.bpf_stats_enabled=0 # restored on exit

capture=0
log "warm-up (1 s, not counted)"
iperf warmup -c "$SERVER_IP" -p "$IPERF_PORT" -t 1 -J

: >"$work/runs"
: >"$work/bpf.list"
: >"$work/stats-cost.raw"
# Each pair's two runs in turn, odd pairs without the agents first and even pairs with
# them first: a drift of the host's speed during a pair does not favour one side.
for ((k = 1; k <= PAIRS; k++)); do
	if ((k % 2)); then
		log "pair $k/$PAIRS: without agent, then with agents"
		off_run "$k" 1
		on_run "$k" 0
	else
		log "pair $k/$PAIRS: with agents, then without"
		on_run "$k" 1
		off_run "$k" 0
	fi
done

# ---- sampling cost -------------------------------------------------------------
# What --sample costs: the agents' tc programs per run, with the accounting on, over
# UDP runs with each setting in turn (0: no latency samples; 1: every packet), twice
# round, so that the default can be chosen by what it costs.
SAMPLES=(${BENCH_SAMPLES:-0 64 16 1})
: >"$work/sampling.list"
if ((${#SAMPLES[@]})); then
	log "sampling cost: --sample ${SAMPLES[*]}, twice round, UDP with the accounting on"
	for round in 1 2; do
		for n in "${SAMPLES[@]}"; do
			extra_agent_args=(--sample "$n")
			start_agents
			ids=$(prog_ids "${agent_pids[@]}")
			sysctl -qw kernel.bpf_stats_enabled=1
			bpf_snap "smp$n-$round-0" "$ids"
			iperf "smp$n-$round" "${UDP_ARGS[@]}"
			bpf_snap "smp$n-$round-1" "$ids"
			sysctl -qw kernel.bpf_stats_enabled=0
			stop_agents
			echo "$n smp$n-$round-0 smp$n-$round-1" >>"$work/sampling.list"
		done
	done
	extra_agent_args=()
fi

# ---- capture cost ------------------------------------------------------------
# With --pcap-dir an agent follows every flow: each packet is an event at each of its
# hops, decoded and kept in the flows' histories. UDP with 64-byte payloads at rising
# rates; the first rate at which events are lost (pathtrace_events_lost_total, ring
# buffer and queues) is where capture starts to lose.
CAPTURE_RATES=(${BENCH_CAPTURE_RATES:-5000 10000 20000 40000 80000 0})
# scrape NAME: both agents' /metrics in $work/NAME-a.prom and NAME-b.prom (benchagent
# reads pathtrace_events_lost_total, ring buffer and queues, from them).
scrape() {
	curl -sf "http://127.0.0.1:$port_a/metrics" >"$work/$1-a.prom" || die "cannot scrape the agent on port $port_a"
	curl -sf "http://127.0.0.1:$port_b/metrics" >"$work/$1-b.prom" || die "cannot scrape the agent on port $port_b"
}
: >"$work/capture.list"
if ((${#CAPTURE_RATES[@]})); then
	log "capture cost: agents with --pcap-dir, UDP at ${CAPTURE_RATES[*]} pkt/s (0: as fast as it goes)"
	capture=1
	start_agents
	for rate in "${CAPTURE_RATES[@]}"; do
		scrape "cap$rate-0"
		iperf "cap$rate" -c "$SERVER_IP" -p "$IPERF_PORT" -u -l 64 -b $((rate * 64 * 8)) -t "$SECS" -J
		scrape "cap$rate-1"
		echo "$rate cap$rate.json cap$rate-0-a.prom,cap$rate-0-b.prom cap$rate-1-a.prom,cap$rate-1-b.prom" >>"$work/capture.list"
	done
	stop_agents
	capture=0
fi

# ---- the table ----------------------------------------------------------------
# benchagent computes every figure from the raw files and prints the table, the runs,
# the capture and sampling tables; a missed target is in the table, not its status.
report_args=(-work "$work" -pairs "$PAIRS" -seconds "$SECS" -tc-progs "${TC_PROGS[*]}" -samples "${SAMPLES[*]}")
report_cmd="go run ./scripts/benchagent $(printf '%q ' "${report_args[@]}")"
"$work/bin/benchagent" "${report_args[@]}" ||
	die "benchagent could not read the raw files (kept): ${report_cmd% }"
echo
echo "command:  BENCH_PAIRS=$PAIRS BENCH_SECONDS=$SECS BENCH_PREFIX=$P $0${*:+ $*}"
echo "report:   ${report_cmd% } (the files are kept with BENCH_KEEP=1)"
echo "iperf3:   ip netns exec $NS_A_API iperf3 ${TCP_ARGS[*]}"
echo "          ip netns exec $NS_A_API iperf3 ${UDP_ARGS[*]}"
echo "          server: ip netns exec $NS_B_API iperf3 -s -B $SERVER_IP -p $IPERF_PORT (client on CPU $CLIENT_CPU, server on CPU $SERVER_CPU: taskset)"
agent_args node-a "$port_a"
echo "agents:   ${args[*]}"
agent_args node-b "$port_b"
echo "          ${args[*]}"
echo "          (throughput, CPU and memory with kernel.bpf_stats_enabled=0, as in production; the BPF figures from a second"
echo "          TCP and UDP run per pair with it at 1: run_time_ns/run_cnt deltas of the agents' programs, bpftool prog show -j)"
echo "machine:  nproc $(nproc), kernel $(uname -r), $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $($PT version 2>/dev/null || echo pathtrace ?), $(iperf3 --version | head -1 | cut -d' ' -f1,2)"
