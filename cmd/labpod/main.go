package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Exit statuses.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

const (
	// maxRequest is how much serve reads from a TCP connection at most
	// before answering.
	maxRequest = 4 << 10
	// idleRead is how long serve waits for more request bytes before it
	// answers anyway.
	idleRead = time.Second
	// maxUDPPayload is the largest payload of an IPv4 UDP datagram.
	maxUDPPayload = 65507
)

const synopsis = `usage:
  labpod serve --name NAME [--tcp PORT[,PORT...]] [--udp PORT[,PORT...]]
  labpod tcp ADDR:PORT [--timeout 2s] [--sport N] [--msg hello]
  labpod udp ADDR:PORT [--count 1] [--size 64] [--interval 0] [--sport N] [--wait 0]
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches to a subcommand and returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, synopsis)
		return exitUsage
	}
	switch args[0] {
	case "serve":
		return cmdServe(args[1:], stderr)
	case "tcp":
		return cmdTCP(args[1:], stdout, stderr)
	case "udp":
		return cmdUDP(args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, synopsis)
		return exitOK
	default:
		fmt.Fprintf(stderr, "labpod: unknown subcommand %q\n%s", args[0], synopsis)
		return exitUsage
	}
}

// usageError marks a mistake in the command line (exit status 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error {
	return usageError{fmt.Sprintf(format, a...)}
}

// newFlagSet returns a flag set for subcommand name that reports its own
// errors to stderr and never exits by itself.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("labpod "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, synopsis)
		fmt.Fprintf(stderr, "flags of labpod %s:\n", name)
		fs.PrintDefaults()
	}
	return fs
}

// parseArgs parses flags that may appear before, between or after the
// positional arguments (the flag package alone stops at the first
// positional one) and returns the positional arguments.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return positional, nil
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}

// finish turns the outcome of a subcommand into an exit status, printing
// the error (if any) to stderr.
func finish(cmd string, err error, stderr io.Writer) int {
	var ue usageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "labpod %s: %v\n%s", cmd, err, synopsis)
		return exitUsage
	default:
		fmt.Fprintf(stderr, "labpod %s: %v\n", cmd, err)
		return exitFail
	}
}

// flagExit is the exit status for an error from parseArgs, which the flag
// package has already reported together with the usage.
func flagExit(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	return exitUsage
}

// parsePorts parses a comma-separated list of ports; an empty string is
// an empty list.
func parsePorts(s string) ([]int, error) {
	if s == "" {
		return nil, nil
	}
	var ports []int
	for _, f := range strings.Split(s, ",") {
		p, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || p < 1 || p > 65535 {
			return nil, usagef("bad port %q in %q", f, s)
		}
		ports = append(ports, p)
	}
	return ports, nil
}

// oneAddr checks that exactly one positional argument, HOST:PORT, was given.
func oneAddr(positional []string) (string, error) {
	if len(positional) != 1 {
		return "", usagef("want exactly one ADDR:PORT argument, got %d", len(positional))
	}
	addr := positional[0]
	if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
		return "", usagef("bad address %q: want ADDR:PORT", addr)
	}
	return addr, nil
}

func checkSport(sport int) error {
	if sport < 0 || sport > 65535 {
		return usagef("--sport %d out of range 0-65535", sport)
	}
	return nil
}

// reuseAddr sets SO_REUSEADDR so that a fixed --sport can be bound again
// right after an earlier run left the port in TIME_WAIT.
func reuseAddr(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
	}); err != nil {
		return err
	}
	return serr
}

// dialer returns a dialer bound to local port sport (0: any port).
func dialer(network string, sport int) *net.Dialer {
	d := &net.Dialer{}
	if sport != 0 {
		if network == "udp" {
			d.LocalAddr = &net.UDPAddr{Port: sport}
		} else {
			d.LocalAddr = &net.TCPAddr{Port: sport}
		}
		d.Control = reuseAddr
	}
	return d
}

// ---- serve ----

func cmdServe(args []string, stderr io.Writer) int {
	fs := newFlagSet("serve", stderr)
	name := fs.String("name", "", "name put in every reply (`ok NAME`); required")
	tcpList := fs.String("tcp", "", "comma-separated TCP ports to listen on")
	udpList := fs.String("udp", "", "comma-separated UDP ports to listen on")
	positional, err := parseArgs(fs, args)
	if err != nil {
		return flagExit(err)
	}
	err = func() error {
		if len(positional) != 0 {
			return usagef("unexpected argument %q", positional[0])
		}
		if *name == "" {
			return usagef("--name is required")
		}
		tcpPorts, err := parsePorts(*tcpList)
		if err != nil {
			return err
		}
		udpPorts, err := parsePorts(*udpList)
		if err != nil {
			return err
		}
		if len(tcpPorts)+len(udpPorts) == 0 {
			return usagef("give at least one port with --tcp or --udp")
		}
		return serve(*name, tcpPorts, udpPorts, stderr)
	}()
	return finish("serve", err, stderr)
}

// serve answers on the given ports until SIGINT or SIGTERM.
func serve(name string, tcpPorts, udpPorts []int, stderr io.Writer) error {
	logger := log.New(stderr, "labpod serve "+name+": ", log.LstdFlags)
	reply := []byte("ok " + name + "\n")

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	// "tcp"/"udp" with ":PORT" gives a dual-stack socket where IPv6 is
	// available and an IPv4 one otherwise.
	var closers []io.Closer
	closeAll := func() {
		for _, c := range closers {
			c.Close()
		}
	}
	var wg sync.WaitGroup
	for _, p := range tcpPorts {
		ln, err := net.Listen("tcp", ":"+strconv.Itoa(p))
		if err != nil {
			closeAll()
			return err
		}
		closers = append(closers, ln)
		wg.Add(1)
		go func() {
			defer wg.Done()
			serveTCP(ctx, ln, reply, logger, &wg)
		}()
	}
	for _, p := range udpPorts {
		pc, err := net.ListenPacket("udp", ":"+strconv.Itoa(p))
		if err != nil {
			closeAll()
			return err
		}
		// A bigger receive buffer keeps short bursts from being dropped
		// by the server itself (best effort; capped by rmem_max).
		_ = pc.(*net.UDPConn).SetReadBuffer(4 << 20)
		closers = append(closers, pc)
		wg.Add(1)
		go func() {
			defer wg.Done()
			serveUDP(ctx, pc.(*net.UDPConn), reply, logger)
		}()
	}
	logger.Printf("listening: tcp %v udp %v", tcpPorts, udpPorts)

	<-ctx.Done()
	logger.Printf("stopping")
	closeAll()
	wg.Wait()
	return nil
}

func serveTCP(ctx context.Context, ln net.Listener, reply []byte, logger *log.Logger, wg *sync.WaitGroup) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// For example EMFILE: log and retry a little later.
			logger.Printf("accept: %v", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			handleTCP(conn, reply, logger)
		}()
	}
}

// handleTCP reads the request (up to maxRequest bytes, a newline, EOF or
// idleRead of silence, whichever comes first), answers and closes.
func handleTCP(conn net.Conn, reply []byte, logger *log.Logger) {
	defer conn.Close()
	buf := make([]byte, maxRequest)
	n := 0
	for n < len(buf) {
		_ = conn.SetReadDeadline(time.Now().Add(idleRead))
		m, err := conn.Read(buf[n:])
		gotLine := m > 0 && strings.IndexByte(string(buf[n:n+m]), '\n') >= 0
		n += m
		if gotLine {
			break
		}
		if err != nil {
			var ne net.Error
			if errors.Is(err, io.EOF) || (errors.As(err, &ne) && ne.Timeout()) {
				break
			}
			logger.Printf("read from %s: %v", conn.RemoteAddr(), err)
			return
		}
	}
	_ = conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.Write(reply); err != nil {
		logger.Printf("write to %s: %v", conn.RemoteAddr(), err)
	}
}

func serveUDP(ctx context.Context, pc *net.UDPConn, reply []byte, logger *log.Logger) {
	buf := make([]byte, 64<<10)
	for {
		_, from, err := pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			logger.Printf("udp read: %v", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if _, err := pc.WriteToUDPAddrPort(reply, from); err != nil {
			logger.Printf("udp reply to %s: %v", from, err)
		}
	}
}

// ---- tcp client ----

func cmdTCP(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("tcp", stderr)
	timeout := fs.Duration("timeout", 2*time.Second, "limit for the whole exchange (connect, send, reply)")
	sport := fs.Int("sport", 0, "fixed local source port (0: any)")
	msg := fs.String("msg", "hello", "message to send (a newline is added)")
	positional, err := parseArgs(fs, args)
	if err != nil {
		return flagExit(err)
	}
	err = func() error {
		addr, err := oneAddr(positional)
		if err != nil {
			return err
		}
		if err := checkSport(*sport); err != nil {
			return err
		}
		if *timeout <= 0 {
			return usagef("--timeout must be positive")
		}
		reply, err := tcpExchange(addr, *sport, *timeout, *msg)
		if err != nil {
			return err
		}
		if !strings.HasSuffix(reply, "\n") {
			reply += "\n"
		}
		_, err = io.WriteString(stdout, reply)
		return err
	}()
	return finish("tcp", err, stderr)
}

// tcpExchange connects to addr, sends msg and a newline and returns the
// first line of the reply. The whole exchange must finish within timeout.
func tcpExchange(addr string, sport int, timeout time.Duration, msg string) (string, error) {
	deadline := time.Now().Add(timeout)
	d := dialer("tcp", sport)
	d.Deadline = deadline
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	if err := conn.SetDeadline(deadline); err != nil {
		return "", err
	}
	if _, err := io.WriteString(conn, msg+"\n"); err != nil {
		return "", fmt.Errorf("send to %s: %w", addr, err)
	}
	line, err := bufio.NewReader(io.LimitReader(conn, 64<<10)).ReadString('\n')
	if err != nil && !(errors.Is(err, io.EOF) && line != "") {
		if errors.Is(err, io.EOF) {
			return "", fmt.Errorf("%s closed the connection without a reply", addr)
		}
		return "", fmt.Errorf("read reply from %s: %w", addr, err)
	}
	return line, nil
}

// ---- udp client ----

func cmdUDP(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("udp", stderr)
	count := fs.Int("count", 1, "number of datagrams to send")
	size := fs.Int("size", 64, "payload bytes per datagram")
	interval := fs.Duration("interval", 0, "pause between datagrams")
	sport := fs.Int("sport", 0, "fixed local source port (0: any)")
	wait := fs.Duration("wait", 0, "if > 0, wait this long after the last send for replies and print replies=N")
	positional, err := parseArgs(fs, args)
	if err != nil {
		return flagExit(err)
	}
	err = func() error {
		addr, err := oneAddr(positional)
		if err != nil {
			return err
		}
		if err := checkSport(*sport); err != nil {
			return err
		}
		switch {
		case *count < 1:
			return usagef("--count must be at least 1")
		case *size < 0 || *size > maxUDPPayload:
			return usagef("--size must be in 0-%d", maxUDPPayload)
		case *interval < 0:
			return usagef("--interval must not be negative")
		case *wait < 0:
			return usagef("--wait must not be negative")
		}
		replies, err := udpSend(addr, *sport, *count, *size, *interval, *wait)
		if err != nil {
			return err
		}
		if *wait > 0 {
			_, err = fmt.Fprintf(stdout, "replies=%d\n", replies)
		}
		return err
	}()
	return finish("udp", err, stderr)
}

// udpSend sends count datagrams to addr and, if wait > 0, counts the
// replies that arrive until wait after the last send.
func udpSend(addr string, sport, count, size int, interval, wait time.Duration) (int64, error) {
	conn, err := dialer("udp", sport).Dial("udp", addr)
	if err != nil {
		return 0, err
	}
	defer conn.Close()

	// Replies are read while sending, so that a burst does not overflow
	// the socket's receive buffer before anyone reads it.
	var replies atomic.Int64
	done := make(chan struct{})
	if wait > 0 {
		_ = conn.(*net.UDPConn).SetReadBuffer(4 << 20)
		go func() {
			defer close(done)
			buf := make([]byte, 64<<10)
			for {
				if _, err := conn.Read(buf); err != nil {
					var ne net.Error
					if (errors.As(err, &ne) && ne.Timeout()) || errors.Is(err, net.ErrClosed) {
						return
					}
					// ECONNREFUSED and the like: an ICMP error for an
					// earlier datagram. Not a reply; keep listening.
					continue
				}
				replies.Add(1)
			}
		}()
	} else {
		close(done)
	}

	payload := make([]byte, size)
	for seq := 0; seq < count; seq++ {
		fillPayload(payload, seq)
		if _, err := conn.Write(payload); err != nil {
			conn.Close()
			<-done
			return replies.Load(), fmt.Errorf("send datagram %d to %s: %w", seq, addr, err)
		}
		if interval > 0 && seq < count-1 {
			time.Sleep(interval)
		}
	}
	if wait > 0 {
		// Setting the deadline also wakes the reader blocked in Read.
		_ = conn.SetReadDeadline(time.Now().Add(wait))
	}
	<-done
	return replies.Load(), nil
}

// fillPayload writes "seq=N " followed by filler into b, so that the
// datagrams of one run differ from each other.
func fillPayload(b []byte, seq int) {
	prefix := "seq=" + strconv.Itoa(seq) + " "
	n := copy(b, prefix)
	for i := n; i < len(b); i++ {
		b[i] = byte('a' + (i-n)%26)
	}
}
