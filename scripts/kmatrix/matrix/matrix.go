package matrix

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/pathtrace/pathtrace/tracer"
)

// Column is one capability of the matrix: the doctor part that names its mode (if any)
// and the tests that prove it on a kernel.
type Column struct {
	Name  string
	Part  string // doctor's part whose mode is shown, "" for none
	Tests []string
}

// Columns are the matrix's capabilities, in order, with the tests that prove each.
var Columns = []Column{
	{"tc attach", "tc hooks", []string{"TestCrossNodeTCP", "TestSignalCleanup"}},
	{"drop hook", "drop hook", []string{"TestBlackholeDrop", "TestDropInsidePod"}},
	{"drop reasons", "", []string{"TestPolicyDrop", "TestRPFilterDrop"}},
	{"netfilter", "netfilter hooks", []string{"TestCrossNodeTCP", "TestPolicyDrop"}},
	{"conntrack", "", []string{"TestCrossNodeTCP"}},
	{"NAT following", "", []string{"TestVIPNAT", "TestFollowBackendThroughVIP"}},
	{"agent", "", []string{"TestAgentMetricsExact"}},
	{"capture", "", []string{"TestFollowPcap"}},
	{"cross-node join", "", []string{"TestCrossNodeJoin"}},
	{"conntrack full", "", []string{"TestConntrackFull"}},
	{"diagnosis", "", []string{"TestDiagnoseMTU", "TestDiagnoseHairpin", "TestDiagnoseNeighbour", "TestDiagnoseCommand",
		"TestSlowTunnel", "TestOneWayWithoutMasquerade"}},
	{"doctor, no BTF", "", []string{"TestDoctorHost", "TestKernelBTF"}},
	// The flannel dual-stack and calico-vxlan layouts run in make test on the host;
	// measured once in the VMs (README). These two need modules the host may lack.
	{"calico-ipip", "", []string{"TestLayoutCalicoIPIP"}},
	{"geneve (cilium-like)", "", []string{"TestLayoutGeneve"}},
}

// vmOnly are the tests that may skip outside the matrix's VMs, and why: those that
// change what a whole machine shares, and the layouts whose tunnel module the host's
// kernel may lack (the Debian kernels have them).
var vmOnly = map[string]string{
	"TestConntrackFull":    "VM only",
	"TestLayoutCalicoIPIP": "no ipip here",
	"TestLayoutGeneve":     "no geneve here",
}

// Tests lists every test the matrix needs, for -test.run.
func Tests() []string {
	var all []string
	for _, c := range Columns {
		for _, t := range c.Tests {
			if !slices.Contains(all, t) {
				all = append(all, t)
			}
		}
	}
	return all
}

// Kernel is one kernel's run.
type Kernel struct {
	Name    string // the directory's base name (the suite)
	Release string
	Report  *tracer.Report
	Results map[string]string // test → PASS, FAIL, SKIP
	Secs    string
	Err     string // why the run left nothing to read
	// VM: the run was in a VM of the matrix, whose root namespace is its own. Elsewhere
	// (the host) a test that needs that (TestConntrackFull) skips, and may.
	VM bool
}

var resultRE = regexp.MustCompile(`^--- (PASS|FAIL|SKIP): (Test\w+) `)

// ParseResults reads the top-level verdicts of `go test -v` output.
func ParseResults(text string) map[string]string {
	res := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if m := resultRE.FindStringSubmatch(sc.Text()); m != nil {
			res[m[2]] = m[1]
		}
	}
	return res
}

// Read loads a kernel's directory.
func Read(dir string) Kernel {
	k := Kernel{Name: filepath.Base(dir), Results: map[string]string{}}
	_, err := os.Stat(filepath.Join(dir, "vm"))
	k.VM = err == nil
	if b, err := os.ReadFile(filepath.Join(dir, "doctor.json")); err == nil {
		var r tracer.Report
		if err := json.Unmarshal(b, &r); err == nil {
			k.Report = &r
			k.Release = r.Features.Kernel
		} else {
			k.Err = "doctor.json: " + err.Error()
		}
	} else {
		k.Err = "no doctor report (the VM did not boot or the binary did not run)"
	}
	if b, err := os.ReadFile(filepath.Join(dir, "tests.txt")); err == nil {
		k.Results = ParseResults(string(b))
	}
	if b, err := os.ReadFile(filepath.Join(dir, "secs")); err == nil {
		k.Secs = strings.TrimSpace(string(b))
	}
	return k
}

// cell is a column's entry for a kernel: the mode, and pass or FAIL.
func (k Kernel) cell(c Column) (string, bool) {
	verdict, ok := "pass", true
	for _, t := range c.Tests {
		switch k.Results[t] {
		case "PASS":
		case "SKIP":
			verdict, ok = "SKIP", false
			if why, may := vmOnly[t]; !k.VM && may {
				verdict, ok = why, true
			}
		case "FAIL":
			verdict, ok = "FAIL", false
		default:
			verdict, ok = "NOT RUN", false
		}
		if !ok {
			break
		}
	}
	mode := ""
	if k.Report != nil {
		switch {
		case c.Part != "":
			for _, p := range k.Report.Parts {
				if p.Name == c.Part {
					mode = p.Mode
				}
			}
			mode = strings.TrimSuffix(mode, " (no drop reasons)")
		case c.Name == "drop reasons":
			mode = "inferred"
			if k.Report.Features.KfreeSkbReason && k.Report.Features.DropReasons > 0 {
				mode = fmt.Sprintf("kernel (%d)", k.Report.Features.DropReasons)
			}
		}
	}
	if mode == "" {
		return verdict, ok
	}
	return mode + " " + verdict, ok
}

// Print writes the matrix and the verifier counts; ok is false when any test of any
// kernel did not pass.
func Print(ks []Kernel) (string, bool) {
	var b strings.Builder
	ok := true
	b.WriteString("| kernel |")
	for _, c := range Columns {
		b.WriteString(" " + c.Name + " |")
	}
	b.WriteString(" time |\n|---|")
	for range Columns {
		b.WriteString("---|")
	}
	b.WriteString("---|\n")
	for _, k := range ks {
		name := k.Release
		if name == "" {
			name = k.Name
		}
		fmt.Fprintf(&b, "| %s |", name)
		if k.Err != "" {
			ok = false
		}
		for _, c := range Columns {
			s, good := k.cell(c)
			ok = ok && good
			b.WriteString(" " + s + " |")
		}
		secs := k.Secs
		if secs != "" {
			secs += " s"
		}
		fmt.Fprintf(&b, " %s |\n", secs)
	}
	for _, k := range ks {
		if k.Err != "" {
			fmt.Fprintf(&b, "\n%s: %s\n", k.Name, k.Err)
		}
		var failed []string
		for _, t := range Tests() {
			switch r := k.Results[t]; r {
			case "PASS":
			case "SKIP":
				if _, may := vmOnly[t]; k.VM || !may {
					failed = append(failed, t+" "+r)
				}
			case "":
				failed = append(failed, t+" NOT RUN")
			default:
				failed = append(failed, t+" "+r)
			}
		}
		if len(failed) > 0 {
			fmt.Fprintf(&b, "\n%s: %s\n", k.Name, strings.Join(failed, ", "))
		}
	}
	b.WriteString("\n" + Verifier(ks))
	return b.String(), ok
}

// Verifier is a table of each program's instructions processed by each kernel's
// verifier: the most over the setups (follow, agent, whole packets).
func Verifier(ks []Kernel) string {
	var progs []string
	counts := map[string]map[string]string{}
	for _, k := range ks {
		if k.Report == nil {
			continue
		}
		best := map[string]tracer.ProgramCheck{}
		for _, c := range k.Report.Programs {
			if !slices.Contains(progs, c.Program) {
				progs = append(progs, c.Program)
			}
			if cur, seen := best[c.Program]; !seen || worse(c, cur) {
				best[c.Program] = c
			}
		}
		counts[k.Name] = map[string]string{}
		for p, c := range best {
			counts[k.Name][p] = tracer.CheckCell(c, true)
		}
	}
	var b strings.Builder
	b.WriteString("verifier: instructions processed (the most of the follow, agent and whole-packet setups; limit " + strconv.Itoa(tracer.VerifierLimit) + ")\n\n| program |")
	for _, k := range ks {
		name := k.Release
		if name == "" {
			name = k.Name
		}
		b.WriteString(" " + name + " |")
	}
	b.WriteString("\n|---|")
	for range ks {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	for _, p := range progs {
		fmt.Fprintf(&b, "| %s |", p)
		for _, k := range ks {
			v := counts[k.Name][p]
			if v == "" {
				v = "-"
			}
			b.WriteString(" " + v + " |")
		}
		b.WriteString("\n")
	}
	return b.String()
}

// worse orders checks: a refusal before a load, then more instructions.
func worse(a, b tracer.ProgramCheck) bool {
	if a.Loaded != b.Loaded {
		return !a.Loaded && !a.Unsupported
	}
	return a.Insns > b.Insns
}
