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
//
// tokens: followers may instead authenticate with a Kubernetes token in the request
// (agent --auth-kube); a client certificate is then verified if given, and the CA may
// be left out.
func ServerTLS(f TLSFiles, tokens bool) (*tls.Config, error) {
	if f.Cert == "" || f.Key == "" || f.CA == "" && !tokens {
		return nil, errors.New("a TLS listener needs --tls-cert, --tls-key and --tls-client-ca, or --auth-kube instead of the CA (pathtrace certs makes them)")
	}
	auth := tls.RequireAndVerifyClientCert
	if tokens {
		auth = tls.VerifyClientCertIfGiven
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
				ClientAuth:   auth,
			}, nil
		},
	}, nil
}

// ClientTLS is a follower's TLS: TLS 1.3, the agent's certificate verified against the
// CA and the server name, and the follower's own certificate presented when f names
// one (without, the follower authenticates with a Kubernetes token in its request).
// caPEM, when not nil, is the CA instead of the file f.CA.
func ClientTLS(f TLSFiles, caPEM []byte, serverName string) (*tls.Config, error) {
	if caPEM == nil && f.CA == "" {
		return nil, errors.New("following agents over TLS needs the agents' CA: --tls-ca (pathtrace certs makes it)")
	}
	if (f.Cert == "") != (f.Key == "") {
		return nil, errors.New("--tls-cert and --tls-key go together")
	}
	if serverName == "" {
		serverName = DefaultServerName
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, ServerName: serverName}
	if f.Cert != "" {
		cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			return nil, fmt.Errorf("TLS certificate %s and key %s: %w", f.Cert, f.Key, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	if caPEM == nil {
		var err error
		if cfg.RootCAs, err = loadPool(f.CA); err != nil {
			return nil, err
		}
	} else {
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(caPEM) {
			return nil, errors.New("the agents' CA: no PEM certificate in it")
		}
	}
	return cfg, nil
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
		if p == "" {
			continue
		}
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
	var pool *x509.CertPool
	if r.files.CA != "" {
		if pool, err = loadPool(r.files.CA); err != nil {
			return err
		}
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
