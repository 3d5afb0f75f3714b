package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"time"

	"golang.org/x/term"

	"github.com/fedzip/fedzip/coordinator"
	"github.com/fedzip/fedzip/dashboard"
	"github.com/fedzip/fedzip/internal/httpguard"
	"github.com/fedzip/fedzip/metrics"
	"github.com/fedzip/fedzip/round"
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

// observer is where a coordinator reports what it sees: metrics and the
// dashboard's feed, either of which may be nil.
type observer struct {
	svc     *coordinator.Service
	metrics *metrics.Coordinator
	feed    *dashboard.Feed
}

// roundClosed reports a closed round; eval says whether acc and loss hold
// the new model's test accuracy and loss.
func (o *observer) roundClosed(c round.Closed, eval bool, acc, loss float64) {
	if o == nil {
		return
	}
	if eval {
		o.metrics.Evaluated(acc, loss)
	}
	if o.feed == nil {
		return
	}
	r := dashboard.Round{Round: c.Round, Selected: c.Reported + len(c.Missing), Reported: c.Reported, Seconds: c.Duration.Seconds()}
	if eval {
		r.TestAccuracy, r.TestLoss = dashboard.Float(acc), dashboard.Float(loss)
	}
	if o.svc != nil {
		t := o.svc.RoundTraffic(c.Round)
		r.UploadBytes, r.DownloadBytes = t.BytesIn, t.BytesOut
		if t.BytesIn > 0 {
			r.Ratio = float64(t.DenseIn) / float64(t.BytesIn)
		}
		if !math.IsNaN(t.TrainLoss) {
			r.TrainLoss = dashboard.Float(t.TrainLoss)
		}
	}
	o.feed.AddRound(r)
}

// feedCoordinator keeps feed's round progress, clients and nodes current
// until ctx ends.
func feedCoordinator(ctx context.Context, node *coordinator.Node, feed *dashboard.Feed) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		v := node.FSM().Progress()
		st := node.MetricsState()
		var nodes []dashboard.Node
		for _, m := range node.Members() {
			nodes = append(nodes, dashboard.Node{ID: m.ID, RaftAddr: m.RaftAddr, GRPCAddr: m.GRPCAddr, Role: m.Role, Self: m.Self,
				Term: m.Term, Commit: m.CommitIndex, Applied: m.AppliedIndex})
		}
		feed.Update(func(s *dashboard.State) {
			s.Round, s.Registered, s.Alive, s.Nodes = v.Round, st.ClientsRegistered, st.ClientsAlive, nodes
			s.Selected, s.Received, s.Deadline = 0, 0, nil
			if !v.Initialised {
				s.Phase = "starting"
				return
			}
			c := v.Config
			s.Model, s.Strategy, s.UploadCodec, s.TotalRounds = c.Model, c.Strategy, c.UploadCodec, c.Round.Rounds
			s.Phase, s.Done = v.Phase.String(), v.Phase == round.Finished
			if v.Phase == round.Collecting {
				s.Selected, s.Received = v.NumSelected, v.Received
				if !v.Deadline.IsZero() {
					d := v.Deadline
					s.Deadline = &d
				}
			}
		})
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// observeCoordinator starts what --metrics-addr and --ui-addr ask for and
// returns the observer watchRounds reports to (nil if neither) and a
// function that stops it all.
func observeCoordinator(ctx context.Context, f coordinatorFlags, node *coordinator.Node, svc *coordinator.Service, log *slog.Logger) (*observer, func(), error) {
	if f.metricsAddr == "" && f.uiAddr == "" {
		return nil, func() {}, nil
	}
	var closers []func()
	stop := func() {
		for _, c := range closers {
			c()
		}
	}
	reg := metrics.NewRegistry()
	obs := &observer{svc: svc, metrics: metrics.NewCoordinator(reg, nil)}
	svc.Instrument(obs.metrics)
	if f.metricsAddr != "" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", metrics.Handler(reg))
		hs, url, err := serveHTTP("metrics", f.metricsAddr, f.metricsToken, httpguard.ReadOnly(f.metricsToken, mux), log)
		if err != nil {
			return nil, stop, err
		}
		closers = append(closers, func() { hs.Close() })
		log.Info("metrics", "url", url+"/metrics")
	}
	if f.uiAddr != "" {
		obs.feed = dashboard.NewFeed("fedzip cluster "+f.clusterID, "coordinator")
		obs.feed.Update(func(s *dashboard.State) { s.Node = f.id })
		hs, url, err := serveHTTP("dashboard", f.uiAddr, f.uiToken, dashboard.Handler(obs.feed, f.uiToken), log)
		if err != nil {
			stop()
			return nil, func() {}, err
		}
		fctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); feedCoordinator(fctx, node, obs.feed) }()
		closers = append(closers, func() { cancel(); <-done; hs.Close() })
		log.Info("dashboard", "url", url+"/")
	}
	return obs, stop, nil
}
