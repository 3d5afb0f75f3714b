package server

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// ModelPath is where a coordinator serves its newest delivered model
// (Config.HTTPAddr).
const ModelPath = "/v1/model"

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
	if r.URL.Path != ModelPath {
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

// serveModels starts serving ms on addr (HTTPS when tlsCfg is set); it
// returns the server and a function that closes it and waits for its
// goroutine.
func (s *Server) serveModels(addr string, tlsCfg *tls.Config, ms *modelServer) (net.Addr, func(), error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	srv := &http.Server{Handler: ms, TLSConfig: tlsCfg, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 60 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 16 << 10}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var err error
		if tlsCfg != nil {
			err = srv.ServeTLS(lis, "", "")
		} else {
			err = srv.Serve(lis)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("model server", "err", err)
		}
	}()
	scheme := "http"
	if tlsCfg != nil {
		scheme = "https"
	}
	s.log.Info("serving delivered models", "url", scheme+"://"+lis.Addr().String()+ModelPath)
	return lis.Addr(), func() { srv.Close(); <-done }, nil
}
