package followsrv

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

	"golang.org/x/sys/unix"
)

// TLSClientCert authenticates a follower on a TLS listener whose configuration verifies
// client certificates (followapi.ServerTLS): the handshake is the proof, and the
// certificate's subject is the identity. A plaintext client, another CA's certificate,
// an expired one: the handshake fails and nothing is sent. No certificate fails it
// too, unless the listener takes Kubernetes tokens: the identity is then Anonymous
// until the request's token is reviewed.
func TLSClientCert(ctx context.Context, c net.Conn) (Identity, error) {
	tc, ok := c.(*tls.Conn)
	if !ok {
		return Identity{}, errors.New("not a TLS connection")
	}
	if err := tc.HandshakeContext(ctx); err != nil {
		return Identity{}, fmt.Errorf("TLS handshake: %w", err)
	}
	st := tc.ConnectionState()
	if len(st.PeerCertificates) == 0 {
		// Only where the configuration lets a client in without one (--auth-kube):
		// its request must then carry a token.
		return Identity{Via: "tls", Anonymous: true}, nil
	}
	if len(st.VerifiedChains) == 0 {
		return Identity{}, errors.New("no verified client certificate")
	}
	leaf := st.PeerCertificates[0]
	name := leaf.Subject.CommonName
	if name == "" && len(leaf.DNSNames) > 0 {
		name = leaf.DNSNames[0]
	}
	return Identity{Name: "CN=" + name, Via: "tls"}, nil
}

// UnixPeer authenticates a follower on a unix socket by the kernel's account of the
// peer (SO_PEERCRED): root, or the agent's own user.
func UnixPeer(_ context.Context, c net.Conn) (Identity, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return Identity{}, errors.New("not a unix socket")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return Identity{}, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) { cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); err != nil {
		return Identity{}, err
	}
	if cerr != nil {
		return Identity{}, fmt.Errorf("peer credentials: %w", cerr)
	}
	if cred.Uid != 0 && int(cred.Uid) != os.Getuid() {
		return Identity{}, fmt.Errorf("uid %d may not follow: only root or uid %d", cred.Uid, os.Getuid())
	}
	return Identity{Name: fmt.Sprintf("uid %d", cred.Uid), Via: "unix"}, nil
}

// Loopback admits a follower on a loopback TCP listener, named by its address: anyone
// on the node can connect there, so an agent listens so only when asked to.
func Loopback(_ context.Context, c net.Conn) (Identity, error) {
	ap, err := netipAddrPort(c.RemoteAddr())
	if err != nil || !ap.Addr().IsLoopback() {
		return Identity{}, fmt.Errorf("%v is not a loopback address", c.RemoteAddr())
	}
	return Identity{Name: "loopback", Via: "loopback"}, nil
}

func netipAddrPort(a net.Addr) (ap netip.AddrPort, err error) {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return ap, fmt.Errorf("%v: not TCP", a)
	}
	return ta.AddrPort(), nil
}
