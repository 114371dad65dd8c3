#!/usr/bin/env bash
# caps.sh measures which Linux capability each feature of the pathtrace agent needs on
# the running kernel. On a lab of its own (CAPS_PREFIX=ptcap) it runs one agent at a
# time on node-b as uid 0 with a bounding set of capabilities and nothing else, as a
# container whose capabilities are "drop ALL, add ..." holds them: the six of
# deploy/daemonset.yaml, then without SYS_ADMIN (which stands in for BPF, PERFMON and
# NET_ADMIN on recent kernels), then each of the others taken away from both sets.
# Each agent is checked for what a user would see: it starts, attaches tc (tcx, then
# clsact), kfree_skb and tcp_retransmit_skb; a follow through it (a SYN the lab's
# policy fault drops) has netfilter hops, the drop's location in the kernel and the
# rule behind it, and the selected pod's veth; a datagram to a closed port of a pod
# counts as that pod's drop (the agent found the pod's namespace).
#
# The agent runs the way the DaemonSet runs it, in the node's network namespace with no
# --netns, in four settings:
#   pidns   its own PID namespace and /proc (no hostPID): pods' namespaces can only be
#           found in /run/netns
#   noproc  the host's /proc (hostPID) and an empty /run/netns: pods' namespaces can
#           only be found through /proc/PID/ns/net (the lab's pods are processes of
#           root with every capability)
#   clsact  --attach-mode clsact (the tc hooks of kernels before 6.6)
#   kprobe  --nf-hook kprobe (nf_hook_slow) instead of netfilter links (before 6.4)
#   netns   from the root namespace with --netns (how the lab runs agents): setns(2)
# A feature that fails in a setting even as full root (not the capabilities: the
# kernel has no kprobe PMU, say) is reported unavailable.
#
# It prints what each run showed, then the table: a capability is "needed" by a
# feature when the feature works with a set and fails once that capability alone is
# taken from it. Exit status non-zero only when something could not be measured (not
# root, a missing tool, the prefix in use, a build or the lab failing).
#
# Environment: CAPS_PREFIX (ptcap) the lab's namespace prefix, CAPS_KEEP=1 keeps the
# work directory (each agent's and follow's output), PATHTRACE and LABPOD use these
# binaries instead of building.
set -Eeuo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$script_dir/.." && pwd)
P=${CAPS_PREFIX:-ptcap}
NODE=node-b
POD=10.244.2.57      # api-b, behind veth2b57 on node-b
REDIS=10.244.1.42    # on node-a: the policy fault drops SYNs to it in node-b's FORWARD
CLOSED_PORT=9999     # nothing listens there: a datagram is dropped in the pod (NO_SOCKET)

log() { printf 'caps.sh: %s\n' "$*" >&2 || true; }
die() {
	printf 'caps.sh: error: %s\n' "$*" >&2
	exit 1
}

[[ $P =~ ^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$ ]] || die "CAPS_PREFIX='$P': want 1-32 characters of [A-Za-z0-9_-]"
[[ $(id -u) == 0 ]] || die "run as root: the script builds network namespaces and gives the agent chosen capabilities"
missing=()
for t in ip setpriv unshare mount curl flock make; do
	command -v "$t" >/dev/null || missing+=("$t")
done
((${#missing[@]} == 0)) || die "missing ${missing[*]} (Debian: apt-get install iproute2 util-linux curl make)"
setpriv --bounding-set=-all,+bpf,+perfmon true 2>/dev/null ||
	die "setpriv does not know CAP_BPF/CAP_PERFMON (util-linux too old?)"

# ---- state and cleanup -----------------------------------------------------

work=""
own_lab=0
launcher=""
launched_setting=""
cleanup() {
	local rc=$?
	if [[ -n $launcher ]] && kill -0 "$launcher" 2>/dev/null; then
		stop_agent
	fi
	if ((own_lab)); then
		LAB_PREFIX=$P "$repo/scripts/lab.sh" down >/dev/null 2>&1 || log "lab down failed: LAB_PREFIX=$P scripts/lab.sh down"
	fi
	if [[ -n $work ]]; then
		if [[ ${CAPS_KEEP:-0} == 1 || $rc != 0 ]]; then
			log "work directory kept: $work"
		else
			rm -rf "$work"
		fi
	fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

lock_dir=/run/lock
[[ -d $lock_dir && -w $lock_dir ]] || lock_dir=/tmp
exec 9>"$lock_dir/pathtrace-caps-$P.lock"
flock -n 9 || die "another caps.sh is running with prefix '$P'"
in_use=$(ls -d /run/netns/"$P"-* /run/pathtrace-lab/"$P" 2>/dev/null | tr '\n' ' ' || true)
[[ -z $in_use ]] || die "lab prefix '$P' is in use (${in_use% }): if it is stale, 'LAB_PREFIX=$P scripts/lab.sh down'"
work=$(mktemp -d /tmp/pathtrace-caps.XXXXXX)
chmod 0755 "$work"

mkdir -p "$work/bin"
if [[ -n ${PATHTRACE:-} ]]; then
	cp "$PATHTRACE" "$work/bin/pathtrace"
	cp "${LABPOD:?LABPOD too, with PATHTRACE}" "$work/bin/labpod"
else
	log "make build"
	make -s -C "$repo" build >"$work/build.log" 2>&1 || { cat "$work/build.log" >&2; die "make build failed"; }
	cp "$repo/bin/pathtrace" "$repo/bin/labpod" "$work/bin/"
fi
PT=$work/bin/pathtrace
LABPOD=$work/bin/labpod

log "lab up (prefix $P)"
own_lab=1
LAB_PREFIX=$P LABPOD=$LABPOD "$repo/scripts/lab.sh" up >"$work/lab-up.log" 2>&1 ||
	{ cat "$work/lab-up.log" >&2; die "lab up failed"; }
fault() { LAB_PREFIX=$P "$repo/scripts/lab.sh" fault "$@" >/dev/null; }

# ---- one agent ---------------------------------------------------------------

ALL6=(BPF PERFMON NET_ADMIN SYS_ADMIN SYS_PTRACE SYSLOG)
# caplist [CAP...]: the six less these, as a setpriv capability list
caplist() {
	local c out=-all skip
	for c in "${ALL6[@]}"; do
		for skip in "$@"; do [[ $c == "$skip" ]] && continue 2; done
		out+=",+${c,,}"
	done
	echo "$out"
}

metrics_port=$((29000 + RANDOM % 1000))
# start_agent DIR SETTING CAPLIST: launches the agent; $launcher is the process to wait
# for. The agent itself is $launcher, or its only child in the pidns setting.
start_agent() {
	local d=$1 setting=$2 caps=$3 priv=()
	[[ $caps == root ]] || priv=(setpriv "--bounding-set=$caps" "--inh-caps=$caps" --)
	local args=(agent --node "$NODE" --api "unix:$d/agent.sock" --ready-file "$d/ready")
	# Each command execs the next, so that $! is the agent (or, with pidns, unshare,
	# whose child it is, and which kills it if unshare dies).
	(
		exec >"$d/agent.out" 2>"$d/agent.err"
		case $setting in
		pidns)
			exec ip netns exec "$P-$NODE" unshare --pid --fork --kill-child --mount-proc \
				"${priv[@]}" "$PT" "${args[@]}" --metrics-addr "127.0.0.1:$metrics_port" ;;
		noproc)
			exec ip netns exec "$P-$NODE" unshare --mount --propagation private \
				sh -c 'mount -t tmpfs -o mode=0755,size=64k caps-empty /run/netns && exec "$@"' sh \
				"${priv[@]}" "$PT" "${args[@]}" --metrics-addr "127.0.0.1:$metrics_port" ;;
		clsact)
			exec ip netns exec "$P-$NODE" "${priv[@]}" "$PT" "${args[@]}" --metrics-addr "" --attach-mode clsact ;;
		kprobe)
			exec ip netns exec "$P-$NODE" "${priv[@]}" "$PT" "${args[@]}" --metrics-addr "" --nf-hook kprobe ;;
		netns)
			exec "${priv[@]}" "$PT" "${args[@]}" --metrics-addr "" --netns "$P-$NODE" ;;
		esac
	) &
	launcher=$! launched_setting=$setting
}

# The agent: $launcher, but for the pidns setting, where it is unshare's one child.
agent_pid() {
	local kid=""
	[[ $launched_setting == pidns ]] && kid=$(cat "/proc/$launcher/task/$launcher/children" 2>/dev/null || true)
	echo "${kid:-$launcher}"
}

stop_agent() {
	local pid
	pid=$(agent_pid)
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 100); do kill -0 "$launcher" 2>/dev/null || break; sleep 0.1; done
	kill -KILL "$launcher" 2>/dev/null || true
	wait "$launcher" 2>/dev/null || true
	launcher=""
}

in_node() { ip netns exec "$P-$NODE" "$@"; }

# probe DIR: what a user does with a running agent, outputs in DIR.
probe() {
	local d=$1 fpid
	in_node ip neigh flush dev cni0 2>/dev/null || true
	fault policy
	"$PT" follow --agents "unix:$d/agent.sock" --json --count 1 --timeout 300ms --ready-file "$d/follow.ready" \
		"$REDIS:6379" "$POD:$CLOSED_PORT" >"$d/follow.out" 2>"$d/follow.err" &
	fpid=$!
	for _ in $(seq 50); do [[ -e $d/follow.ready ]] && break; kill -0 "$fpid" 2>/dev/null || break; sleep 0.1; done
	ip netns exec "$P-b-api" "$LABPOD" tcp "$REDIS:6379" --timeout 300ms >/dev/null 2>&1 || true
	for _ in $(seq 30); do kill -0 "$fpid" 2>/dev/null || break; sleep 0.1; done
	kill "$fpid" 2>/dev/null || true
	wait "$fpid" 2>/dev/null || true
	fault policy off
	if [[ -s $d/metrics.url ]]; then
		in_node "$LABPOD" udp "$POD:$CLOSED_PORT" --count 3 >/dev/null 2>&1 || true
		sleep 0.5
		in_node curl -s --max-time 2 "$(cat "$d/metrics.url")" >"$d/metrics" || true
	fi
}

# ---- the runs ------------------------------------------------------------------

declare -A res   # res[feature|set] = ok, FAIL or "" (not measured)
declare -A why   # why[feature|set] = the agent's error when it did not start
FEATURES=(start tcx clsact kfree_skb retransmit nf_link nf_kprobe kallsyms rules pods_runnetns pods_proc veth_setns netns)
declare -A FEATURE_NAME=(
	[start]="load the programs and maps, start"
	[tcx]="attach tc: tcx links"
	[clsact]="attach tc: clsact qdisc and filters"
	[kfree_skb]="kfree_skb tracepoint (tp_btf)"
	[retransmit]="tcp_retransmit_skb raw tracepoint"
	[nf_link]="netfilter hooks: BPF netfilter links"
	[nf_kprobe]="netfilter hooks: nf_hook_slow kprobe"
	[kallsyms]="/proc/kallsyms addresses: a drop's location named"
	[rules]="read the nftables ruleset: the rule behind a drop named"
	[pods_runnetns]="pods' namespaces from /run/netns: drops in pods counted"
	[pods_proc]="pods' namespaces from /proc/PID/ns/net (hostPID): drops in pods counted"
	[veth_setns]="a pod's veth by its address (setns into the pod's namespace)"
	[netns]="--netns NAME: setns into the node's namespace"
)
declare -A SETTING_FEATURES=(
	[pidns]="start tcx kfree_skb retransmit nf_link kallsyms rules pods_runnetns veth_setns"
	[noproc]="pods_proc"
	[clsact]="clsact"
	[kprobe]="nf_kprobe"
	[netns]="netns"
)
SETTINGS=(pidns noproc clsact kprobe netns)

has() { grep -q -- "$2" "$1" 2>/dev/null; }
okif() { if "$@"; then echo ok; else echo FAIL; fi; }

# judge SETTING DIR SET: fills res for the features the setting measures.
judge() {
	local setting=$1 d=$2 set=$3 f started=0
	[[ -e $d/attached ]] && started=1
	for f in ${SETTING_FEATURES[$setting]}; do
		if ((!started)); then
			res[$f|$set]=FAIL
			why[$f|$set]=$(grep -m1 '^pathtrace: ' "$d/agent.err" | cut -c1-300 || true)
			continue
		fi
		case $f in
		start | netns) res[$f|$set]=ok ;;
		tcx) res[$f|$set]=$(okif has "$d/attached" 'tcx ') ;;
		clsact) res[$f|$set]=$(okif has "$d/attached" 'clsact') ;;
		kfree_skb) res[$f|$set]=$(okif has "$d/attached" 'kfree_skb') ;;
		retransmit) res[$f|$set]=$(okif has "$d/attached" 'tcp_retransmit_skb') ;;
		nf_link | nf_kprobe) res[$f|$set]=$(okif has "$d/follow.out" '"kind":"netfilter"') ;;
		kallsyms) res[$f|$set]=$(okif grep -qE '"location":"[A-Za-z_][A-Za-z0-9_.]*\+0x' "$d/follow.out") ;;
		rules) res[$f|$set]=$(okif has "$d/follow.out" '"rule":"dropped by') ;;
		pods_runnetns | pods_proc) res[$f|$set]=$(okif grep -qE '^pathtrace_drops_total\{[^}]*hop="pod"[^}]*reason="NO_SOCKET"\} [1-9]' "$d/metrics") ;;
		veth_setns) res[$f|$set]=$(okif has "$d/follow.err" "$POD is the pod behind veth") ;;
		esac
	done
}

# The capability sets: full root for reference, the six, the six without SYS_ADMIN,
# and each of the others taken from both.
SETS=(root all "-SYS_ADMIN")
for c in BPF PERFMON NET_ADMIN SYS_PTRACE SYSLOG; do SETS+=("-SYS_ADMIN-$c"); done
for c in BPF PERFMON NET_ADMIN SYS_PTRACE SYSLOG; do SETS+=("-$c"); done
set_caps() { # SET: its setpriv list
	local s=$1 without=()
	[[ $s == root ]] && { echo root; return; }
	[[ $s == all ]] && { caplist; return; }
	IFS=- read -r -a without <<<"${s#-}"
	caplist "${without[@]}"
}

uname_r=$(uname -r)
log "kernel $uname_r; ${#SETS[@]} capability sets × ${#SETTINGS[@]} settings"
n=0
for setting in "${SETTINGS[@]}"; do
	for set in "${SETS[@]}"; do
		# A setting whose features fail as full root says so once; its other runs would
		# only repeat it.
		if [[ $set != root && ${skip_setting:-} == "$setting" ]]; then
			continue
		fi
		d=$work/$setting$set
		mkdir -p "$d"
		[[ $setting == pidns || $setting == noproc ]] && echo "http://127.0.0.1:$metrics_port/metrics" >"$d/metrics.url"
		n=$((n + 1))
		start_agent "$d" "$setting" "$(set_caps "$set")"
		for _ in $(seq 150); do
			[[ -e $d/ready ]] && break
			kill -0 "$launcher" 2>/dev/null || break
			sleep 0.1
		done
		# The agent removes its ready file when it stops.
		cp "$d/ready" "$d/attached" 2>/dev/null || true
		if [[ -e $d/attached && $setting != netns && $setting != clsact ]]; then
			probe "$d"
		fi
		stop_agent
		judge "$setting" "$d" "$set"
		if [[ $set == root ]]; then
			skip_setting=""
			for f in ${SETTING_FEATURES[$setting]}; do
				[[ ${res[$f|root]} == ok ]] || skip_setting=$setting
			done
			[[ -z $skip_setting ]] || log "$setting: fails as full root: $(grep -m1 '^pathtrace: ' "$d/agent.err" | cut -c1-300 || true)"
		fi
	done
done
log "$n agents run"

# ---- the table -----------------------------------------------------------------

cell() { # FEATURE SET
	local r=${res[$1|$2]:-}
	echo "${r:--}"
}
echo "# pathtrace agent capabilities, kernel $uname_r ($(uname -m))"
echo "# kernel.kptr_restrict=$(sysctl -n kernel.kptr_restrict 2>/dev/null || echo ?)" \
	"kernel.perf_event_paranoid=$(sysctl -n kernel.perf_event_paranoid 2>/dev/null || echo ?)" \
	"kernel.unprivileged_bpf_disabled=$(sysctl -n kernel.unprivileged_bpf_disabled 2>/dev/null || echo ?)"
echo
echo "Runs (uid 0; 'all' = the DaemonSet's six, -X = without X; ok, FAIL, - not run):"
echo
printf '%-14s' feature
for set in "${SETS[@]}"; do printf ' %-13s' "${set//SYS_ADMIN/SA}"; done
echo
for f in "${FEATURES[@]}"; do
	printf '%-14s' "$f"
	for set in "${SETS[@]}"; do printf ' %-13s' "$(cell "$f" "$set")"; done
	echo
done
echo
echo "(SA: SYS_ADMIN.) Why agents did not start:"
declare -A said=()
for set in "${SETS[@]}"; do
	for f in "${FEATURES[@]}"; do
		w=${why[$f|$set]:-}
		[[ -n $w && -z ${said[$w]:-} ]] || continue
		said[$w]=1
		echo "  $set ($f): $w"
	done
done
echo

# needed FEATURE CAP: "needed" when the feature works with the six and fails without
# CAP; "needed*" when it fails without CAP only if SYS_ADMIN is gone
# too (SYS_ADMIN stands in for it); for SYS_ADMIN itself, when the feature works with
# the six and fails without it.
needed() {
	local f=$1 c=$2
	if [[ $c == SYS_ADMIN ]]; then
		[[ $(cell "$f" all) == ok && $(cell "$f" -SYS_ADMIN) == FAIL ]] && { echo needed; return; }
		echo "-"
		return
	fi
	if [[ $(cell "$f" all) == ok && $(cell "$f" "-$c") == FAIL ]]; then
		echo needed
	elif [[ $(cell "$f" -SYS_ADMIN) == ok && $(cell "$f" "-SYS_ADMIN-$c") == FAIL ]]; then
		echo "needed*"
	else
		echo "-"
	fi
}
echo "| feature |$(printf ' %s |' "${ALL6[@]}")"
echo "| --- |$(printf ' --- |%.0s' "${ALL6[@]}")"
unavailable=()
for f in "${FEATURES[@]}"; do
	printf '| %s |' "${FEATURE_NAME[$f]}"
	if [[ $(cell "$f" root) != ok ]]; then
		printf ' unavailable |%.0s' "${ALL6[@]}"
		echo
		unavailable+=("$f")
		continue
	fi
	for c in "${ALL6[@]}"; do printf ' %s |' "$(needed "$f" "$c")"; done
	echo
done
echo
echo "needed: the feature fails without it, even with the other five. needed*: it fails"
echo "without it and SYS_ADMIN; with SYS_ADMIN it works without it (SYS_ADMIN stands in)."
for f in "${unavailable[@]}"; do
	echo "${FEATURE_NAME[$f]}: unavailable here even as full root: ${why[$f|root]:-it did not work}"
done
