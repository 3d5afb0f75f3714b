package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/fedzip/fedzip/deliver/fetch"
	"github.com/fedzip/fedzip/transport"
)

// modelPath is where a coordinator serves its newest delivered model.
const modelPath = "/v1/model"

// modelServer holds the newest delivered model file and serves it.
type modelServer struct {
	mu      sync.RWMutex
	file    []byte
	version uint64
	etag    string
}

func (m *modelServer) set(file []byte, version uint64) {
	sum := sha256.Sum256(file)
	m.mu.Lock()
	m.file, m.version, m.etag = file, version, `"`+hex.EncodeToString(sum[:])+`"`
	m.mu.Unlock()
}

// ServeHTTP answers GET /v1/model with the signed file, its version in
// X-Fedzip-Model-Version and its SHA-256 as the ETag. The header is for
// information only: it is not signed, and fetch-model takes the version
// from the signed file.
func (m *modelServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != modelPath {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	m.mu.RLock()
	file, version, etag := m.file, m.version, m.etag
	m.mu.RUnlock()
	if file == nil {
		http.Error(w, "no model delivered yet", http.StatusNotFound)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("X-Fedzip-Model-Version", strconv.FormatUint(version, 10))
	h.Set("ETag", etag)
	h.Set("Cache-Control", "no-cache")
	if r.Header.Get("If-None-Match") == etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h.Set("Content-Length", strconv.Itoa(len(file)))
	if r.Method == http.MethodGet {
		w.Write(file)
	}
}

// serveModels starts the model server on addr (HTTPS when tlsCfg is set).
func serveModels(addr string, tlsCfg *tls.Config, ms *modelServer, log *slog.Logger) (*http.Server, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: ms, TLSConfig: tlsCfg, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 60 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 16 << 10}
	go func() {
		var err error
		if tlsCfg != nil {
			err = srv.ServeTLS(lis, "", "")
		} else {
			err = srv.Serve(lis)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("model server", "err", err)
		}
	}()
	scheme := "http"
	if tlsCfg != nil {
		scheme = "https"
	}
	log.Info("serving delivered models", "url", scheme+"://"+lis.Addr().String()+modelPath)
	return srv, nil
}

func runFetchModel(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("fetch-model", flag.ContinueOnError)
	url := fs.String("url", "http://127.0.0.1:7080"+modelPath, "where the coordinator serves its delivered model")
	pubPath := fs.String("pubkey", "", "the coordinator's ed25519 public key (PEM): the file is verified against it")
	out := fs.String("out", "model.fzm", "where to write the verified file; a model already there is the reference for --allow-downgrade")
	ca := fs.String("ca", "", "CA of the server's certificate, for https")
	allowDowngrade := fs.Bool("allow-downgrade", false, "accept a model older than the one at --out (or one with no signed version while that one has one)")
	if code, done := parseFlags(ctx, fs, args, stdout, stderr, "fetch-model", "Downloads the newest delivered model from a coordinator and verifies its signature before writing it.\n"+
		"The version printed is the one inside the signed file; a model older than the one already at --out is refused unless --allow-downgrade.",
		"  fedzip fetch-model --url https://127.0.0.1:7080/v1/model --ca certs/ca.pem --pubkey key.pub.pem --out model.fzm\n"); done {
		return code
	}
	if *pubPath == "" {
		fmt.Fprintln(stderr, "fedzip fetch-model: --pubkey is required: an unverified model is never written")
		return exitUsage
	}
	pub, err := readPublicKey(*pubPath)
	if err != nil {
		fmt.Fprintf(stderr, "fedzip fetch-model: %v\n", err)
		return exitError
	}
	opt := fetch.Options{Client: &http.Client{Timeout: time.Minute}, PublicKey: pub, AllowDowngrade: *allowDowngrade}
	if *ca != "" {
		tlsCfg, err := transport.ClientTLSConfig(*ca, "", "")
		if err != nil {
			fmt.Fprintf(stderr, "fedzip fetch-model: %v\n", err)
			return exitError
		}
		opt.Client.Transport = &http.Transport{TLSClientConfig: tlsCfg}
	}
	if opt.Held, err = fetch.ReadHeld(*out, pub, 0); err != nil && !*allowDowngrade {
		fmt.Fprintf(stderr, "fedzip fetch-model: %v (remove it, or pass --allow-downgrade to overwrite it)\n", err)
		return exitError
	}
	m, err := fetch.Fetch(ctx, *url, opt)
	if err != nil {
		fmt.Fprintf(stderr, "fedzip fetch-model: refusing the model: %v\n", err)
		return exitError
	}
	if err := writeFileAtomic(*out, m.Signed); err != nil {
		fmt.Fprintf(stderr, "fedzip fetch-model: %v\n", err)
		return exitError
	}
	version := "with no signed version"
	if m.Versioned {
		version = "version " + strconv.FormatUint(m.Version, 10)
	}
	fmt.Fprintf(stdout, "fetched model %s (%d bytes, %d tensors), signature verified, written to %s\n", version, len(m.Signed), len(m.File.Tensors), *out)
	return exitOK
}
