package tracer

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/rlimit"
)

// VerifierLimit is the verifier's budget of processed instructions per program
// (BPF_COMPLEXITY_LIMIT_INSNS, the same on every kernel since 5.2).
const VerifierLimit = 1000000

// ProgramCheck is one of pathtrace's BPF programs loaded against the running kernel in
// one setup, as the tracer would load it: whether the kernel took it and how many
// instructions its verifier processed to do so.
type ProgramCheck struct {
	Program string `json:"program"`
	Setup   string `json:"setup"` // follow, agent or full (follow with whole packets)
	Loaded  bool   `json:"loaded"`
	Insns   int    `json:"insns,omitempty"` // processed by the verifier; 0 when the kernel did not say
	// Unsupported: the kernel lacks the program type or attach point (not a verifier
	// rejection); the tracer falls back and says so.
	Unsupported bool   `json:"unsupported,omitempty"`
	Error       string `json:"error,omitempty"` // one line: why the kernel refused it
}

// Setups of CheckPrograms: the constants the tracer sets that change what the verifier
// explores.
var checkSetups = []struct {
	name string
	cfg  Config
}{
	{"follow", Config{SnapLen: 256}},
	{"agent", Config{Agent: true, SnapLen: 256, Sample: 64, DropRate: 100}},
	{"full", Config{SnapLen: 9216}},
}

// Programs of bpf/ and the setups they are loaded in: the retransmission program runs
// in the agent only.
func checkPrograms(setup string) []string {
	all := []string{"tc_ingress", "tc_egress", "tc_ingress_l3", "tc_egress_l3", "tc_ingress_tun", "kfree_skb_btf",
		"kfree_skb_raw", "kfree_skb_raw_noreason", "nf_first", "nf_last", "kp_nf_hook_slow"}
	if setup == "agent" {
		all = append(all, "tcp_retransmit")
	}
	return all
}

var processedRE = regexp.MustCompile(`processed (\d+) insns`)

// processedInsns reads the verifier's count from its log ("processed N insns").
func processedInsns(log string) int {
	m := processedRE.FindAllStringSubmatch(log, -1)
	if len(m) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(m[len(m)-1][1])
	return n
}

// CheckPrograms loads every program of pathtrace in every setup against the running
// kernel (or cfg.BTFPath's types), with the verifier's statistics, and unloads them.
// Nothing is attached. An error means the checks could not be made at all (no BTF, no
// privilege to create maps); a program the kernel refuses is a check with Error set.
func CheckPrograms(cfg Config) ([]ProgramCheck, error) {
	kspec, err := loadBTF(cfg.BTFPath)
	if err != nil {
		return nil, err
	}
	_ = rlimit.RemoveMemlock()
	ns, err := openNetns("")
	if err != nil {
		return nil, err
	}
	reasons, err := DropReasons(kspec)
	if err != nil {
		return nil, err
	}
	ct := conntrackLayout(kspec)
	var out []ProgramCheck
	for _, s := range checkSetups {
		c := s.cfg
		c.BTFPath = cfg.BTFPath
		if err := validateCheck(&c); err != nil {
			return nil, err
		}
		t := &Tracer{cfg: c, ns: ns, reasons: reasons, ct: ct}
		checks, err := t.checkSetup(s.name, kspec)
		if err != nil {
			return nil, err
		}
		out = append(out, checks...)
	}
	return out, nil
}

// validateCheck fills the defaults validate fills, without asking for selectors.
func validateCheck(c *Config) error {
	agent := c.Agent
	c.Agent = true // validate wants a selector otherwise
	err := validate(c)
	c.Agent = agent
	return err
}

func (t *Tracer) checkSetup(setup string, kspec *btf.Spec) ([]ProgramCheck, error) {
	spec, err := t.spec()
	if err != nil {
		return nil, err
	}
	// The maps once, shared by every program of the setup.
	if err := spec.LoadAndAssign(&t.maps, &ebpf.CollectionOptions{Programs: ebpf.ProgramOptions{KernelTypes: kspec}}); err != nil {
		return nil, loadError("create BPF maps", err)
	}
	defer t.maps.Close()
	var out []ProgramCheck
	for _, name := range checkPrograms(setup) {
		ps, ok := spec.Programs[name]
		if !ok {
			return nil, fmt.Errorf("program %s missing from the BPF object", name)
		}
		if why := t.notForThisKernel(name, kspec); why != "" {
			out = append(out, ProgramCheck{Program: name, Setup: setup, Unsupported: true, Error: why})
			continue
		}
		one := spec.Copy()
		one.Programs = map[string]*ebpf.ProgramSpec{name: ps.Copy()}
		c := ProgramCheck{Program: name, Setup: setup}
		coll, err := ebpf.NewCollectionWithOptions(one, ebpf.CollectionOptions{
			MapReplacements: t.replacements(),
			Programs:        ebpf.ProgramOptions{KernelTypes: kspec, LogLevel: ebpf.LogLevelStats},
		})
		if err == nil {
			c.Loaded = true
			p := coll.Programs[name]
			c.Insns = processedInsns(p.VerifierLog)
			if c.Insns == 0 {
				if info, err := p.Info(); err == nil {
					if n, ok := info.VerifiedInstructions(); ok {
						c.Insns = int(n)
					}
				}
			}
			coll.Close()
		} else {
			c.Error, c.Insns, c.Unsupported = summariseLoadError(err)
		}
		out = append(out, c)
	}
	return out, nil
}

// summariseLoadError makes one line of a load failure, with the verifier's count when
// its log has one, and tells a kernel that lacks the program's type or attach point
// from a verifier rejection.
func summariseLoadError(err error) (msg string, insns int, unsupported bool) {
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		log := strings.Join(ve.Log, "\n")
		insns = processedInsns(log)
		last := ""
		for i := len(ve.Log) - 1; i >= 0; i-- {
			l := strings.TrimSpace(ve.Log[i])
			if l != "" && !strings.HasPrefix(l, "processed ") && !strings.HasPrefix(l, "verification time") && !strings.HasPrefix(l, "stack depth") {
				last = l
				break
			}
		}
		if insns >= VerifierLimit {
			last = fmt.Sprintf("too complex: the verifier gave up after %d instructions (limit %d)", insns, VerifierLimit)
		}
		if last == "" {
			last = ve.Cause.Error()
		}
		return "verifier: " + last, insns, false
	}
	if errors.Is(err, ebpf.ErrNotSupported) {
		return firstLine(err), 0, true
	}
	return firstLine(err), 0, false
}

// ChecksText prints the checks as a table: a row per program, a column per setup.
func ChecksText(checks []ProgramCheck) string {
	var setups []string
	seen := map[string]bool{}
	rows := map[string]map[string]ProgramCheck{}
	var progs []string
	for _, c := range checks {
		if !seen[c.Setup] {
			seen[c.Setup] = true
			setups = append(setups, c.Setup)
		}
		if rows[c.Program] == nil {
			rows[c.Program] = map[string]ProgramCheck{}
			progs = append(progs, c.Program)
		}
		rows[c.Program][c.Setup] = c
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%-24s", "program")
	for _, s := range setups {
		fmt.Fprintf(&b, " %16s", s)
	}
	b.WriteString("   (instructions the verifier processed, limit 1000000)\n")
	var notes []string
	for _, p := range progs {
		fmt.Fprintf(&b, "%-24s", p)
		for _, s := range setups {
			c, ok := rows[p][s]
			fmt.Fprintf(&b, " %16s", CheckCell(c, ok))
			if ok && c.Error != "" {
				note := p + ": " + c.Error
				if !slices.Contains(notes, note) {
					notes = append(notes, note)
				}
			}
		}
		b.WriteString("\n")
	}
	sort.Strings(notes)
	for _, n := range notes {
		b.WriteString("  " + n + "\n")
	}
	return b.String()
}

// CheckCell is a check in a few characters: the count, "rejected", "unsupported".
func CheckCell(c ProgramCheck, ok bool) string {
	switch {
	case !ok:
		return "-"
	case c.Loaded && c.Insns > 0:
		return strconv.Itoa(c.Insns)
	case c.Loaded:
		return "loaded"
	case c.Unsupported:
		return "unsupported"
	case c.Insns > 0:
		return fmt.Sprintf("REJECTED@%d", c.Insns)
	default:
		return "REJECTED"
	}
}

// AddChecks puts the program checks in the report and corrects the parts they prove
// wrong: a part whose program the verifier refused does not run in that mode, whatever
// the kernel's features say.
func (r *Report) AddChecks(checks []ProgramCheck) {
	r.Programs = checks
	refused := func(prog string, setups ...string) string {
		for _, c := range checks {
			if c.Program != prog || c.Loaded || c.Unsupported {
				continue
			}
			for _, s := range setups {
				if c.Setup == s {
					return fmt.Sprintf("%s (%s): %s", prog, s, c.Error)
				}
			}
		}
		return ""
	}
	for i := range r.Parts {
		p := &r.Parts[i]
		var why string
		switch {
		case p.Name == "tc hooks":
			for _, prog := range []string{"tc_ingress", "tc_egress", "tc_ingress_l3", "tc_egress_l3", "tc_ingress_tun"} {
				if why = refused(prog, "follow", "agent", "full"); why != "" {
					break
				}
			}
		case p.Name == "netfilter hooks" && p.Mode == NFLink:
			why = refused("nf_first", "follow", "agent", "full")
		case p.Name == "netfilter hooks" && p.Mode == NFKprobe:
			why = refused("kp_nf_hook_slow", "follow", "agent", "full")
		case p.Name == "drop hook" && p.Mode == DropTPBTF:
			why = refused("kfree_skb_btf", "follow", "agent", "full")
		case p.Name == "drop hook":
			why = refused("kfree_skb_raw", "follow", "agent", "full") + refused("kfree_skb_raw_noreason", "follow", "agent", "full")
		}
		if why == "" {
			continue
		}
		p.OK = false
		p.Lost = strings.TrimPrefix(p.Lost+"; ", "; ") + "the verifier refused " + why
		if p.Name == "tc hooks" && r.Fatal == "" {
			r.Fatal = "the kernel's verifier refused the tc programs: " + why + ": report it with `pathtrace doctor --programs --json`"
		}
	}
}

// notForThisKernel says why the tracer would not load a program on this kernel, where
// it falls back to another instead: loading it anyway would only show a refusal that
// the fallback exists for.
func (t *Tracer) notForThisKernel(name string, kspec *btf.Spec) string {
	switch name {
	case "kfree_skb_btf", "kfree_skb_raw":
		if !kfreeSkbHasReason(kspec) {
			return "kfree_skb passes no drop reason on this kernel (5.17+): kfree_skb_raw_noreason serves"
		}
	case "nf_first", "nf_last":
		if err := features.HaveProgramType(ebpf.Netfilter); err != nil {
			return "no BPF netfilter programs (6.4+): " + firstLine(err)
		}
	}
	return ""
}
