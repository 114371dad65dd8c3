package tracer

import (
	"os"
	"strconv"
	"strings"

	"github.com/pathtrace/pathtrace/decode"
)

// ConntrackStats reads the traced namespace's conntrack counters and table fill. It
// fails when conntrack is not in use there.
func (t *Tracer) ConntrackStats() (decode.CTStats, error) {
	return readCTStats(t.ns)
}

// readCTStats reads the conntrack counters and table fill of a namespace from a thread
// inside it: /proc/thread-self/net and /proc/sys/net are the reading thread's.
func readCTStats(ns *nsRef) (decode.CTStats, error) {
	var s decode.CTStats
	err := ns.do(func() error {
		f, err := os.Open("/proc/thread-self/net/stat/nf_conntrack")
		if err != nil {
			return err
		}
		defer f.Close()
		if s.Counters, err = decode.ParseCTStats(f); err != nil {
			return err
		}
		s.Count = readUint("/proc/sys/net/netfilter/nf_conntrack_count")
		s.Max = readUint("/proc/sys/net/netfilter/nf_conntrack_max")
		return nil
	})
	return s, err
}

func readUint(path string) uint64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	return n
}
