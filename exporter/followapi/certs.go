package followapi

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"
)

// CertFiles are the files MakeCerts writes into its directory: a CA, the agents'
// certificate (one for every node: it carries the shared server name) and a follower's.
var CertFiles = []string{"ca.crt", "ca.key", "agent.crt", "agent.key", "follower.crt", "follower.key"}

// CertRequest says what MakeCerts makes.
type CertRequest struct {
	Dir        string        // created 0700 if missing; must not hold the files already
	ServerName string        // the agents' shared name (DefaultServerName)
	Follower   string        // the follower certificate's common name, its identity at the agents
	Validity   time.Duration // of every certificate
	Now        time.Time
	// CADir: issue only a follower's certificate (follower.crt, follower.key), signed
	// by the CA in this directory (ca.crt, ca.key) that an earlier MakeCerts made.
	CADir string
}

// MakeCerts writes a new CA and the agent and follower certificates it signs (ECDSA
// P-256, PEM). Keys are 0600; nothing is overwritten; a failure removes what it wrote.
func MakeCerts(r CertRequest) (err error) {
	if r.ServerName == "" || r.Follower == "" || r.Validity <= 0 {
		return errors.New("certs: a server name, a follower name and a validity are needed")
	}
	// An existing CA is read first: a wrong --ca leaves no directory behind.
	var caKey *ecdsa.PrivateKey
	var caDER []byte
	if r.CADir != "" {
		if caDER, caKey, err = loadCA(r.CADir); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(r.Dir, 0o700); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	files := CertFiles
	if r.CADir != "" {
		files = []string{"follower.crt", "follower.key"}
	}
	for _, f := range files {
		if _, err := os.Lstat(filepath.Join(r.Dir, f)); err == nil {
			return fmt.Errorf("certs: %s exists: not overwritten (remove it, or choose another --out)", filepath.Join(r.Dir, f))
		}
	}
	var written []string
	defer func() {
		if err != nil {
			for _, p := range written {
				os.Remove(p)
			}
		}
	}()
	write := func(name string, typ string, der []byte, mode os.FileMode) error {
		p := filepath.Join(r.Dir, name)
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
		if err != nil {
			return fmt.Errorf("certs: %w", err)
		}
		written = append(written, p)
		if err := pem.Encode(f, &pem.Block{Type: typ, Bytes: der}); err != nil {
			f.Close()
			return fmt.Errorf("certs: write %s: %w", p, err)
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("certs: write %s: %w", p, err)
		}
		return nil
	}
	serial := func() *big.Int {
		n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
		return n
	}
	start := r.Now.Add(-5 * time.Minute) // clocks that lag a little
	if r.CADir == "" {
		if caKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			return err
		}
		ca := &x509.Certificate{
			SerialNumber: serial(), Subject: pkix.Name{CommonName: "pathtrace CA"},
			NotBefore: start, NotAfter: r.Now.Add(r.Validity),
			IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
			KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		}
		if caDER, err = x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey); err != nil {
			return err
		}
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return fmt.Errorf("certs: the CA certificate: %w", err)
	}
	leaf := func(cn string, dns []string, usage x509.ExtKeyUsage) ([]byte, []byte, error) {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, nil, err
		}
		t := &x509.Certificate{
			SerialNumber: serial(), Subject: pkix.Name{CommonName: cn}, DNSNames: dns,
			NotBefore: start, NotAfter: r.Now.Add(r.Validity),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		}
		der, err := x509.CreateCertificate(rand.Reader, t, caCert, &k.PublicKey, caKey)
		if err != nil {
			return nil, nil, err
		}
		kder, err := x509.MarshalECPrivateKey(k)
		return der, kder, err
	}
	folDER, folKey, err := leaf(r.Follower, nil, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return err
	}
	type file struct {
		name, typ string
		der       []byte
		mode      os.FileMode
	}
	out := []file{{"follower.crt", "CERTIFICATE", folDER, 0o644}, {"follower.key", "EC PRIVATE KEY", folKey, 0o600}}
	if r.CADir == "" {
		agentDER, agentKey, err := leaf(r.ServerName, []string{r.ServerName}, x509.ExtKeyUsageServerAuth)
		if err != nil {
			return err
		}
		caKeyDER, err := x509.MarshalECPrivateKey(caKey)
		if err != nil {
			return err
		}
		out = append([]file{{"ca.crt", "CERTIFICATE", caDER, 0o644}, {"ca.key", "EC PRIVATE KEY", caKeyDER, 0o600},
			{"agent.crt", "CERTIFICATE", agentDER, 0o644}, {"agent.key", "EC PRIVATE KEY", agentKey, 0o600}}, out...)
	}
	for _, w := range out {
		if err := write(w.name, w.typ, w.der, w.mode); err != nil {
			return err
		}
	}
	return nil
}

// loadCA reads the CA certificate and key that MakeCerts wrote into dir.
func loadCA(dir string) ([]byte, *ecdsa.PrivateKey, error) {
	read := func(name, typ string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("certs: the CA: %w", err)
		}
		blk, _ := pem.Decode(b)
		if blk == nil || blk.Type != typ {
			return nil, fmt.Errorf("certs: %s: no %s PEM block", filepath.Join(dir, name), typ)
		}
		return blk.Bytes, nil
	}
	certDER, err := read("ca.crt", "CERTIFICATE")
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := read("ca.key", "EC PRIVATE KEY")
	if err != nil {
		return nil, nil, err
	}
	key, err := x509.ParseECPrivateKey(keyDER)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: %s: %w", filepath.Join(dir, "ca.key"), err)
	}
	return certDER, key, nil
}
