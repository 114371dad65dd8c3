package decode_test

import (
	"strings"
	"testing"

	"github.com/pathtrace/pathtrace/decode"
)

const ctStats = `entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart
00000003  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000001 0000000a 00000000 00000000  00000000 00000000 00000000 00000000
00000003  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000002 00000005 00000000 00000000  00000000 00000000 00000000 00000000
`

func TestParseCTStats(t *testing.T) {
	m, err := decode.ParseCTStats(strings.NewReader(ctStats))
	if err != nil {
		t.Fatal(err)
	}
	if m["drop"] != 15 || m["insert_failed"] != 3 || m["entries"] != 3 {
		t.Errorf("got drop %d insert_failed %d entries %d, want 15 3 3", m["drop"], m["insert_failed"], m["entries"])
	}
	if _, err := decode.ParseCTStats(strings.NewReader("a b\n1\n")); err == nil {
		t.Error("short line: no error")
	}
	if _, err := decode.ParseCTStats(strings.NewReader("a\nzz\n")); err == nil {
		t.Error("bad hex: no error")
	}
	// Sums that do not fit in 64 bits are an error, not a wrapped-around count
	// (FuzzParseCTStats: testdata/fuzz/FuzzParseCTStats/sum-overflow).
	if m, err := decode.ParseCTStats(strings.NewReader("drop\nffffffffffffffff\n1\n")); err == nil || !strings.Contains(err.Error(), "drop") {
		t.Errorf("overflow: %v, error %v", m, err)
	}
}

func TestConntrackCause(t *testing.T) {
	before := decode.CTStats{Counters: map[string]uint64{"drop": 4, "insert_failed": 1}}
	full := decode.CTStats{Counters: map[string]uint64{"drop": 5, "insert_failed": 1}, Count: 100, Max: 100}
	clash := decode.CTStats{Counters: map[string]uint64{"drop": 4, "insert_failed": 2}}
	for _, tc := range []struct {
		after decode.CTStats
		hook  string
		want  string
	}{
		{full, "PREROUTING", "conntrack table full (nf_conntrack_count 100 of nf_conntrack_max 100)"},
		{full, "OUTPUT", "conntrack table full"},
		{full, "FORWARD", ""}, // conntrack does not create entries in FORWARD: a rule dropped it
		{clash, "POSTROUTING", "conntrack insert failed"},
		{before, "PREROUTING", ""},
	} {
		got := decode.ConntrackCause(before, tc.after, tc.hook)
		if tc.want == "" && got != "" || tc.want != "" && !strings.HasPrefix(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.hook, got, tc.want)
		}
	}
}
