package main

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"

	"golang.org/x/term"

	"github.com/fedzip/fedzip/internal/httpguard"
)

// Watching a run: logs, the Prometheus endpoint and the dashboard.

const logFormatUsage = "log format: text, json, or auto (text on a terminal, JSON otherwise)"

// newLogger returns a slog logger writing to w in format: "text", "json",
// or "auto", which is text when w is a terminal and JSON otherwise (a log
// collector, a file, a pipe).
func newLogger(w io.Writer, format string) (*slog.Logger, error) {
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, nil)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, nil)), nil
	case "auto", "":
		if isTerminal(w) {
			return slog.New(slog.NewTextHandler(w, nil)), nil
		}
		return slog.New(slog.NewJSONHandler(w, nil)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text, json or auto", format)
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// serveHTTP serves h, read-only and behind token if set, on addr; what
// names the endpoint in logs. It returns the server and its URL.
func serveHTTP(what, addr, token string, h http.Handler, log *slog.Logger) (*http.Server, string, error) {
	srv, a, err := httpguard.Listen(addr, h)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", what, err)
	}
	url := "http://" + hostPort(a)
	if !httpguard.Loopback(addr) && token == "" {
		log.Warn(what+" is reachable from other machines without a token: bind it to 127.0.0.1 or set its token flag", "addr", addr)
	}
	return srv, url, nil
}

// hostPort is a listener's address as a browser would use it: a wildcard
// host becomes 127.0.0.1.
func hostPort(a net.Addr) string {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}
