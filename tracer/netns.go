package tracer

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"

	"github.com/vishvananda/netns"
)

// nsRef is the network namespace the tracer works in: the caller's own, or one named
// with Config.Netns.
type nsRef struct {
	path   string         // "" for the caller's own
	handle netns.NsHandle // open only when path != ""
	inode  uint32
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
	if n.path != "" {
		n.handle.Close()
	}
}

func (n *nsRef) String() string {
	if n.path == "" {
		return "the current network namespace"
	}
	return "network namespace " + n.path
}

// do runs fn on an OS thread that is in the namespace. Attaching by ifindex (tcx) and
// reading /proc/thread-self resolve in the calling thread's namespace.
func (n *nsRef) do(fn func() error) error {
	if n.path == "" {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("read current network namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(n.handle); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter %s: %w", n, err)
			return
		}
		err = fn()
		// A thread that cannot go back stays locked, and Go ends it with the goroutine.
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
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
