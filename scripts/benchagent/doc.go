// Command benchagent prints the table of scripts/bench.sh, the agent's overhead in the
// two-node lab, from the raw files bench.sh recorded in its work directory (package
// report reads and computes; this command only takes the flags). It exits 1 when a
// file it needs is missing or cannot be parsed, naming the file and line, and 0
// otherwise, saying how many figures miss their targets.
//
//	go run ./scripts/benchagent -work DIR -pairs 20 -seconds 4 \
//		-tc-progs 'tc_ingress tc_egress tc_ingress_l3 tc_egress_l3' -samples '0 64 16 1'
//
// No root: it touches no kernel object, only the files.
package main
