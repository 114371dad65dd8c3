package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/pathtrace/pathtrace/scripts/benchagent/report"
)

func main() {
	var c report.Config
	var progs, samples string
	flag.StringVar(&c.Work, "work", "", "bench.sh's work directory (BENCH_KEEP=1 keeps it)")
	flag.IntVar(&c.Pairs, "pairs", 0, "off/on pairs bench.sh ran (BENCH_PAIRS)")
	flag.IntVar(&c.Seconds, "seconds", 0, "seconds per iperf3 run (BENCH_SECONDS)")
	flag.StringVar(&progs, "tc-progs", "tc_ingress tc_egress tc_ingress_l3 tc_egress_l3", "the tc programs held to the per-run target, space-separated")
	flag.StringVar(&samples, "samples", "", "the --sample settings whose cost was measured, in order, space-separated (BENCH_SAMPLES)")
	flag.Parse()
	c.TCProgs, c.Samples = strings.Fields(progs), strings.Fields(samples)
	if c.Work == "" || c.Pairs < 1 || c.Seconds < 1 || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "benchagent: want -work DIR -pairs N -seconds S (N, S ≥ 1), no arguments")
		os.Exit(2)
	}
	missed, total, err := report.Run(c, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchagent:", err)
		os.Exit(1)
	}
	fmt.Printf("benchagent: %d of %d figures miss their targets\n", missed, total)
}
