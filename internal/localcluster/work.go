package localcluster

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/fedzip/fedzip/checkpoint"
	"github.com/fedzip/fedzip/internal/boundedfile"
	"github.com/fedzip/fedzip/internal/workdir"
	"github.com/fedzip/fedzip/transport"
)

// work is a prepared work folder.
type work struct {
	dir         string
	certsDir    string
	certs       transport.CertFiles
	newCerts    bool
	secrets     secrets
	newSecrets  bool
	state, logs string
	models      string
}

// secrets are a run's random secrets.
type secrets struct {
	join, cluster, gossipKey, uiToken string
}

// Secret files in WORK/secrets.
const (
	secretsDir        = "secrets"
	joinSecretFile    = "join-secret"
	clusterSecretFile = "cluster-secret"
	gossipKeyFile     = "gossip-key"
	uiTokenFile       = "ui-token"
)

func (w *work) model() string { return filepath.Join(w.dir, "model.fzmodel") }

func (w *work) stateDir(name string) string { return filepath.Join(w.state, name) }

func (w *work) logFile(name string) string { return filepath.Join(w.logs, name+".log") }

func (w *work) nodeModel(name string) string { return filepath.Join(w.models, name+".fzmodel") }

// prepareWork makes or reuses the work folder: certificates and secrets
// are made once and reused; state from an earlier run is refused, or
// removed with cfg.Reset. A folder that is not private (another user's,
// or open to others and not empty: workdir.Private) or that fedzip local
// did not make (ErrForeignWork) is refused before anything in it is
// read, written or removed.
func prepareWork(cfg Config) (*work, error) {
	w := &work{dir: cfg.Work}
	if w.dir == "" {
		dir, err := os.MkdirTemp("", "fedzip-local-")
		if err != nil {
			return w, fmt.Errorf("localcluster: %w", err)
		}
		w.dir = dir
	} else if err := os.MkdirAll(w.dir, 0o700); err != nil {
		return w, fmt.Errorf("localcluster: work folder: %w", err)
	}
	abs, err := filepath.Abs(w.dir)
	if err != nil {
		return w, err
	}
	w.dir = abs
	// Whose the folder is first: a folder of the user's is refused as
	// such, whatever its mode.
	marked, err := checkWork(w.dir)
	if err != nil {
		return w, err
	}
	if err := workdir.Private(w.dir); err != nil {
		return w, fmt.Errorf("localcluster: work folder: %w", err)
	}
	if !marked {
		if err := writeNew(filepath.Join(w.dir, markerFile), []byte("a work folder of fedzip local: --reset removes state/, logs/, models/ and model.fzmodel here\n"), 0o600); err != nil {
			return w, fmt.Errorf("localcluster: %w", err)
		}
	}
	w.state, w.logs, w.models = filepath.Join(w.dir, "state"), filepath.Join(w.dir, "logs"), filepath.Join(w.dir, "models")

	earlier := []string{w.state, w.logs, w.models, w.model()}
	if cfg.Reset {
		for _, p := range earlier {
			if err := os.RemoveAll(p); err != nil {
				return w, fmt.Errorf("localcluster: --reset: %w", err)
			}
		}
	} else if entries, err := os.ReadDir(w.state); err == nil && len(entries) > 0 {
		return w, fmt.Errorf("%w: %s holds the nodes' and clients' state of an earlier run, which a new run cannot reuse (it records that run's addresses and rounds); start over with --reset (certificates and secrets are kept), or give another --work", ErrStaleState, w.state)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return w, fmt.Errorf("localcluster: %w", err)
	}
	for _, d := range []string{w.state, w.logs, w.models} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return w, fmt.Errorf("localcluster: %w", err)
		}
	}

	w.certsDir = filepath.Join(w.dir, certsDir)
	w.certs = transport.DevCertFiles(w.certsDir)
	if w.newCerts, err = ensureCerts(w.certsDir, w.certs); err != nil {
		return w, err
	}
	if w.secrets, w.newSecrets, err = ensureSecrets(filepath.Join(w.dir, secretsDir)); err != nil {
		return w, err
	}
	return w, nil
}

// markerFile marks a folder as a work folder of fedzip local: Run writes
// into, and Config.Reset removes from, only a folder that holds it or is
// empty (a new folder), never a folder of the user's that --work named
// by mistake.
const markerFile = ".fedzip-local"

// Names in a work folder, for recognising one made before markerFile.
const (
	certsDir = "certs"
	layout   = "certs secrets state logs models model.fzmodel"
)

// checkWork checks that dir is a work folder of fedzip local (marked: it
// holds markerFile), or one to mark: empty, or made by an earlier fedzip
// local without the marker (certs and secrets, nothing foreign). It
// changes nothing.
func checkWork(dir string) (marked bool, err error) {
	marker := filepath.Join(dir, markerFile)
	fi, err := os.Lstat(marker)
	if err == nil {
		if !fi.Mode().IsRegular() {
			return false, fmt.Errorf("%w: %s is not a regular file", ErrForeignWork, marker)
		}
		return true, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("localcluster: %w", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false, fmt.Errorf("localcluster: %w", err)
	}
	names := map[string]bool{}
	for _, e := range entries {
		if !strings.Contains(" "+layout+" ", " "+e.Name()+" ") {
			return false, fmt.Errorf("%w: %s holds %s, and no %s: fedzip local writes only into a new or empty folder, or one it made (--reset removes state/, logs/ and models/ there); give another --work", ErrForeignWork, dir, e.Name(), markerFile)
		}
		names[e.Name()] = true
	}
	if len(entries) > 0 && !(names[certsDir] && names[secretsDir]) {
		return false, fmt.Errorf("%w: %s holds %s but no certificates and secrets of fedzip local, and no %s: give another --work", ErrForeignWork, dir, entries[0].Name(), markerFile)
	}
	return false, nil
}

// ensureCerts writes development certificates into dir unless they are
// all there; it reports whether it wrote them. A partial set is refused.
func ensureCerts(dir string, files transport.CertFiles) (made bool, err error) {
	all := []string{files.CA, files.CAKey, files.ServerCert, files.ServerKey, files.ClientCert, files.ClientKey,
		files.PeerCA, files.PeerCAKey, files.NodeCert, files.NodeKey}
	var have, missing []string
	for _, f := range all {
		if _, err := os.Stat(f); err == nil {
			have = append(have, f)
		} else if errors.Is(err, fs.ErrNotExist) {
			missing = append(missing, f)
		} else {
			return false, fmt.Errorf("localcluster: certificates: %w", err)
		}
	}
	switch {
	case len(missing) == 0:
		return false, nil
	case len(have) > 0:
		return false, fmt.Errorf("%w: %s is incomplete (%s is missing): remove the folder to make new certificates", ErrStaleState, dir, filepath.Base(missing[0]))
	}
	if err := transport.GenerateDevCerts(dir, nil); err != nil {
		return false, fmt.Errorf("localcluster: %w", err)
	}
	return true, nil
}

// maxSecret bounds a secret file.
const maxSecret = 4 << 10

// ensureSecrets reads the secrets in dir, making those that are missing
// (random, mode 0600); made reports that one was made. dir must be
// private (workdir.Private), and a secret a regular file of at most
// maxSecret bytes that only this user can read (not a symbolic link):
// anything else is refused (ErrStaleState), never followed or fixed.
func ensureSecrets(dir string) (s secrets, made bool, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return s, false, fmt.Errorf("localcluster: secrets: %w", err)
	}
	if err := workdir.Private(dir); err != nil {
		return s, false, fmt.Errorf("localcluster: secrets: %w", err)
	}
	for _, x := range []struct {
		file string
		dst  *string
		gen  func() string
	}{
		{joinSecretFile, &s.join, rand.Text},
		{clusterSecretFile, &s.cluster, rand.Text},
		{uiTokenFile, &s.uiToken, rand.Text},
		{gossipKeyFile, &s.gossipKey, func() string { return base64.StdEncoding.EncodeToString(randBytes(32)) }},
	} {
		path := filepath.Join(dir, x.file)
		b, err := readSecret(path)
		switch {
		case err == nil:
			*x.dst = string(bytes.TrimSpace(b))
			if *x.dst == "" {
				return s, false, fmt.Errorf("%w: %s is empty: remove it to make a new one", ErrStaleState, path)
			}
		case errors.Is(err, fs.ErrNotExist):
			*x.dst = x.gen()
			if err := writeNew(path, []byte(*x.dst+"\n"), 0o600); err != nil {
				return s, false, fmt.Errorf("localcluster: secrets: %w", err)
			}
			made = true
		default:
			return s, false, err
		}
	}
	if k, err := base64.StdEncoding.DecodeString(s.gossipKey); err != nil || (len(k) != 16 && len(k) != 24 && len(k) != 32) {
		return s, false, fmt.Errorf("%w: %s is not a base64 key of 16, 24 or 32 bytes: remove it to make a new one", ErrStaleState, filepath.Join(dir, gossipKeyFile))
	}
	return s, made, nil
}

// readSecret reads a secret file (see ensureSecrets); an error wrapping
// fs.ErrNotExist means there is none.
func readSecret(path string) ([]byte, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("localcluster: secrets: %w", err)
	}
	switch {
	case !fi.Mode().IsRegular():
		return nil, fmt.Errorf("%w: %s is not a regular file (%v): remove it to make a new one", ErrStaleState, path, fi.Mode().Type())
	case runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0:
		return nil, fmt.Errorf("%w: %s has mode %#o: other users may have read it; remove it to make a new one", ErrStaleState, path, fi.Mode().Perm())
	case fi.Size() > maxSecret:
		return nil, fmt.Errorf("%w: %s holds %d bytes, a secret at most %d: remove it to make a new one", ErrStaleState, path, fi.Size(), maxSecret)
	}
	b, err := boundedfile.Read(path, maxSecret)
	switch {
	case errors.Is(err, boundedfile.ErrTooLarge):
		return nil, fmt.Errorf("%w: %w: remove it to make a new one", ErrStaleState, err)
	case err != nil:
		return nil, fmt.Errorf("localcluster: secrets: %w", err)
	}
	return b, nil
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b) // never fails (crypto/rand, Go 1.24+)
	return b
}

// writeNew writes a file that must not exist yet.
func writeNew(path string, b []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// finalModel checks that the checkpoint at src holds round rounds and
// copies its bytes to dst (atomically).
func finalModel(src, dst string, rounds int) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	ck, err := checkpoint.Read(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("%s: %w", src, err)
	}
	if ck.Header.Round != rounds {
		return fmt.Errorf("%s holds round %d, not %d", src, ck.Header.Round, rounds)
	}
	tmp := dst + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}
