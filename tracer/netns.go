package tracer

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// nsRef is the network namespace the tracer works in: the caller's own, or one named
// with Config.Netns.
type nsRef struct {
	path   string         // "" for the caller's own
	handle netns.NsHandle // open only when path != ""
	inode  uint32

	// The thread that runs do's functions: started by the first do, kept in the
	// namespace until close. One thread entered once, rather than two setns and a
	// thread of its own per call: attaching 250 interfaces makes a thousand calls.
	mu     sync.Mutex
	jobs   chan nsJob
	tid    atomic.Int32 // the worker's thread id, once it runs
	closed bool
}

type nsJob struct {
	fn   func() error
	done chan error
}

// openNetns resolves a --netns value: a path, or a name under /run/netns.
func openNetns(spec string) (*nsRef, error) {
	if spec == "" {
		ino, err := inodeOf("/proc/thread-self/ns/net")
		if err != nil {
			return nil, fmt.Errorf("read own network namespace: %w", err)
		}
		return &nsRef{inode: ino}, nil
	}
	path := spec
	if !strings.Contains(spec, "/") {
		path = filepath.Join("/run/netns", spec)
	}
	h, err := netns.GetFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("open network namespace %s: %w (name one under /run/netns or give a path such as /proc/PID/ns/net)", path, err)
	}
	ino, err := inodeOf(path)
	if err != nil {
		h.Close()
		return nil, err
	}
	return &nsRef{path: path, handle: h, inode: ino}, nil
}

func (n *nsRef) close() {
	if n.path == "" {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return
	}
	n.closed = true
	if n.jobs != nil {
		close(n.jobs) // the worker ends, and its thread with it
	}
	n.handle.Close()
}

func (n *nsRef) String() string {
	if n.path == "" {
		return "the current network namespace"
	}
	return "network namespace " + n.path
}

// do runs fn on an OS thread that is in the namespace. Attaching by ifindex (tcx) and
// reading /proc/thread-self resolve in the calling thread's namespace. The calls are
// serialised on one thread; fn may call do again (it then runs in place).
func (n *nsRef) do(fn func() error) error {
	if n.path == "" {
		return fn()
	}
	if tid := n.tid.Load(); tid != 0 && int32(unix.Gettid()) == tid {
		return fn() // already on the worker's thread (a goroutine locked to it)
	}
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return fmt.Errorf("%s: closed", n)
	}
	if n.jobs == nil {
		started := make(chan error, 1)
		jobs := make(chan nsJob)
		go n.worker(jobs, started)
		if err := <-started; err != nil {
			n.mu.Unlock()
			return err
		}
		n.jobs = jobs
	}
	done := make(chan error, 1)
	// Sent under the lock: close cannot close the channel meanwhile.
	n.jobs <- nsJob{fn: fn, done: done}
	n.mu.Unlock()
	return <-done
}

// worker enters the namespace on a thread of its own and runs the jobs there until
// close. The thread stays locked: Go ends it with the goroutine, never handing a thread
// in another namespace to other goroutines.
func (n *nsRef) worker(jobs chan nsJob, started chan<- error) {
	runtime.LockOSThread()
	if err := netns.Set(n.handle); err != nil {
		started <- fmt.Errorf("enter %s: %w", n, err)
		return
	}
	n.tid.Store(int32(unix.Gettid()))
	started <- nil
	for j := range jobs {
		j.done <- j.fn()
	}
}

func inodeOf(path string) (uint32, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, fmt.Errorf("stat %s: %w", path, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, fmt.Errorf("stat %s: no inode", path)
	}
	return uint32(st.Ino), nil
}
