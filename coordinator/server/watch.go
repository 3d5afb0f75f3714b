package server

import (
	"context"
	"strconv"
	"time"

	"github.com/fedzip/fedzip/checkpoint"
	"github.com/fedzip/fedzip/coordinator"
	"github.com/fedzip/fedzip/nn"
	"github.com/fedzip/fedzip/round"
)

// watch logs each closed round (the one "round closed" line, with its
// evaluation), reports it to the observer, saves the model and evaluates
// it, until the run finishes (nil), ctx ends (ErrClosed) or the gRPC
// server fails (its error). A round that closes while the previous one is
// still being evaluated is reported with the newer one.
func (s *Server) watch(ctx context.Context) error {
	var (
		seen  uint64
		model *nn.MLP
		ws    *nn.Workspace
		test  = s.test
	)
	for {
		v := s.node.FSM().Progress()
		if v.Initialised && model == nil {
			// The run in the log, which may differ from this node's.
			m, err := nn.ParseArch(v.Config.Model, v.Config.InputDim, v.Config.Classes)
			if err != nil {
				return err
			}
			model = m
			if test != nil {
				ws = model.NewWorkspace(250)
			}
		}
		if v.Initialised && v.Version > seen {
			seen = v.Version
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

// roundClosed logs the round v closed last, evaluates the new model,
// tells the observer and saves the checkpoint.
func (s *Server) roundClosed(v coordinator.Progress, model *nn.MLP, ws *nn.Workspace) {
	fsm, test, closed := s.node.FSM(), s.test, v.LastClosed
	params, version := fsm.Model()
	attrs := []any{"round", closed.Round, "version", version, "reported", closed.Reported, "missing", len(closed.Missing)}
	if len(closed.Missing) > 0 && len(closed.Missing) <= 32 {
		attrs = append(attrs, "missing_clients", closed.Missing)
	}
	if closed.Round > 0 {
		// What this node sent while the round was open: with a download
		// codec, compare with downloads × 4 bytes per parameter.
		t := s.svc.RoundTraffic(closed.Round)
		attrs = append(attrs, "downloads", t.Downloads, "download_bytes", t.BytesOut)
	}
	var acc, loss float64
	if test != nil {
		correct, sum := model.Evaluate(ws, params, test.X, test.Y)
		acc, loss = float64(correct)/float64(test.N), sum/float64(test.N)
		attrs = append(attrs, "test_accuracy", acc, "test_loss", loss)
		if v.Config.TaskDownloadCodec() != "" {
			// With a download codec clients train from the model they
			// reconstruct, not the global one.
			cm, _ := fsm.ClientModel()
			correct, _ := model.Evaluate(ws, cm, test.X, test.Y)
			attrs = append(attrs, "client_test_accuracy", float64(correct)/float64(test.N))
		}
	}
	if e := closed.Eval; e != nil {
		// The clients' evaluation of the model the round trained from
		// (version fed_version, the one before this round's).
		attrs = append(attrs, "fed_accuracy", e.Accuracy, "fed_loss", e.Loss, "fed_examples", e.Examples, "fed_reports", e.Reports, "fed_version", e.Version)
	}
	s.log.Info("round closed", attrs...)
	if closed.Round > 0 {
		s.obs.roundClosed(closed, test != nil, acc, loss)
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
