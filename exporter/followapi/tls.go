package followapi

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// DefaultServerName is the name every agent's certificate carries (besides its node's)
// and followers verify by default, as Hubble's agents share one name: followers reach
// agents by pod address, which no certificate could list ahead of time.
const DefaultServerName = "agent.pathtrace"

// TLSFiles names the PEM files of one end: its certificate and key, and the CA that
// signs the other end's certificates.
type TLSFiles struct {
	Cert, Key, CA string
}

// Set reports whether any file is named.
func (f TLSFiles) Set() bool { return f.Cert != "" || f.Key != "" || f.CA != "" }

// ServerTLS is an agent's TLS: TLS 1.3 only, a client certificate signed by the CA
// required, and the files read again when they change (a renewed Secret), checked at
// most once a second. It fails now if the files cannot be read.
func ServerTLS(f TLSFiles) (*tls.Config, error) {
	if f.Cert == "" || f.Key == "" || f.CA == "" {
		return nil, errors.New("a TLS listener needs --tls-cert, --tls-key and --tls-client-ca (pathtrace certs makes them)")
	}
	rl := &reloader{files: f}
	if err := rl.load(); err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			cert, pool := rl.get()
			return &tls.Config{
				MinVersion:   tls.VersionTLS13,
				Certificates: []tls.Certificate{cert},
				ClientCAs:    pool,
				ClientAuth:   tls.RequireAndVerifyClientCert,
			}, nil
		},
	}, nil
}

// ClientTLS is a follower's TLS: TLS 1.3, the agent's certificate verified against the
// CA and the server name, and the follower's own certificate presented.
func ClientTLS(f TLSFiles, serverName string) (*tls.Config, error) {
	if f.Cert == "" || f.Key == "" || f.CA == "" {
		return nil, errors.New("following agents over TLS needs --tls-cert, --tls-key and --tls-ca (pathtrace certs makes them)")
	}
	if serverName == "" {
		serverName = DefaultServerName
	}
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate %s and key %s: %w", f.Cert, f.Key, err)
	}
	pool, err := loadPool(f.CA)
	if err != nil {
		return nil, err
	}
	return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: serverName}, nil
}

func loadPool(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("TLS CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("TLS CA %s: no PEM certificate in it", path)
	}
	return pool, nil
}

// reloader holds the certificate and CA, read again when a file's modification time
// or size changes. A file that cannot be read at a reload keeps the previous ones (a
// Secret being rewritten), and says so once.
type reloader struct {
	files   TLSFiles
	mu      sync.Mutex
	cert    tls.Certificate
	pool    *x509.CertPool
	stamp   string
	checked time.Time
	Err     error // the last reload's error, nil once one succeeds
}

func (r *reloader) stampOf() string {
	s := ""
	for _, p := range []string{r.files.Cert, r.files.Key, r.files.CA} {
		if fi, err := os.Stat(p); err == nil {
			s += fmt.Sprintf("%d.%d;", fi.ModTime().UnixNano(), fi.Size())
		} else {
			s += "-;"
		}
	}
	return s
}

func (r *reloader) load() error {
	stamp := r.stampOf()
	cert, err := tls.LoadX509KeyPair(r.files.Cert, r.files.Key)
	if err != nil {
		return fmt.Errorf("TLS certificate %s and key %s: %w", r.files.Cert, r.files.Key, err)
	}
	pool, err := loadPool(r.files.CA)
	if err != nil {
		return err
	}
	r.cert, r.pool, r.stamp = cert, pool, stamp
	return nil
}

func (r *reloader) get() (tls.Certificate, *x509.CertPool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := time.Now(); now.Sub(r.checked) >= time.Second {
		r.checked = now
		if r.stampOf() != r.stamp {
			r.Err = r.load()
		}
	}
	return r.cert, r.pool
}
