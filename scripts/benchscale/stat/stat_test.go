package stat

import (
	"math"
	"strings"
	"testing"
)

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		xs   []float64
		want float64
	}{
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{7}, 7},
	} {
		if got := Median(tc.xs); got != tc.want {
			t.Errorf("Median(%v) = %v, want %v", tc.xs, got, tc.want)
		}
	}
	if !math.IsNaN(Median(nil)) {
		t.Error("Median(nil) is not NaN")
	}
	xs := []float64{3, 1, 2}
	Median(xs)
	if xs[0] != 3 {
		t.Error("Median sorted its argument")
	}
}

func TestMeanStderr(t *testing.T) {
	m, se := Mean([]float64{2, 4, 4, 4, 5, 5, 7, 9})
	// sample sd = sqrt(32/7); se = sd/sqrt(8)
	if m != 5 || math.Abs(se-math.Sqrt(32.0/7)/math.Sqrt(8)) > 1e-12 {
		t.Errorf("Mean = %v ± %v", m, se)
	}
	if _, se := Mean([]float64{1}); !math.IsNaN(se) {
		t.Errorf("one sample: stderr %v, want NaN", se)
	}
}

func TestRatio(t *testing.T) {
	r, se := Ratio([]float64{10, 10, 10}, []float64{5, 5, 5})
	if r != 2 || se != 0 {
		t.Errorf("Ratio = %v ± %v, want 2 ± 0", r, se)
	}
	r, se = Ratio([]float64{9, 11}, []float64{5, 5})
	if r != 2 || !(se > 0) {
		t.Errorf("Ratio = %v ± %v, want 2 ± something", r, se)
	}
}

func TestTarget(t *testing.T) {
	if !AtMost(1).Met(1) || AtMost(1).Met(1.01) || !AtLeast(5).Met(6) || AtLeast(5).Met(4) {
		t.Error("targets misjudged")
	}
	if AtMost(1).Met(math.NaN()) || (Target{}).Met(0) {
		t.Error("NaN or no target met")
	}
}

func TestTable(t *testing.T) {
	var b strings.Builder
	missed, err := Table(&b, []Figure{
		{Name: "follow ready", Unit: "s", Samples: []float64{0.5, 0.7, 0.6}, Target: AtMost(1)},
		{Name: "agent VmHWM", Unit: "MiB", Samples: []float64{70, 71}, Target: AtMost(64)},
		{Name: "appearing", Unit: "ms", Target: AtMost(100)},
		{Name: "info", Unit: "s", Samples: []float64{2}},
	})
	if err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if missed != 2 {
		t.Errorf("missed %d, want 2 (the VmHWM and the unmeasured)\n%s", missed, out)
	}
	for _, want := range []string{"follow ready", "0.6 s", "0.5 .. 0.7", "≤ 1 s", "yes", "70.5 MiB", "no", "not measured"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 5 {
		t.Errorf("%d lines, want a header and 4 rows:\n%s", len(lines), out)
	}
}

func TestQuantile(t *testing.T) {
	xs := []float64{}
	for i := 100; i >= 1; i-- {
		xs = append(xs, float64(i))
	}
	for _, tc := range []struct{ q, want float64 }{{0.5, 50}, {0.99, 99}, {1, 100}, {0, 1}} {
		if got := Quantile(xs, tc.q); got != tc.want {
			t.Errorf("Quantile(1..100, %v) = %v, want %v", tc.q, got, tc.want)
		}
	}
	if !math.IsNaN(Quantile(nil, 0.5)) {
		t.Error("Quantile(nil) is not NaN")
	}
}

func TestFigureOfMax(t *testing.T) {
	// Memory held to a limit in every run: the largest sample is judged, not the median.
	f := Figure{Name: "VmRSS", Unit: "MiB", Samples: []float64{40, 70, 41}, Target: AtMost(64), Of: OfMax}
	if v := f.Value(); v != 70 {
		t.Errorf("Value = %v, want 70 (the largest)", v)
	}
	r := f.Row()
	if r[1] != "max 70.0 MiB" || r[5] != "no" {
		t.Errorf("Row = %q, want max 70.0 MiB judged no", r)
	}
	f.Of = OfMedian
	if r := f.Row(); r[1] != "41.0 MiB" || r[5] != "yes" {
		t.Errorf("median Row = %q, want 41.0 MiB judged yes", r)
	}
	f.Of, f.Samples = OfMax, nil
	if v := f.Value(); !math.IsNaN(v) {
		t.Errorf("Value of none = %v, want NaN", v)
	}
	if r := f.Row(); r[5] != "not measured" {
		t.Errorf("Row of none: met %q, want not measured", r[5])
	}
}

func TestStatusMiB(t *testing.T) {
	status := []byte("Name:\tpathtrace\nVmPeak:\t 1441280 kB\nVmHWM:\t   52224 kB\nVmRSS:\t   40960 kB\n")
	if v, err := StatusMiB(status, "VmHWM"); err != nil || v != 51 {
		t.Errorf("VmHWM = %v, %v; want 51", v, err)
	}
	if v, err := StatusMiB(status, "VmRSS"); err != nil || v != 40 {
		t.Errorf("VmRSS = %v, %v; want 40", v, err)
	}
	if _, err := StatusMiB(status, "VmSwap"); err == nil {
		t.Error("no error for a field not there")
	}
	if _, err := StatusMiB([]byte("VmHWM:\tlots kB\n"), "VmHWM"); err == nil {
		t.Error("no error for a value that is no number")
	}
}
