package redistest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Certs are PEM files for tests of TLS: an authority (CA) and a
// certificate it signed for 127.0.0.1 and localhost, good for a server and
// for a client (Cert, Key); and another authority that signed nothing
// here (OtherCA), for a verification that must fail.
type Certs struct {
	CA, Cert, Key string
	OtherCA       string
}

// MakeCerts writes a fresh set of Certs under dir.
func MakeCerts(dir string) (*Certs, error) {
	ca, caKey, err := makeCA(dir, "ca")
	if err != nil {
		return nil, err
	}
	if _, _, err := makeCA(dir, "other-ca"); err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "topix test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	c := &Certs{CA: filepath.Join(dir, "ca.pem"), OtherCA: filepath.Join(dir, "other-ca.pem"),
		Cert: filepath.Join(dir, "cert.pem"), Key: filepath.Join(dir, "key.pem")}
	if err := writePEM(c.Cert, "CERTIFICATE", der); err != nil {
		return nil, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	return c, writePEM(c.Key, "EC PRIVATE KEY", kder)
}

// MustCerts makes Certs for one test.
func MustCerts(tb testing.TB) *Certs {
	tb.Helper()
	c, err := MakeCerts(tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func makeCA(dir, name string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "topix test " + name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return cert, key, writePEM(filepath.Join(dir, name+".pem"), "CERTIFICATE", der)
}

func writePEM(path, kind string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600)
}

// Args are the arguments that make a redis-server speak only TLS with
// these certificates, to clients, replicas and cluster nodes;
// authClients makes it require a client certificate. Start recognises
// them: the server then listens on its port with TLS only.
func (c *Certs) Args(authClients bool) []string {
	auth := "no"
	if authClients {
		auth = "yes"
	}
	return []string{"--tls-cert-file", c.Cert, "--tls-key-file", c.Key, "--tls-ca-cert-file", c.CA,
		"--tls-auth-clients", auth, "--tls-replication", "yes", "--tls-cluster", "yes"}
}

// tlsFromArgs returns the client TLS settings for a server started with
// Certs.Args, or nil when args have none.
func tlsFromArgs(args []string) (*tls.Config, error) {
	get := func(name string) string {
		for i := 0; i+1 < len(args); i++ {
			if args[i] == name {
				return args[i+1]
			}
		}
		return ""
	}
	certFile, keyFile, caFile := get("--tls-cert-file"), get("--tls-key-file"), get("--tls-ca-cert-file")
	if certFile == "" {
		return nil, nil
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no certificate in %s", caFile)
	}
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, ServerName: "127.0.0.1"}, nil
}
