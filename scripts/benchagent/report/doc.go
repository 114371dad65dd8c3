// Package report is the arithmetic and the printout of scripts/bench.sh, the agent's
// overhead benchmark (see report.go): from the raw files bench.sh leaves in its work
// directory (iperf3's JSON, bpftool snapshots of the programs' run time and count, the
// agents' CPU and memory, their /metrics scrapes) it computes the medians, the pairs'
// ratios with their means and standard errors, the BPF programs' ns per run, the
// capture and sampling tables, and holds the figures to their targets with package
// stat. It must not run or measure anything itself: bench.sh does that, and this
// package only reads what it recorded.
//
// The files bench.sh leaves in its work directory, one record a line, fields separated
// by blanks; a file named in a record is a name in the work directory:
//
//	runs            off K TCP_JSON UDP_JSON
//	                on K TCP_JSON UDP_JSON CPU_NS_BEFORE CPU_NS_AFTER RSS_KB,... HWM_KB,...
//	                a run of pair K without or with the agents: iperf3's JSON of its TCP
//	                and UDP tests; with the agents, their CPU time (ns, every thread of
//	                every agent, schedstat) before and after the UDP test, and each
//	                agent's VmRSS and VmHWM (kB) after the tests.
//	bpf.list        PHASE BEFORE AFTER RUN_JSON
//	                an accounting run (tcp:K or udp:K: pair K's TCP or UDP test with
//	                kernel.bpf_stats_enabled=1) between two snapshots; RUN_JSON is the
//	                iperf3 test run between them.
//	(snapshot)      ID NAME RUN_TIME_NS RUN_CNT, one line per program (bpftool prog show -j)
//	sampling.list   N BEFORE AFTER: a UDP test with the agents at --sample N, between two snapshots
//	capture.list    RATE RUN_JSON BEFORE,... AFTER,...
//	                a UDP test offered at RATE pkt/s (0: as fast as it goes) to the agents
//	                with --pcap-dir, and each agent's /metrics scraped before and after it.
//	stats-cost.raw  S NS: tc_ingress's average ns in bpftool prog run with
//	                kernel.bpf_stats_enabled=S (empty when it could not be measured).
//
// From iperf3's JSON (-J) it reads .end.sum_received (bits_per_second of a TCP test;
// packets, lost_packets and seconds of a UDP one) and .end.sum_sent.packets; from a
// /metrics scrape, pathtrace_events_lost_total of the stages ringbuf and queue.
package report
