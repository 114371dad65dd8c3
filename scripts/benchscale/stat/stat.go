package stat

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Median of xs; NaN for none.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// Quantile q (0..1) of xs, by the nearest rank; NaN for none.
func Quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// Mean and its standard error (the sample standard deviation over √n); the error is
// NaN for fewer than two values.
func Mean(xs []float64) (mean, stderr float64) {
	if len(xs) == 0 {
		return math.NaN(), math.NaN()
	}
	for _, x := range xs {
		mean += x
	}
	mean /= float64(len(xs))
	if len(xs) < 2 {
		return mean, math.NaN()
	}
	var ss float64
	for _, x := range xs {
		ss += (x - mean) * (x - mean)
	}
	return mean, math.Sqrt(ss/float64(len(xs)-1)) / math.Sqrt(float64(len(xs)))
}

// Ratio of two medians, a/b, and its standard error by propagation of the two means'
// relative errors (NaN when either has none).
func Ratio(a, b []float64) (ratio, stderr float64) {
	ma, mb := Median(a), Median(b)
	ratio = ma / mb
	ea, sa := Mean(a)
	eb, sb := Mean(b)
	return ratio, math.Abs(ratio) * math.Hypot(sa/ea, sb/eb)
}

// Target is what a figure is held to: at most Max, or at least Min (one of them).
type Target struct {
	Max, Min float64
	HasMax   bool
	HasMin   bool
}

// AtMost and AtLeast make targets.
func AtMost(v float64) Target  { return Target{Max: v, HasMax: true} }
func AtLeast(v float64) Target { return Target{Min: v, HasMin: true} }

// Met reports whether v meets the target; a value that is NaN meets none.
func (t Target) Met(v float64) bool {
	if math.IsNaN(v) {
		return false
	}
	if t.HasMax && v > t.Max {
		return false
	}
	if t.HasMin && v < t.Min {
		return false
	}
	return t.HasMax || t.HasMin
}

// Of is the statistic of a figure's samples that is shown and held to its target.
type Of int

const (
	OfMedian Of = iota // the median (the default): a typical run
	OfMax              // the largest sample: a peak, such as memory, that must stay under a limit in every run
)

// Figure is one row of a benchmark's table: a name, the samples, their unit, and the
// target its median (or, with Of: OfMax, its largest sample) is held to.
type Figure struct {
	Name    string
	Unit    string // "s", "ms", "MiB", ...
	Samples []float64
	Target  Target
	Of      Of
	Note    string
}

// Value is the figure's statistic of its samples (Of); NaN for none.
func (f Figure) Value() float64 {
	if f.Of == OfMax {
		if len(f.Samples) == 0 {
			return math.NaN()
		}
		return slices.Max(f.Samples)
	}
	return Median(f.Samples)
}

// Row is a figure as printed: median (or "max" and the largest, with OfMax), min and
// max of the samples, the target, and whether it is met.
func (f Figure) Row() []string {
	med := f.Value()
	lo, hi := math.NaN(), math.NaN()
	if len(f.Samples) > 0 {
		lo, hi = slices.Min(f.Samples), slices.Max(f.Samples)
	}
	target, met := "-", "-"
	switch {
	case f.Target.HasMax:
		target = "≤ " + num(f.Target.Max) + " " + f.Unit
	case f.Target.HasMin:
		target = "≥ " + num(f.Target.Min) + " " + f.Unit
	}
	if f.Target.HasMax || f.Target.HasMin {
		met = "no"
		if f.Target.Met(med) {
			met = "yes"
		}
	}
	if len(f.Samples) == 0 {
		met = "not measured"
	}
	value := num(med) + " " + f.Unit
	if f.Of == OfMax {
		value = "max " + value
	}
	return []string{f.Name, value, num(lo) + " .. " + num(hi), fmt.Sprint(len(f.Samples)), target, met, f.Note}
}

// num prints a figure with three significant digits or so.
func num(v float64) string {
	switch {
	case math.IsNaN(v):
		return "-"
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}

// Table writes the figures as a table with a header, columns padded; it returns how
// many figures missed their targets (those not measured count as missed).
func Table(w io.Writer, figs []Figure) (missed int, err error) {
	rows := [][]string{{"figure", "median", "min .. max", "runs", "target", "met", "note"}}
	for _, f := range figs {
		r := f.Row()
		if r[5] == "no" || r[5] == "not measured" {
			missed++
		}
		rows = append(rows, r)
	}
	width := make([]int, len(rows[0]))
	for _, r := range rows {
		for i, c := range r {
			width[i] = max(width[i], len([]rune(c)))
		}
	}
	var b strings.Builder
	for _, r := range rows {
		for i, c := range r {
			if i == len(r)-1 {
				b.WriteString(c)
				break
			}
			b.WriteString(c + strings.Repeat(" ", width[i]-len([]rune(c))+2))
		}
		b.WriteString("\n")
	}
	_, err = io.WriteString(w, strings.TrimRight(b.String(), " "))
	return missed, err
}

// StatusMiB reads a field in kB (VmHWM, VmRSS, ...) of a /proc/PID/status text, in MiB.
func StatusMiB(status []byte, field string) (float64, error) {
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			if err != nil {
				return 0, fmt.Errorf("%s: %w", field, err)
			}
			return float64(kb) / 1024, nil
		}
	}
	return 0, fmt.Errorf("no %s in the status", field)
}
