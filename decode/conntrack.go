package decode

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// CTStats are the conntrack counters of one namespace, summed over CPUs, as
// /proc/net/stat/nf_conntrack gives them ("drop", "insert_failed", "early_drop", ...),
// with the table's fill from nf_conntrack_count and nf_conntrack_max.
type CTStats struct {
	Counters map[string]uint64
	Count    uint64
	Max      uint64
}

// ParseCTStats reads the text of /proc/net/stat/nf_conntrack: a header of column names,
// then one line of hex counters per CPU.
func ParseCTStats(r io.Reader) (map[string]uint64, error) {
	sc := bufio.NewScanner(r)
	if !sc.Scan() {
		return nil, fmt.Errorf("conntrack stats: empty")
	}
	cols := strings.Fields(sc.Text())
	sums := make(map[string]uint64, len(cols))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != len(cols) {
			return nil, fmt.Errorf("conntrack stats: %d values for %d columns", len(f), len(cols))
		}
		for i, v := range f {
			n, err := strconv.ParseUint(v, 16, 64)
			if err != nil {
				return nil, fmt.Errorf("conntrack stats: %q: %w", v, err)
			}
			if cols[i] == "entries" {
				sums[cols[i]] = n // a global count repeated on every line, not per CPU
				continue
			}
			if sums[cols[i]]+n < n {
				return nil, fmt.Errorf("conntrack stats: column %s adds up to more than 64 bits", cols[i])
			}
			sums[cols[i]] += n
		}
	}
	return sums, sc.Err()
}

// ConntrackCause says whether conntrack itself dropped a packet that netfilter dropped
// in hook, from the counters before and after: a full table makes conntrack drop new
// connections where it creates them (PREROUTING, OUTPUT), a clash on insert where it
// confirms them (INPUT, POSTROUTING). It returns "" when the counters do not say so.
func ConntrackCause(before, after CTStats, hook string) string {
	rose := func(k string) bool { return after.Counters[k] > before.Counters[k] }
	switch {
	case rose("drop") && (hook == "PREROUTING" || hook == "OUTPUT" || hook == ""):
		return fmt.Sprintf("conntrack table full (nf_conntrack_count %d of nf_conntrack_max %d)", after.Count, after.Max)
	case rose("insert_failed"):
		return "conntrack insert failed (a clash with an existing entry)"
	}
	return ""
}
