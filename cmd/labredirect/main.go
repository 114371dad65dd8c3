package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/spf13/pflag"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// bpffsRoot is where attach pins tcx links: bpffsRoot/NS/DEV.
const (
	bpffs      = "/sys/fs/bpf"
	bpffsRoot  = bpffs + "/labredirect"
	filterName = "labredirect"
	// Cilium's legacy tc filters sit at priority 1, handle 1.
	filterPrio   = 1
	filterHandle = 1
)

const usage = `Usage:
  labredirect attach --netns NS --dev DEV [--pod IP=VETH ...] [--mode auto|tcx|clsact]
  labredirect detach --netns NS --dev DEV
  labredirect status --netns NS --dev DEV
`

func main() {
	// Every command works inside one network namespace: the goroutine stays on
	// this thread, which alone enters it.
	runtime.LockOSThread()
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// config is one command line.
type config struct {
	cmd, netns, dev, mode string
	pods                  []string
}

func parse(args []string, stderr io.Writer) (config, error) {
	var c config
	if len(args) == 0 {
		return c, errors.New("missing command")
	}
	c.cmd = args[0]
	switch c.cmd {
	case "attach", "detach", "status":
	default:
		return c, fmt.Errorf("unknown command %q", c.cmd)
	}
	fs := pflag.NewFlagSet("labredirect "+c.cmd, pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.netns, "netns", "", "network namespace (a name under /run/netns)")
	fs.StringVar(&c.dev, "dev", "", "device whose ingress gets the program (the tunnel)")
	if c.cmd == "attach" {
		fs.StringArrayVar(&c.pods, "pod", nil, "IP=VETH: packets to IP go to the pod behind host veth VETH (repeatable)")
		fs.StringVar(&c.mode, "mode", "auto", "tcx, clsact, or auto: tcx where the kernel has it (>= 6.6), else clsact")
	}
	if err := fs.Parse(args[1:]); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if c.netns == "" || c.dev == "" {
		return c, errors.New("--netns and --dev are required")
	}
	if strings.ContainsAny(c.netns+c.dev, "/") {
		return c, errors.New("--netns and --dev are names, without '/'")
	}
	switch c.mode {
	case "", "auto", "tcx", "clsact":
	default:
		return c, fmt.Errorf("--mode %q: want auto, tcx or clsact", c.mode)
	}
	return c, nil
}

func run(args []string, stdout, stderr io.Writer) int {
	c, err := parse(args, stderr)
	if err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fmt.Fprint(stdout, usage)
			return 0
		}
		fmt.Fprintf(stderr, "labredirect: %v\n%s", err, usage)
		return 2
	}
	switch c.cmd {
	case "attach":
		err = attach(c, stdout)
	case "detach":
		err = detach(c, stdout)
	case "status":
		var on bool
		on, err = status(c, stdout)
		if err == nil && !on {
			return 1
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "labredirect %s: %v\n", c.cmd, err)
		return 1
	}
	return 0
}

// pinPath is bpffsRoot/NS/DEV, with the dots of DEV (flannel.1) as '_': bpffs refuses
// names with a dot.
func pinPath(c config) string {
	return filepath.Join(bpffsRoot, strings.ReplaceAll(c.netns, ".", "_"), strings.ReplaceAll(c.dev, ".", "_"))
}

// enter moves this thread into the namespace.
func enter(name string) error {
	h, err := netns.GetFromName(name)
	if err != nil {
		return fmt.Errorf("open network namespace %s: %w", name, err)
	}
	defer h.Close()
	if err := netns.Set(h); err != nil {
		return fmt.Errorf("enter network namespace %s: %w (run as root)", name, err)
	}
	return nil
}

// ensureBPFFS mounts bpffs on /sys/fs/bpf when nothing is mounted there.
func ensureBPFFS() error {
	var st unix.Statfs_t
	if err := unix.Statfs(bpffs, &st); err == nil && st.Type == unix.BPF_FS_MAGIC {
		return nil
	}
	if err := unix.Mount("bpf", bpffs, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mount bpffs on %s: %w", bpffs, err)
	}
	return nil
}

// podEntries parses IP=VETH into map keys (IPv4 mapped into IPv6) and ifindexes.
func podEntries(pods []string) (map[[16]byte]uint32, error) {
	out := make(map[[16]byte]uint32, len(pods))
	for _, p := range pods {
		ipStr, veth, ok := strings.Cut(p, "=")
		if !ok {
			return nil, fmt.Errorf("--pod %q: want IP=VETH", p)
		}
		ip, err := netip.ParseAddr(ipStr)
		if err != nil {
			return nil, fmt.Errorf("--pod %q: %w", p, err)
		}
		ifc, err := net.InterfaceByName(veth)
		if err != nil {
			return nil, fmt.Errorf("--pod %q: host veth %s: %w", p, veth, err)
		}
		out[ip.As16()] = uint32(ifc.Index)
	}
	return out, nil
}

func attach(c config, stdout io.Writer) error {
	if err := enter(c.netns); err != nil {
		return err
	}
	dev, err := net.InterfaceByName(c.dev)
	if err != nil {
		return fmt.Errorf("device %s in %s: %w", c.dev, c.netns, err)
	}
	pods, err := podEntries(c.pods)
	if err != nil {
		return err
	}
	if err := ensureBPFFS(); err != nil {
		return err
	}
	var objs RedirectObjects
	if err := LoadRedirectObjects(&objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return fmt.Errorf("load the program: %+v", ve)
		}
		return fmt.Errorf("load the program: %w (run as root or grant CAP_BPF, CAP_NET_ADMIN)", err)
	}
	defer objs.Close()
	for k, idx := range pods {
		if err := objs.Pods.Put(k, idx); err != nil {
			return fmt.Errorf("fill the pod map: %w", err)
		}
	}
	mode := c.mode
	if mode == "" || mode == "auto" {
		mode = "tcx"
	}
	if mode == "tcx" {
		err = attachTCX(c, dev, objs.FromOverlay)
		if errors.Is(err, ebpf.ErrNotSupported) && c.mode != "tcx" {
			mode = "clsact" // before 6.6, as Cilium does
		} else if err != nil {
			return err
		}
	}
	if mode == "clsact" {
		if err := attachClsact(c, dev, objs.FromOverlay); err != nil {
			return err
		}
	}
	where := fmt.Sprintf("clsact ingress filter prio %d handle %d", filterPrio, filterHandle)
	if mode == "tcx" {
		where = "tcx ingress, link pinned at " + pinPath(c)
	}
	fmt.Fprintf(stdout, "labredirect: %s/%s (ifindex %d): attached as %s, %d pod addresses\n",
		c.netns, c.dev, dev.Index, where, len(pods))
	return nil
}

// attachTCX attaches (or, when a link is pinned already, atomically replaces) the
// program as a tcx ingress link and pins it, so that it outlives this process.
// A legacy filter of ours is removed first: one of them at a time.
func attachTCX(c config, dev *net.Interface, prog *ebpf.Program) error {
	pin := pinPath(c)
	if l, err := link.LoadPinnedLink(pin, nil); err == nil {
		defer l.Close()
		if err := l.Update(prog); err != nil {
			return fmt.Errorf("replace the program of the tcx link %s: %w", pin, err)
		}
		return nil
	}
	l, err := link.AttachTCX(link.TCXOptions{Interface: dev.Index, Program: prog, Attach: ebpf.AttachTCXIngress})
	if err != nil {
		return fmt.Errorf("attach tcx ingress on %s (ifindex %d) in %s: %w", c.dev, dev.Index, c.netns, err)
	}
	defer l.Close()
	if err := os.MkdirAll(filepath.Dir(pin), 0o700); err != nil {
		return fmt.Errorf("pin directory: %w", err)
	}
	if err := l.Pin(pin); err != nil {
		return fmt.Errorf("pin the tcx link at %s: %w", pin, err)
	}
	if _, err := delFilter(dev.Index); err != nil {
		return err
	}
	return nil
}

// attachClsact adds a clsact qdisc when there is none and puts the program in a
// direct-action cls_bpf filter at priority 1 on ingress (replacing ours if present).
// A tcx link of ours is removed first.
func attachClsact(c config, dev *net.Interface, prog *ebpf.Program) error {
	if _, err := unpin(c); err != nil {
		return err
	}
	qdisc := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: dev.Index, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
		QdiscType:  "clsact",
	}
	if err := netlink.QdiscAdd(qdisc); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add clsact qdisc on %s in %s: %w", c.dev, c.netns, err)
	}
	f := &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: dev.Index,
			Parent:    netlink.HANDLE_MIN_INGRESS,
			Handle:    filterHandle,
			Priority:  filterPrio,
			Protocol:  unix.ETH_P_ALL,
		},
		Fd:           prog.FD(),
		Name:         filterName,
		DirectAction: true,
	}
	if err := netlink.FilterReplace(f); err != nil {
		return fmt.Errorf("add cls_bpf filter on %s ingress in %s: %w", c.dev, c.netns, err)
	}
	return nil
}

// ourFilter finds labredirect's cls_bpf filter on the ingress of ifindex.
func ourFilter(ifindex int) (*netlink.BpfFilter, error) {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return nil, err
	}
	fs, err := netlink.FilterList(l, netlink.HANDLE_MIN_INGRESS)
	if err != nil {
		if errors.Is(err, unix.EINVAL) { // no clsact or ingress qdisc
			return nil, nil
		}
		return nil, fmt.Errorf("list ingress filters: %w", err)
	}
	for _, f := range fs {
		if bf, ok := f.(*netlink.BpfFilter); ok && bf.Name == filterName {
			return bf, nil
		}
	}
	return nil, nil
}

// delFilter deletes labredirect's filter (true when there was one). The clsact
// qdisc stays: other programs may hang on it.
func delFilter(ifindex int) (bool, error) {
	f, err := ourFilter(ifindex)
	if err != nil || f == nil {
		return false, err
	}
	if err := netlink.FilterDel(f); err != nil {
		return false, fmt.Errorf("delete the cls_bpf filter: %w", err)
	}
	return true, nil
}

// unpin removes the pinned tcx link (detaching it) and the directories left empty.
func unpin(c config) (bool, error) {
	pin := pinPath(c)
	l, err := link.LoadPinnedLink(pin, nil)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		// Not a link (or unreadable): remove the file anyway.
		if rmErr := os.Remove(pin); rmErr != nil {
			return false, fmt.Errorf("remove %s: %w", pin, err)
		}
	} else {
		uerr := l.Unpin()
		l.Close()
		if uerr != nil {
			return false, fmt.Errorf("unpin %s: %w", pin, uerr)
		}
	}
	_ = os.Remove(filepath.Dir(pin))
	_ = os.Remove(bpffsRoot)
	return true, nil
}

func detach(c config, stdout io.Writer) error {
	removed, err := unpin(c)
	if err != nil {
		return err
	}
	if removed {
		fmt.Fprintf(stdout, "labredirect: %s/%s: tcx link unpinned and detached\n", c.netns, c.dev)
	}
	if err := enter(c.netns); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil // the namespace is gone, and its filters with it
		}
		return err
	}
	dev, err := net.InterfaceByName(c.dev)
	if err != nil {
		return nil // the device is gone, and its filters with it
	}
	deleted, err := delFilter(dev.Index)
	if err != nil {
		return err
	}
	if deleted {
		fmt.Fprintf(stdout, "labredirect: %s/%s: cls_bpf filter deleted\n", c.netns, c.dev)
	}
	if !removed && !deleted {
		fmt.Fprintf(stdout, "labredirect: %s/%s: not attached\n", c.netns, c.dev)
	}
	return nil
}

// status prints how the program is attached and its counters; false when it is not.
func status(c config, stdout io.Writer) (bool, error) {
	var progID ebpf.ProgramID
	mode := ""
	if l, err := link.LoadPinnedLink(pinPath(c), nil); err == nil {
		info, ierr := l.Info()
		l.Close()
		if ierr != nil {
			return false, fmt.Errorf("tcx link info: %w", ierr)
		}
		progID, mode = info.Program, "tcx (pinned at "+pinPath(c)+")"
	} else {
		if err := enter(c.netns); err != nil {
			return false, err
		}
		dev, err := net.InterfaceByName(c.dev)
		if err != nil {
			return false, fmt.Errorf("device %s in %s: %w", c.dev, c.netns, err)
		}
		f, err := ourFilter(dev.Index)
		if err != nil {
			return false, err
		}
		if f == nil {
			fmt.Fprintf(stdout, "%s/%s: not attached\n", c.netns, c.dev)
			return false, nil
		}
		progID, mode = ebpf.ProgramID(f.Id), fmt.Sprintf("clsact ingress filter prio %d", f.Priority)
	}
	counts, err := counters(progID)
	if err != nil {
		return true, err
	}
	fmt.Fprintf(stdout, "%s/%s: %s, prog id %d, redirected_peer=%d passed=%d\n", c.netns, c.dev, mode, progID,
		counts[RedirectCounterCOUNTER_REDIRECT_PEER], counts[RedirectCounterCOUNTER_PASS])
	return true, nil
}

// counters sums the per-CPU counters of the program's counters map.
func counters(id ebpf.ProgramID) (map[RedirectCounter]uint64, error) {
	prog, err := ebpf.NewProgramFromID(id)
	if err != nil {
		return nil, fmt.Errorf("program %d: %w", id, err)
	}
	defer prog.Close()
	info, err := prog.Info()
	if err != nil {
		return nil, err
	}
	ids, _ := info.MapIDs()
	for _, mid := range ids {
		m, err := ebpf.NewMapFromID(mid)
		if err != nil {
			continue
		}
		minfo, err := m.Info()
		if err != nil || minfo.Name != "counters" {
			m.Close()
			continue
		}
		out := map[RedirectCounter]uint64{}
		for c := RedirectCounter(0); c < RedirectCounterCOUNTER_MAX; c++ {
			var per []uint64
			if err := m.Lookup(uint32(c), &per); err != nil {
				m.Close()
				return nil, fmt.Errorf("read counter %d: %w", c, err)
			}
			for _, v := range per {
				out[c] += v
			}
		}
		m.Close()
		return out, nil
	}
	return nil, fmt.Errorf("program %d has no counters map", id)
}
