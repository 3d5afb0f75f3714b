package server

import (
	"context"
	"math"
	"net"
	"net/http"
	"time"

	"github.com/fedzip/fedzip/coordinator"
	"github.com/fedzip/fedzip/dashboard"
	"github.com/fedzip/fedzip/internal/httpguard"
	"github.com/fedzip/fedzip/metrics"
	"github.com/fedzip/fedzip/round"
)

// Watching a run: the Prometheus endpoint and the dashboard.

// observer is where a node reports what it sees: metrics and the
// dashboard's feed, either of which may be nil.
type observer struct {
	metrics *metrics.Coordinator
	feed    *dashboard.Feed
}

// roundClosed reports a closed round and its bytes b; eval says whether
// acc and loss hold the new model's test accuracy and loss.
func (o *observer) roundClosed(c round.Closed, b roundBytes, eval bool, acc, loss float64) {
	if o == nil {
		return
	}
	o.metrics.Excluded(len(c.Excluded))
	if eval {
		o.metrics.Evaluated(acc, loss)
	}
	if e := c.Eval; e != nil {
		o.metrics.FedEvaluated(e.Accuracy, e.Loss, e.Examples, e.Reports)
	}
	if o.feed == nil {
		return
	}
	r := dashboard.Round{Round: c.Round, Selected: c.Reported + len(c.Missing), Reported: c.Reported, Seconds: c.Duration.Seconds()}
	if eval {
		r.TestAccuracy, r.TestLoss = dashboard.Float(acc), dashboard.Float(loss)
	}
	if e := c.Eval; e != nil {
		r.FedAccuracy, r.FedLoss, r.FedVersion, r.FedExamples = dashboard.Float(e.Accuracy), dashboard.Float(e.Loss), e.Version, e.Examples
	}
	t := b.round
	r.UploadBytes, r.DownloadBytes, r.DenseBytes, r.WireBytes = t.UploadBytes, t.DownloadBytes, t.DenseIn+t.DenseOut, b.wireIn+b.wireOut
	if t.UploadBytes > 0 {
		r.Ratio = float64(t.DenseIn) / float64(t.UploadBytes)
	}
	if !math.IsNaN(t.TrainLoss) {
		r.TrainLoss = dashboard.Float(t.TrainLoss)
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

// startObserver starts what MetricsAddr and UIAddr ask for and sets
// s.obs (nil if neither); what it started is released with the server.
func (s *Server) startObserver() error {
	c := s.cfg
	if c.MetricsAddr == "" && c.UIAddr == "" {
		return nil
	}
	reg := metrics.NewRegistry()
	s.obs = &observer{metrics: metrics.NewCoordinator(reg, nil)}
	s.svc.Instrument(s.obs.metrics)
	s.obs.metrics.CountWire(s.wire.Bytes)
	if c.MetricsAddr != "" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", metrics.Handler(reg))
		a, url, err := s.serveHTTP("metrics", c.MetricsAddr, c.MetricsToken, httpguard.ReadOnly(c.MetricsToken, mux))
		if err != nil {
			return err
		}
		s.metricsAddr = a
		s.log.Info("metrics", "url", url+"/metrics")
	}
	if c.UIAddr != "" {
		s.obs.feed = dashboard.NewFeed("fedzip cluster "+c.ClusterID, "coordinator")
		s.obs.feed.Update(func(st *dashboard.State) { st.Node = c.ID })
		a, url, err := s.serveHTTP("dashboard", c.UIAddr, c.UIToken, dashboard.Handler(s.obs.feed, c.UIToken))
		if err != nil {
			return err
		}
		s.uiAddr = a
		s.goOwned(func(ctx context.Context) { feedCoordinator(ctx, s.node, s.obs.feed) })
		s.log.Info("dashboard", "url", url+"/")
	}
	return nil
}

// serveHTTP serves h on addr until the server is released (see
// httpguard.Serve). It returns the address bound and its URL.
func (s *Server) serveHTTP(what, addr, token string, h http.Handler) (net.Addr, string, error) {
	hs, err := httpguard.Serve(what, addr, token, h, s.log)
	if err != nil {
		return nil, "", err
	}
	s.onRelease(func() { hs.Close() })
	return hs.Addr, hs.URL, nil
}
