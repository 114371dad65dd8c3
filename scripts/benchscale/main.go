// Command benchscale measures what a busy node costs pathtrace to start and stop: in
// a namespace of its own with N pod veths (250 by default, their peers in a second
// namespace, as pods' are), it times `pathtrace follow` from start to ready (every
// interface attached) and from SIGINT to exit, in tcx and clsact modes; the agent's
// time to ready, its peak resident memory (VmHWM) and exit; and, with the agent
// running, how long a new pod veth waits until pathtrace's program is on it (idle, with
// a ping flood across a traced veth, and in a burst of -new veths at once). It prints
// each figure with its target (package stat computes them) and exits 1 when it could
// not measure, not when a target is missed.
//
//	go run ./scripts/benchscale -pathtrace bin/pathtrace [-n 250] [-runs 5] [-new 20]
//
// Root only. The namespaces are named PREFIX-node and PREFIX-pods (-prefix, default
// ptsc) and removed at the end; a prefix in use is refused.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/pathtrace/pathtrace/scripts/benchscale/stat"
)

type bench struct {
	bin, prefix, work string
	n, runs, fresh    int
	// new pod veths' waits (ms) with a ping flood crossing a traced veth, and in a
	// burst of fresh veths created at once
	loaded, burst []float64
}

func main() {
	b := bench{}
	flag.StringVar(&b.bin, "pathtrace", "bin/pathtrace", "the pathtrace binary to measure")
	flag.StringVar(&b.prefix, "prefix", "ptsc", "the namespaces' prefix")
	flag.IntVar(&b.n, "n", 250, "pod veths in the node's namespace")
	flag.IntVar(&b.runs, "runs", 5, "runs of each start and stop")
	flag.IntVar(&b.fresh, "new", 20, "pod veths added one at a time while the agent runs")
	flag.Parse()
	if err := b.run(); err != nil {
		fmt.Fprintln(os.Stderr, "benchscale:", err)
		os.Exit(1)
	}
}

func (b *bench) node() string { return b.prefix + "-node" }
func (b *bench) pods() string { return b.prefix + "-pods" }

func (b *bench) run() error {
	if os.Geteuid() != 0 {
		return errors.New("needs root: it makes network namespaces and runs pathtrace")
	}
	if _, err := os.Stat(b.bin); err != nil {
		return fmt.Errorf("-pathtrace %s: %w (make build)", b.bin, err)
	}
	for _, ns := range []string{b.node(), b.pods()} {
		if _, err := os.Stat(filepath.Join("/run/netns", ns)); err == nil {
			return fmt.Errorf("network namespace %s exists: another benchscale, or a stale one (ip netns del %s)", ns, ns)
		}
	}
	var err error
	if b.work, err = os.MkdirTemp("", "benchscale-"); err != nil {
		return err
	}
	defer os.RemoveAll(b.work)
	defer b.teardown()
	// An interrupt tears down too.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		b.teardown()
		os.Exit(1)
	}()
	if err := b.setup(); err != nil {
		return err
	}

	var figs []stat.Figure
	for _, mode := range []string{"tcx", "clsact"} {
		ready, exit, err := b.follow(mode)
		if err != nil {
			return err
		}
		figs = append(figs,
			stat.Figure{Name: fmt.Sprintf("follow ready, %d veths, %s", b.n, mode), Unit: "s", Samples: ready, Target: stat.AtMost(1),
				Note: "start to every interface attached (--ready-file)"},
			stat.Figure{Name: fmt.Sprintf("follow exit, %d veths, %s", b.n, mode), Unit: "s", Samples: exit, Target: stat.AtMost(1),
				Note: "SIGINT to exit, everything detached"})
	}
	ready, hwm, exit, appear, err := b.agent()
	if err != nil {
		return err
	}
	figs = append(figs,
		stat.Figure{Name: fmt.Sprintf("agent ready, %d veths", b.n), Unit: "s", Samples: ready, Target: stat.AtMost(2)},
		stat.Figure{Name: "agent peak memory (VmHWM)", Unit: "MiB", Samples: hwm, Target: stat.AtMost(64), Of: stat.OfMax,
			Note: "start to exit, read before SIGTERM; a limit every run must keep"},
		stat.Figure{Name: "agent exit", Unit: "s", Samples: exit, Target: stat.AtMost(1)},
		stat.Figure{Name: "new pod veth attached after", Unit: "ms", Samples: appear, Target: stat.AtMost(100),
			Note: "link add to pathtrace's program on it, idle node"},
		stat.Figure{Name: "new pod veth attached after, flood", Unit: "ms", Samples: b.loaded, Target: stat.AtMost(100),
			Note: "the same, with a ping flood across a traced veth"},
		stat.Figure{Name: fmt.Sprintf("burst of %d pod veths, each attached after", b.fresh), Unit: "ms", Samples: b.burst, Target: stat.AtMost(100),
			Note: "all created in one batch; each from the batch's start"})
	fmt.Printf("benchscale: %s on %s, %d pod veths, %d runs\n", b.bin, kernelRelease(), b.n, b.runs)
	missed, err := stat.Table(os.Stdout, figs)
	if err != nil {
		return err
	}
	fmt.Printf("benchscale: %d of %d figures miss their targets\n", missed, len(figs))
	return nil
}

func kernelRelease() string {
	var u syscall.Utsname
	if syscall.Uname(&u) != nil {
		return "?"
	}
	var b []byte
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		b = append(b, byte(c))
	}
	return string(b)
}

func ip(stdin string, args ...string) error {
	cmd := exec.Command("ip", args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// setup makes the node's namespace with n veths whose peers are in the pods'.
func (b *bench) setup() error {
	for _, ns := range []string{b.node(), b.pods()} {
		if err := ip("", "netns", "add", ns); err != nil {
			return err
		}
	}
	var node, pods strings.Builder
	node.WriteString("link set lo up\n")
	for i := range b.n {
		fmt.Fprintf(&node, "link add veth%d type veth peer name p%d netns %s\nlink set veth%d up\n", i, i, b.pods(), i)
		fmt.Fprintf(&pods, "link set p%d up\n", i)
	}
	if err := ip(node.String(), "-n", b.node(), "-batch", "-"); err != nil {
		return err
	}
	return ip(pods.String(), "-n", b.pods(), "-batch", "-")
}

func (b *bench) teardown() {
	for _, ns := range []string{b.node(), b.pods()} {
		exec.Command("ip", "netns", "del", ns).Run()
	}
}

// proc is a pathtrace process started with a ready file.
type proc struct {
	cmd   *exec.Cmd
	ready string
	start time.Time
	done  chan error
	log   string
}

func (b *bench) start(name string, args ...string) (*proc, error) {
	p := &proc{ready: filepath.Join(b.work, name+".ready"), log: filepath.Join(b.work, name+".log"), done: make(chan error, 1)}
	os.Remove(p.ready)
	logf, err := os.Create(p.log)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	p.cmd = exec.Command(b.bin, append(args, "--ready-file", p.ready)...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.start = time.Now()
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { p.done <- p.cmd.Wait() }()
	return p, nil
}

func (p *proc) logTail() string {
	data, _ := os.ReadFile(p.log)
	s := strings.TrimSpace(string(data))
	if len(s) > 2000 {
		s = "..." + s[len(s)-2000:]
	}
	return s
}

// waitReady returns the time from start to the ready file.
func (p *proc) waitReady(limit time.Duration) (time.Duration, error) {
	for {
		if _, err := os.Stat(p.ready); err == nil {
			return time.Since(p.start), nil
		}
		select {
		case err := <-p.done:
			return 0, fmt.Errorf("%s exited before it was ready (%v):\n%s", p.cmd.Args[1], err, p.logTail())
		case <-time.After(2 * time.Millisecond):
		}
		if time.Since(p.start) > limit {
			p.cmd.Process.Kill()
			<-p.done
			return 0, fmt.Errorf("%s not ready after %v:\n%s", p.cmd.Args[1], limit, p.logTail())
		}
	}
}

// stop signals the process and returns the time until it exited.
func (p *proc) stop(sig os.Signal) (time.Duration, error) {
	t0 := time.Now()
	p.cmd.Process.Signal(sig)
	select {
	case err := <-p.done:
		if err != nil {
			return 0, fmt.Errorf("%s: %v:\n%s", p.cmd.Args[1], err, p.logTail())
		}
		return time.Since(t0), nil
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
		return 0, fmt.Errorf("%s did not exit 30 s after %v", p.cmd.Args[1], sig)
	}
}

func (b *bench) follow(mode string) (ready, exit []float64, err error) {
	for range b.runs {
		p, err := b.start("follow", "follow", "--netns", b.node(), "--node", "bench", "--attach-mode", mode, "10.99.0.1")
		if err != nil {
			return nil, nil, err
		}
		r, err := p.waitReady(60 * time.Second)
		if err != nil {
			return nil, nil, err
		}
		time.Sleep(200 * time.Millisecond)
		e, err := p.stop(os.Interrupt)
		if err != nil {
			return nil, nil, err
		}
		ready, exit = append(ready, r.Seconds()), append(exit, e.Seconds())
	}
	return ready, exit, nil
}

func vmHWM(pid int) (float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	return stat.StatusMiB(data, "VmHWM")
}

func (b *bench) agent() (ready, hwm, exit, appear []float64, err error) {
	for run := range b.runs {
		p, err := b.start("agent", "agent", "--netns", b.node(), "--node", "bench", "--metrics-addr", "127.0.0.1:0",
			"--api", "unix:"+filepath.Join(b.work, "agent.sock"))
		if err != nil {
			return nil, nil, nil, nil, err
		}
		r, err := p.waitReady(60 * time.Second)
		if err != nil {
			return nil, nil, nil, nil, err
		}
		if run == 0 { // new veths, once: they stay, as pods do
			if appear, err = b.appearing(); err != nil {
				p.stop(syscall.SIGTERM)
				return nil, nil, nil, nil, err
			}
			if b.loaded, err = b.underLoad(); err != nil {
				p.stop(syscall.SIGTERM)
				return nil, nil, nil, nil, err
			}
			if b.burst, err = b.appearingBurst(); err != nil {
				p.stop(syscall.SIGTERM)
				return nil, nil, nil, nil, err
			}
		}
		time.Sleep(200 * time.Millisecond)
		h, err := vmHWM(p.cmd.Process.Pid)
		if err != nil {
			return nil, nil, nil, nil, err
		}
		e, err := p.stop(syscall.SIGTERM)
		if err != nil {
			return nil, nil, nil, nil, err
		}
		ready, hwm, exit = append(ready, r.Seconds()), append(hwm, h), append(exit, e.Seconds())
	}
	return ready, hwm, exit, appear, nil
}

// underLoad is appearing with a ping flood from the pods' side of veth0 to the node's
// side, through pathtrace's programs on veth0, for as long as it measures.
func (b *bench) underLoad() ([]float64, error) {
	if err := ip("", "-n", b.node(), "addr", "add", "10.99.0.1/30", "dev", "veth0"); err != nil {
		return nil, err
	}
	if err := ip("", "-n", b.pods(), "addr", "add", "10.99.0.2/30", "dev", "p0"); err != nil {
		return nil, err
	}
	flood := exec.Command("ip", "netns", "exec", b.pods(), "ping", "-f", "-q", "10.99.0.1")
	if err := flood.Start(); err != nil {
		return nil, fmt.Errorf("ping -f: %w", err)
	}
	defer func() {
		flood.Process.Kill()
		flood.Wait()
	}()
	time.Sleep(500 * time.Millisecond)
	if flood.ProcessState != nil {
		return nil, errors.New("ping -f exited at once")
	}
	return b.appearingFrom("flood", 1)
}

// appearingBurst creates fresh veths in one batch and measures, for each, the time
// from the batch's start to pathtrace's program on it.
func (b *bench) appearingBurst() ([]float64, error) {
	return b.appearingFrom("burst", b.fresh)
}

// appearing adds pod veths one at a time and measures, for each, the time from the
// link's creation to a tcx program (or a cls_bpf filter) on its ingress.
func (b *bench) appearing() ([]float64, error) {
	return b.appearingFrom("new", 1)
}

// appearingFrom adds b.fresh pod veths named PREFIXi, batch at a time, and measures for
// each the time from its batch's start to pathtrace's program on its ingress.
func (b *bench) appearingFrom(prefix string, batch int) ([]float64, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return nil, err
	}
	defer orig.Close()
	h, err := netns.GetFromName(b.node())
	if err != nil {
		return nil, err
	}
	defer h.Close()
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		return nil, err
	}
	defer nl.Close()
	if err := netns.Set(h); err != nil {
		return nil, err
	}
	defer netns.Set(orig)
	var out []float64
	for first := 0; first < b.fresh; first += batch {
		var node, pods strings.Builder
		var names []string
		for i := first; i < min(first+batch, b.fresh); i++ {
			name := fmt.Sprintf("%s%d", prefix, i)
			names = append(names, name)
			fmt.Fprintf(&node, "link add %s type veth peer name %sq%d netns %s\nlink set %s up\n", name, prefix, i, b.pods(), name)
			fmt.Fprintf(&pods, "link set %sq%d up\n", prefix, i)
		}
		t0 := time.Now()
		if err := ip(node.String(), "-n", b.node(), "-batch", "-"); err != nil {
			return nil, err
		}
		if err := ip(pods.String(), "-n", b.pods(), "-batch", "-"); err != nil {
			return nil, err
		}
		waiting := map[int]string{}
		for _, name := range names {
			l, err := nl.LinkByName(name)
			if err != nil {
				return nil, err
			}
			waiting[l.Attrs().Index] = name
		}
		for len(waiting) > 0 {
			for idx, name := range waiting {
				if attached(nl, idx) {
					out = append(out, float64(time.Since(t0).Microseconds())/1000)
					delete(waiting, idx)
				} else if time.Since(t0) > 5*time.Second {
					return nil, fmt.Errorf("%s: no pathtrace program on it 5 s after it appeared", name)
				}
			}
			time.Sleep(time.Millisecond)
		}
		time.Sleep(300 * time.Millisecond)
	}
	return out, nil
}

// attached: a tcx program or a tc filter on the interface's ingress (this thread is
// in the node's namespace).
func attached(nl *netlink.Handle, ifindex int) bool {
	if res, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: ebpf.AttachTCXIngress}); err == nil && len(res.Programs) > 0 {
		return true
	}
	fs, err := nl.FilterList(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: ifindex}}, netlink.HANDLE_MIN_INGRESS)
	return err == nil && len(fs) > 0
}
