package server

import (
	"context"
	"log/slog"
	"math"
	"strconv"
	"time"

	"github.com/fedzip/fedzip/checkpoint"
	"github.com/fedzip/fedzip/coordinator"
	"github.com/fedzip/fedzip/dataset"
	"github.com/fedzip/fedzip/nn"
	"github.com/fedzip/fedzip/round"
)

// watch logs each closed round (the one "round closed" line, with its
// evaluation), reports it to the observer, saves the model and evaluates
// it, until the run finishes (nil), ctx ends (ErrClosed) or the gRPC
// server fails (its error). Rounds that closed while the previous one was
// being evaluated get their own lines first (FSM.ClosedSince), without an
// evaluation: only the newest model is still there to evaluate.
func (s *Server) watch(ctx context.Context) error {
	var (
		seen      uint64
		seenRound int
		model     nn.Model
		ws        nn.Scratch
		test      = s.test
	)
	for {
		v := s.node.FSM().Progress()
		if v.Initialised && model == nil {
			// The run in the log, which may differ from this node's.
			m, err := v.Config.Network()
			if err != nil {
				return err
			}
			model = m
			if test != nil {
				ws = evalScratch(model, test, s.log)
			}
		}
		if v.Initialised && v.Version > seen {
			seen = v.Version
			for _, cl := range s.node.FSM().ClosedSince(seenRound) {
				if cl.Round < v.LastClosed.Round {
					s.logSkipped(cl)
				}
			}
			seenRound = max(seenRound, v.LastClosed.Round)
			s.roundClosed(v, model, ws)
			if v.Phase == round.Finished {
				s.log.Info("training finished", "rounds", v.Round)
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ErrClosed
		case err := <-s.fatal:
			return err
		case <-v.Changed:
		case <-time.After(time.Second):
		}
	}
}

// logSkipped logs the "round closed" line of a round that closed before
// the one the watcher is about to report, and tells the observer: the
// line has no evaluation (that round's model is gone), the rest is as
// roundClosed's.
func (s *Server) logSkipped(closed round.Closed) {
	attrs := closedAttrs(closed, closed.Version)
	b := s.roundBytes(closed.Round)
	attrs = append(attrs, b.attrs()...)
	attrs = append(attrs, evalAttrs(closed)...)
	s.log.Info("round closed", attrs...)
	s.obs.roundClosed(closed, b, false, 0, 0)
}

// closedAttrs are the attributes a "round closed" line opens with: the
// round, the model version, the updates and who was left out.
func closedAttrs(closed round.Closed, version uint64) []any {
	attrs := []any{"round", closed.Round, "version", version, "reported", closed.Reported, "missing", len(closed.Missing), "clipped", closed.Clipped}
	if closed.Capped {
		attrs = append(attrs, "bound_capped", true)
	}
	if len(closed.Missing) > 0 && len(closed.Missing) <= 32 {
		attrs = append(attrs, "missing_clients", closed.Missing)
	}
	return append(attrs, excludedAttrs(closed.Excluded)...)
}

// evalAttrs are the clients' evaluation of the model the round trained
// from (version fed_version, the one before this round's), if any.
func evalAttrs(closed round.Closed) []any {
	e := closed.Eval
	if e == nil {
		return nil
	}
	return []any{"fed_accuracy", e.Accuracy, "fed_loss", e.Loss, "fed_examples", e.Examples, "fed_reports", e.Reports, "fed_version", e.Version}
}

// roundClosed logs the round v closed last, evaluates the new model,
// tells the observer and saves the checkpoint.
func (s *Server) roundClosed(v coordinator.Progress, model nn.Model, ws nn.Scratch) {
	fsm, test, closed := s.node.FSM(), s.test, v.LastClosed
	if ws == nil {
		test = nil
	}
	params, version := fsm.Model()
	attrs := closedAttrs(closed, version)
	var b roundBytes
	if closed.Round > 0 {
		b = s.roundBytes(closed.Round)
		attrs = append(attrs, b.attrs()...)
	}
	var acc, loss float64
	if test != nil {
		correct, sum := ws.Evaluate(params, test.X, test.Y)
		acc, loss = float64(correct)/float64(test.N), sum/float64(test.N)
		attrs = append(attrs, "test_accuracy", acc, "test_loss", loss)
		if v.Config.TaskDownloadCodec() != "" {
			// With a download codec clients train from the model they
			// reconstruct, not the global one.
			cm, _ := fsm.ClientModel()
			correct, _ := ws.Evaluate(cm, test.X, test.Y)
			attrs = append(attrs, "client_test_accuracy", float64(correct)/float64(test.N))
		}
	}
	attrs = append(attrs, evalAttrs(closed)...)
	s.log.Info("round closed", attrs...)
	if closed.Round > 0 {
		s.obs.roundClosed(closed, b, test != nil, acc, loss)
	}
	if s.cfg.SaveModel != "" {
		c := v.Config
		ck := checkpoint.New(model, params)
		ck.Header.Round, ck.Header.Version, ck.Header.Dataset = closed.Round, version, s.cfg.Dataset
		ck.Header.Extra = map[string]string{"seed": strconv.FormatUint(c.InitSeed, 10), "strategy": c.Strategy, "upload_codec": c.UploadCodec}
		if dc := c.TaskDownloadCodec(); dc != "" {
			ck.Header.Extra["download_codec"] = dc
		}
		if err := checkpoint.WriteFile(s.cfg.SaveModel, ck); err != nil {
			s.log.Error("saving the model", "err", err)
		}
	}
}

// maxExcludedLogged bounds the client IDs a "round closed" line lists.
const maxExcludedLogged = 32

// excludedAttrs are the line's exclusion attributes: how many accepted
// updates the strategy left out of the aggregate (reputation, filter),
// and, when any, the authenticated IDs of their clients in selection
// order, at most maxExcludedLogged of them (the count says how many were
// cut).
func excludedAttrs(ex []round.ClientID) []any {
	attrs := []any{"excluded", len(ex)}
	if len(ex) > 0 {
		attrs = append(attrs, "excluded_clients", ex[:min(len(ex), maxExcludedLogged)])
	}
	return attrs
}

// roundBytes is what a "round closed" line says of the bytes: the
// round's traffic as this node saw it, the totals since it started, and
// what its gRPC port read and wrote since its previous line.
type roundBytes struct {
	round, all      coordinator.RoundTraffic
	wireIn, wireOut int64
	wireAll         int64
}

// roundBytes reads the bytes of round r for its "round closed" line (the
// watcher's: it moves the wire counter's last reading).
func (s *Server) roundBytes(r int) roundBytes {
	b := roundBytes{round: s.svc.RoundTraffic(r), all: s.svc.TrafficTotals()}
	in, out := s.wire.Bytes()
	b.wireIn, b.wireOut, b.wireAll = in-s.wireSeen[0], out-s.wireSeen[1], in+out
	s.wireSeen = [2]int64{in, out}
	return b
}

// attrs are the line's byte attributes, the total first: every byte of
// the round's uploads (as received) and downloads (as served) with their
// framing, its ratio against dense FedAvg's, then each direction, the
// payloads alone, the gRPC port's bytes on the wire since the previous
// line, and the totals since the node started.
func (b roundBytes) attrs() []any {
	t, a := b.round, b.all
	return []any{"total_bytes", t.TotalBytes(), "total_ratio", round2(t.TotalRatio()),
		"upload_bytes", t.UploadBytes, "download_bytes", t.DownloadBytes, "downloads", t.Downloads,
		"upload_payload_bytes", t.BytesIn, "download_payload_bytes", t.BytesOut, "announced_bytes", t.AnnouncedBytes,
		"wire_bytes", b.wireIn + b.wireOut, "wire_in_bytes", b.wireIn, "wire_out_bytes", b.wireOut,
		"cumulative_total_bytes", a.TotalBytes(), "cumulative_total_ratio", round2(a.TotalRatio()), "cumulative_wire_bytes", b.wireAll}
}

// round2 rounds a ratio to two decimals for the log.
func round2(r float64) float64 { return math.Round(100*r) / 100 }

// evalScratch returns the scratch to evaluate model on test with (at most
// 2²² floats, 16 MiB), or nil, logged, when the test set's examples are
// not what the model reads: a net reads images of its input shape, an MLP
// any example of its input dimension.
func evalScratch(model nn.Model, test *dataset.Dataset, log *slog.Logger) nn.Scratch {
	_, mlp := model.(*nn.MLP)
	if test.Dim != model.InputDim() || !mlp && test.InputShape() != model.InputShape() {
		log.Error("not evaluating: the test set's examples are not the model's input", "model", model.Name(), "model_input", model.InputShape().String(), "test_input", test.InputShape().String())
		return nil
	}
	return model.Scratch(nn.BatchWithin(model, 1<<22, 250))
}
