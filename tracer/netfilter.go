package tracer

import (
	"errors"
	"fmt"
	"math"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/pathtrace/pathtrace/decode"
)

// Netfilter hook modes.
const (
	NFAuto   = "auto"   // netfilter links, else a kprobe on nf_hook_slow, else none
	NFLink   = "link"   // BPF netfilter links (6.4+)
	NFKprobe = "kprobe" // kprobe on nf_hook_slow
	NFNone   = "none"
)

// Priorities of the netfilter links: as early and as late as the kernel allows
// (NF_IP_PRI_FIRST and NF_IP_PRI_LAST themselves are reserved).
const (
	nfPrioFirst = math.MinInt32 + 1
	nfPrioLast  = math.MaxInt32 - 1
)

// ctLayout is where struct nf_conn keeps what the programs read, from the kernel's BTF.
type ctLayout struct {
	ok                           bool
	offTuple, step, status, mark uint32
	why                          string // when !ok
}

// conntrackLayout finds struct nf_conn in vmlinux or, when conntrack is a module, in the
// module's BTF, and checks that struct nf_conntrack_tuple is laid out as the programs
// expect.
func conntrackLayout(kspec *btf.Spec) ctLayout {
	conn, why := nfConnStruct(kspec)
	if conn == nil {
		return ctLayout{why: why}
	}
	member := func(s *btf.Struct, name string) (btf.Member, bool) {
		for _, m := range s.Members {
			if m.Name == name {
				return m, true
			}
		}
		return btf.Member{}, false
	}
	th, ok1 := member(conn, "tuplehash")
	st, ok2 := member(conn, "status")
	if !ok1 || !ok2 {
		return ctLayout{why: "struct nf_conn has no tuplehash or status"}
	}
	arr, ok := th.Type.(*btf.Array)
	if !ok {
		return ctLayout{why: "nf_conn.tuplehash is not an array"}
	}
	hash, ok := btf.UnderlyingType(arr.Type).(*btf.Struct)
	if !ok {
		return ctLayout{why: "nf_conntrack_tuple_hash is not a struct"}
	}
	tm, ok := member(hash, "tuple")
	if !ok {
		return ctLayout{why: "nf_conntrack_tuple_hash has no tuple"}
	}
	tuple, ok := btf.UnderlyingType(tm.Type).(*btf.Struct)
	if !ok || tuple.Size != 40 {
		return ctLayout{why: "struct nf_conntrack_tuple is not the 40 bytes the programs read"}
	}
	if src, ok := member(tuple, "src"); !ok || src.Offset.Bytes() != 0 {
		return ctLayout{why: "nf_conntrack_tuple.src moved"}
	}
	if dst, ok := member(tuple, "dst"); !ok || dst.Offset.Bytes() != 20 {
		return ctLayout{why: "nf_conntrack_tuple.dst moved"}
	}
	l := ctLayout{ok: true, offTuple: th.Offset.Bytes() + tm.Offset.Bytes(), step: hash.Size, status: st.Offset.Bytes()}
	if m, ok := member(conn, "mark"); ok {
		l.mark = m.Offset.Bytes()
	}
	return l
}

// nfConnStruct finds struct nf_conn in vmlinux's BTF or, when conntrack is a module,
// in the module's; else it says why not.
func nfConnStruct(kspec *btf.Spec) (*btf.Struct, string) {
	var conn *btf.Struct
	if err := kspec.TypeByName("nf_conn", &conn); err == nil {
		return conn, ""
	}
	mspec, err := btf.LoadKernelModuleSpec("nf_conntrack")
	if err != nil {
		return nil, "struct nf_conn is in neither vmlinux's nor nf_conntrack's BTF (conntrack not loaded?)"
	}
	if err := mspec.TypeByName("nf_conn", &conn); err != nil {
		return nil, "struct nf_conn not found in nf_conntrack's BTF"
	}
	return conn, ""
}

type nfProgs struct {
	First *ebpf.Program `ebpf:"nf_first"`
	Last  *ebpf.Program `ebpf:"nf_last"`
}

type kprobeProgs struct {
	Entry *ebpf.Program `ebpf:"kp_nf_hook_slow"`
}

// attachNF puts programs on the netfilter hooks of the traced namespace.
func (t *Tracer) attachNF(kspec *btf.Spec) error {
	mode := t.cfg.NFHook
	if mode == NFNone {
		t.mode.NF = NFNone
		return nil
	}
	spec, err := t.spec()
	if err != nil {
		return err
	}
	opts := &ebpf.CollectionOptions{MapReplacements: t.replacements(), Programs: ebpf.ProgramOptions{KernelTypes: kspec}}
	var linkErr error
	if mode == NFAuto || mode == NFLink {
		// A kernel without the program type (before 6.4) is said so, not as a load
		// the verifier refused.
		if err := features.HaveProgramType(ebpf.Netfilter); err != nil {
			linkErr = fmt.Errorf("this kernel has no BPF netfilter programs (Linux 6.4+): %w", err)
		} else {
			linkErr = t.attachNFLinks(spec, opts)
		}
		if linkErr == nil {
			t.mode.NF = NFLink
			return nil
		}
		if mode == NFLink {
			return linkErr
		}
	}
	kpErr := t.attachNFKprobe(spec, opts)
	if kpErr == nil {
		t.mode.NF = NFKprobe
		if linkErr != nil {
			t.mode.Notes = append(t.mode.Notes, fmt.Sprintf("netfilter links unavailable (%s): a kprobe on nf_hook_slow sees each hook on entry only", firstLine(linkErr)))
		}
		return nil
	}
	if mode == NFKprobe {
		return kpErr
	}
	t.mode.NF = "unavailable"
	t.mode.Notes = append(t.mode.Notes, fmt.Sprintf("netfilter hooks not traced: netfilter links: %s; kprobe: %s", firstLine(linkErr), firstLine(kpErr)))
	return nil
}

func (t *Tracer) attachNFLinks(spec *ebpf.CollectionSpec, opts *ebpf.CollectionOptions) error {
	var p nfProgs
	if err := spec.LoadAndAssign(&p, opts); err != nil {
		return loadError("load netfilter programs", err)
	}
	t.progs = append(t.progs, p.First, p.Last)
	t.nfProgs = p
	return t.linkNF()
}

// linkNF attaches the loaded netfilter programs to every hook, or none.
func (t *Tracer) linkNF() error {
	p := t.nfProgs
	var made []detacher
	for _, pf := range []struct {
		fam  link.NetfilterProtocolFamily
		name string
	}{{link.NetfilterProtoIPv4, "ipv4"}, {link.NetfilterProtoIPv6, "ipv6"}} {
		for hook := link.NetfilterInetHook(0); hook <= link.NetfilterInetPostRouting; hook++ {
			for _, at := range []struct {
				prog *ebpf.Program
				prio int32
				name string
			}{{p.First, nfPrioFirst, "first"}, {p.Last, nfPrioLast, "last"}} {
				var l link.Link
				err := t.ns.do(func() error {
					// The kernel refuses a BPF hook at a priority another hook holds
					// (EBUSY): IPv6 conntrack confirms at INPUT on NF_IP6_PRI_LAST-1, ours
					// "last". The next priority inward is as good.
					prio := at.prio
					for try := 0; ; try++ {
						var err error
						l, err = link.AttachNetfilter(link.NetfilterOptions{Program: at.prog, ProtocolFamily: pf.fam, Hook: hook, Priority: prio})
						if !errors.Is(err, unix.EBUSY) || try == 8 {
							return err
						}
						if prio > 0 {
							prio--
						} else {
							prio++
						}
					}
				})
				if err != nil {
					for _, a := range made {
						a.detach()
					}
					if errors.Is(err, ebpf.ErrNotSupported) {
						return fmt.Errorf("attach netfilter link: %w (needs 6.4)", err)
					}
					return fmt.Errorf("attach netfilter link %s %s %s: %w", pf.name, decode.HookName(uint8(hook)), at.name, err)
				}
				made = append(made, &tcxAttachment{l: l, name: fmt.Sprintf("netfilter %s %s %s", pf.name, decode.HookName(uint8(hook)), at.name)})
			}
		}
	}
	t.nfAttach = made
	return nil
}

// SetNetfilter attaches the netfilter programs (on) or takes them off every hook (off),
// keeping them loaded. The agent keeps them off while nobody follows: they serve only
// followed flows, and each costs every packet a run at every hook.
func (t *Tracer) SetNetfilter(on bool) error {
	if on == (len(t.nfAttach) > 0) || t.mode.NF == NFNone || t.mode.NF == "unavailable" {
		return nil
	}
	if !on {
		var errs []error
		for _, a := range t.nfAttach {
			if err := a.detach(); err != nil {
				errs = append(errs, err)
			}
		}
		t.nfAttach = nil
		return errors.Join(errs...)
	}
	if t.mode.NF == NFKprobe {
		return t.kprobeNF()
	}
	return t.linkNF()
}

func (t *Tracer) attachNFKprobe(spec *ebpf.CollectionSpec, opts *ebpf.CollectionOptions) error {
	var p kprobeProgs
	if err := spec.LoadAndAssign(&p, opts); err != nil {
		return loadError("load kprobe program", err)
	}
	t.progs = append(t.progs, p.Entry)
	t.kpProg = p.Entry
	return t.kprobeNF()
}

func (t *Tracer) kprobeNF() error {
	l, err := link.Kprobe("nf_hook_slow", t.kpProg, nil)
	if err != nil {
		return fmt.Errorf("attach kprobe nf_hook_slow: %w", err)
	}
	t.nfAttach = []detacher{&tcxAttachment{l: l, name: "kprobe nf_hook_slow"}}
	return nil
}
