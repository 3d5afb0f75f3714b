package report

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"

	"github.com/fedzip/fedzip/deliver/pipeline"
	"github.com/fedzip/fedzip/gradient"
	"github.com/fedzip/fedzip/sim"
)

// RoundOf returns a simulated round as a metrics file holds it.
func RoundOf(m sim.Metrics) Round {
	return Round{Round: m.Round, Evaluated: m.Evaluated, TestAccuracy: m.TestAccuracy, TestLoss: m.TestLoss, TrainLoss: m.TrainLoss,
		Clients: m.Clients, UploadBytes: m.UploadBytes, DownloadBytes: m.DownloadBytes, DenseUploadBytes: m.DenseUploadBytes,
		DenseDownloadBytes: m.DenseDownloadBytes, Seconds: m.Seconds, Epsilon: m.Epsilon}.withFed(m)
}

// withFed adds m's federated evaluation to r.
func (r Round) withFed(m sim.Metrics) Round {
	if e := m.FedEval; e != nil {
		r.FedEvaluated, r.FedAccuracy, r.FedLoss, r.FedVersion, r.FedExamples = true, e.Accuracy, e.Loss, e.Version, e.Examples
	}
	return r
}

// WriteRound appends a simulated round to a metrics file: one JSON object
// and a newline, which Read reads back. The test fields are present in
// evaluated rounds only.
func WriteRound(w io.Writer, m sim.Metrics) error {
	type line struct {
		Round        int      `json:"round"`
		TestAccuracy *float64 `json:"test_accuracy"`
		TestLoss     *float64 `json:"test_loss"`
		sim.Metrics
	}
	l := line{Round: m.Round, Metrics: m}
	if m.Evaluated {
		l.TestAccuracy, l.TestLoss = &m.TestAccuracy, &m.TestLoss
	}
	b, err := json.Marshal(l)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// Simulation is what 'fedzip simulate' reports at the end of a run: its
// settings, which the caller fills in, and its figures, which Add and
// Finish compute from the rounds (with Summarize). Its JSON encoding is
// the command's -o json output.
type Simulation struct {
	Dataset        string  `json:"dataset"`
	Model          string  `json:"model"`
	Params         int     `json:"params"`
	Partition      string  `json:"partition,omitempty"`
	Clients        int     `json:"clients"`
	PerRound       int     `json:"clients_per_round"`
	Rounds         int     `json:"rounds"`
	FinalAccuracy  float64 `json:"final_test_accuracy"`
	FinalLoss      float64 `json:"final_test_loss"`
	BestAccuracy   float64 `json:"best_test_accuracy"`
	BestRound      int     `json:"best_round"`
	Target         float64 `json:"target,omitempty"`
	RoundsToTarget int     `json:"rounds_to_target,omitempty"`
	UploadToTarget int64   `json:"upload_bytes_to_target,omitempty"`
	// DownloadToTarget is the bytes downloaded up to RoundsToTarget.
	DownloadToTarget int64 `json:"download_bytes_to_target,omitempty"`
	// TotalToTarget is every byte that crossed the network (uploaded +
	// downloaded) up to RoundsToTarget, and TotalRatioToTarget dense
	// FedAvg's total for the same rounds and clients over it.
	TotalToTarget      int64   `json:"total_bytes_to_target,omitempty"`
	TotalRatioToTarget float64 `json:"total_ratio_to_target,omitempty"`
	UploadCodec        string  `json:"upload_codec"`
	DownloadCodec      string  `json:"download_codec"`
	// FinalGlobalAccuracy is the test accuracy of the server's global
	// model after the last round, with a download codec (where the test
	// accuracy is that of the clients' model).
	FinalGlobalAccuracy float64             `json:"final_global_test_accuracy,omitempty"`
	Delivered           *pipeline.Delivered `json:"delivered,omitempty"`
	Strategy            string              `json:"strategy"`
	// TotalBytes is every byte that crossed the network, UploadBytes +
	// DownloadBytes; DenseTotalBytes is dense FedAvg's total for the same
	// rounds and clients (4 bytes per parameter per upload and per
	// download), and TotalRatio DenseTotalBytes over TotalBytes.
	TotalBytes      int64   `json:"total_bytes"`
	DenseTotalBytes int64   `json:"dense_total_bytes"`
	TotalRatio      float64 `json:"total_ratio"`
	UploadBytes     int64   `json:"upload_bytes"`
	UploadRatio     float64 `json:"upload_ratio"`
	ClientStateMB   float64 `json:"client_state_mb,omitempty"`
	DownloadBytes   int64   `json:"download_bytes"`
	// DenseUploadBytes and DenseDownloadBytes are the totals dense float32
	// models would have cost; DownloadRatio is DenseDownloadBytes over
	// DownloadBytes.
	DenseUploadBytes   int64   `json:"dense_upload_bytes"`
	DenseDownloadBytes int64   `json:"dense_download_bytes"`
	DownloadRatio      float64 `json:"download_ratio"`
	Seconds            float64 `json:"seconds"`
	SecondsPerRound    float64 `json:"seconds_per_round"`
	Workers            int     `json:"workers"`
	ProxMu             float64 `json:"prox_mu,omitempty"`
	Attack             string  `json:"attack,omitempty"`
	Attackers          float64 `json:"attackers,omitempty"`
	// Updates and Clipped count the updates aggregated and those the
	// strategy bounded in norm or weight (sim.Metrics.Clipped);
	// Unbounded, which the caller sets (aggregate.Unbounded), says that
	// the strategy is a mean without a bound (bound=off).
	Updates   int  `json:"updates"`
	Clipped   int  `json:"clipped_updates"`
	Unbounded bool `json:"unbounded,omitempty"`
	// Refused counts the updates refused for their values, which the
	// rounds went on without (sim.Metrics.Refused), RefusedAttackers the
	// attackers' among them, and AbortedAttempts the round attempts that
	// refusals left with too few updates to close (sim.Metrics.Aborted).
	Refused          int `json:"refused_updates,omitempty"`
	RefusedAttackers int `json:"refused_attacker_updates,omitempty"`
	AbortedAttempts  int `json:"aborted_attempts,omitempty"`

	// CappedRounds counts the rounds whose bound the strategy capped at a
	// multiple of the last round's (sim.Metrics.BoundCapped).
	CappedRounds int `json:"bound_capped_rounds,omitempty"`

	// BackdoorSuccess is the backdoor's success rate in the last round
	// that measured it (sim.Metrics.BackdoorSuccess); nil without one.
	BackdoorSuccess *float64 `json:"final_backdoor_success,omitempty"`
	// Epsilon is the privacy spent by the whole run at DPDelta, when DP
	// adds noise; the caller sets DPDelta, which is reported only then.
	Epsilon float64 `json:"epsilon,omitempty"`
	DPDelta float64 `json:"dp_delta,omitempty"`
	DPClip  float64 `json:"dp_clip,omitempty"`
	// FedAccuracy and FedLoss are the last federated evaluation (the
	// clients' held-out examples, weighted), of model version FedVersion,
	// over FedExamples examples; FedEvaluated says whether there was one.
	FedEvaluated bool    `json:"fed_evaluated,omitempty"`
	FedAccuracy  float64 `json:"final_fed_accuracy,omitempty"`
	FedLoss      float64 `json:"final_fed_loss,omitempty"`
	FedVersion   uint64  `json:"final_fed_model_version,omitempty"`
	FedExamples  uint64  `json:"final_fed_examples,omitempty"`
	// SavedTo and MetricsIn name the files the run wrote, for the table.
	SavedTo   string `json:"-"`
	MetricsIn string `json:"-"`

	run Run
}

// Add accounts for one round, in order.
func (s *Simulation) Add(m sim.Metrics) {
	s.run.Rounds = append(s.run.Rounds, RoundOf(m))
	s.PerRound = m.Clients
	s.ClientStateMB = float64(m.ClientStateBytes) / 1e6
	if m.GlobalEvaluated {
		s.FinalGlobalAccuracy = m.GlobalTestAccuracy
	}
	s.DPClip = m.DPClip
	if m.Reported > 0 {
		s.Updates += m.Reported
	} else {
		s.Updates += m.Clients // metrics written before Reported
	}
	s.Clipped += m.Clipped
	s.Refused += m.Refused
	s.RefusedAttackers += m.RefusedAttackers
	s.AbortedAttempts += m.Aborted
	if m.BoundCapped {
		s.CappedRounds++
	}
	if m.BackdoorSuccess != nil {
		s.BackdoorSuccess = m.BackdoorSuccess
	}
	if e := m.FedEval; e != nil {
		s.FedEvaluated, s.FedAccuracy, s.FedLoss, s.FedVersion, s.FedExamples = true, e.Accuracy, e.Loss, e.Version, e.Examples
	}
}

// Finish computes the run's figures from the rounds added: accuracies,
// the round and bytes to Target, totals and ratios, seconds per round.
// seconds is the run's wall time.
func (s *Simulation) Finish(seconds float64) {
	targets := []float64{}
	if s.Target > 0 {
		targets = []float64{s.Target}
	}
	sum := Summarize(s.run, targets)
	s.FinalAccuracy, s.BestAccuracy, s.BestRound = sum.FinalAccuracy, sum.BestAccuracy, sum.BestRound
	s.UploadBytes, s.DownloadBytes, s.Epsilon = sum.UploadBytes, sum.DownloadBytes, sum.Epsilon
	if s.Epsilon == 0 {
		s.DPDelta = 0
	}
	var total float64
	s.DenseUploadBytes, s.DenseDownloadBytes = 0, 0
	for _, r := range s.run.Rounds {
		s.DenseUploadBytes += r.DenseUploadBytes
		s.DenseDownloadBytes += r.DenseDownloadBytes
		total += r.Seconds
		if r.Evaluated {
			s.FinalLoss = r.TestLoss
		}
		if len(sum.Reached) > 0 && r.Round <= sum.Reached[0].Round {
			s.DownloadToTarget += r.DownloadBytes
		}
	}
	if len(sum.Reached) > 0 && sum.Reached[0].Round > 0 {
		x := sum.Reached[0]
		s.RoundsToTarget, s.UploadToTarget, s.TotalToTarget, s.TotalRatioToTarget = x.Round, x.UploadBytes, x.TotalBytes, x.TotalRatio()
	} else {
		s.DownloadToTarget = 0
	}
	s.TotalBytes, s.DenseTotalBytes, s.TotalRatio = sum.TotalBytes, sum.DenseTotalBytes, sum.TotalRatio()
	s.UploadRatio = float64(s.DenseUploadBytes) / float64(max(s.UploadBytes, 1))
	s.DownloadRatio = float64(s.DenseDownloadBytes) / float64(max(s.DownloadBytes, 1))
	s.Seconds = seconds
	if n := len(s.run.Rounds); n > 0 {
		s.SecondsPerRound = total / float64(n)
	}
}

// WriteJSON writes s as indented JSON.
func (s *Simulation) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(s)
}

// refusedRow is the summary's line on refused updates.
func refusedRow(refused, attackers, aborted int) string {
	v := fmt.Sprintf("%d updates whose values were not finite or did not decode; their clients were dropped from the round", refused)
	if attackers > 0 {
		v += fmt.Sprintf("; %d of them attackers'", attackers)
	}
	if aborted > 0 {
		v += fmt.Sprintf("; %d round attempts aborted and opened again with too few updates left", aborted)
	}
	return v
}

// WriteTable writes s as a two-column table under a "Summary" heading.
func (s *Simulation) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "  %s\t%s\n", k, v) }
	fmt.Fprintln(tw, "\nSummary")
	row("model", fmt.Sprintf("%s (%d parameters)", s.Model, s.Params))
	row("clients", fmt.Sprintf("%d, %d per round", s.Clients, s.PerRound))
	row("rounds", strconv.Itoa(s.Rounds))
	row("final test accuracy", fmt.Sprintf("%.2f%% (loss %.4f)", 100*s.FinalAccuracy, s.FinalLoss))
	row("best test accuracy", fmt.Sprintf("%.2f%% at round %d", 100*s.BestAccuracy, s.BestRound))
	if s.FedEvaluated {
		row("federated accuracy", fmt.Sprintf("%.2f%% (loss %.4f) of the model after round %d, on the clients' %d held-out examples", 100*s.FedAccuracy, s.FedLoss, s.FedVersion, s.FedExamples))
	}
	if s.Target > 0 {
		if s.RoundsToTarget > 0 {
			row(fmt.Sprintf("rounds to %.2f%%", 100*s.Target), fmt.Sprintf("%d (%s in total%s: %s uploaded, %s downloaded)", s.RoundsToTarget,
				BytesIEC(s.TotalToTarget), smaller(s.TotalRatioToTarget, "dense FedAvg"), BytesIEC(s.UploadToTarget), BytesIEC(s.DownloadToTarget)))
		} else {
			row(fmt.Sprintf("rounds to %.2f%%", 100*s.Target), "not reached")
		}
	}
	row("total bytes", fmt.Sprintf("%s uploaded + downloaded%s", BytesIEC(s.TotalBytes), smaller(s.TotalRatio, "dense FedAvg's "+BytesIEC(s.DenseTotalBytes))))
	row("uploaded", fmt.Sprintf("%s (%s; %.1f× smaller than dense float32)", BytesIEC(s.UploadBytes), s.UploadCodec, s.UploadRatio))
	if s.ClientStateMB > 0 {
		row("client codec state", fmt.Sprintf("%.1f MB", s.ClientStateMB))
	}
	if gradient.IsNone(s.DownloadCodec) {
		row("downloaded", fmt.Sprintf("%s (dense float32)", BytesIEC(s.DownloadBytes)))
	} else {
		row("downloaded", fmt.Sprintf("%s (%s; %.1f× smaller than dense float32)", BytesIEC(s.DownloadBytes), s.DownloadCodec, s.DownloadRatio))
		row("server global model", fmt.Sprintf("%.2f%% test accuracy after the last round (the accuracies above are the clients' model)", 100*s.FinalGlobalAccuracy))
	}
	row("strategy", s.Strategy)
	switch {
	case s.Unbounded:
		row("clipped", "bound=off: no update is bounded in norm or weight (one client can ruin the model)")
	case s.Updates > 0:
		capped := ""
		if s.CappedRounds > 0 {
			capped = fmt.Sprintf("; the bound capped at bound-growth × the last round's in %d rounds", s.CappedRounds)
		}
		row("clipped", fmt.Sprintf("%d of %d updates%s", s.Clipped, s.Updates, capped))
	}
	if s.Refused > 0 {
		row("refused", refusedRow(s.Refused, s.RefusedAttackers, s.AbortedAttempts))
	}
	if s.Attack != "" {
		row("attack", fmt.Sprintf("%s by %g of the clients", s.Attack, s.Attackers))
	}
	if s.BackdoorSuccess != nil {
		row("backdoor success", fmt.Sprintf("%.2f%% of triggered test images classified as the target", 100**s.BackdoorSuccess))
	}
	switch {
	case s.Epsilon > 0:
		row("privacy", fmt.Sprintf("(ε = %.3g, δ = %g)-DP per client, clip %.3g", s.Epsilon, s.DPDelta, s.DPClip))
	case s.DPClip > 0:
		row("privacy", "clipping without noise: no ε")
	}
	row("time", fmt.Sprintf("%.1f s, %.3f s per round (%d workers)", s.Seconds, s.SecondsPerRound, s.Workers))
	if d := s.Delivered; d != nil {
		row("delivered", fmt.Sprintf("%s: %s, %.1f× smaller than float32, test accuracy %.2f%% (%+.2f points)", d.File, BytesIEC(int64(d.Bytes)), d.Ratio, 100*d.Accuracy, d.Delta))
		if d.PubKey != "" {
			row("verify with", d.PubKey)
		}
	}
	if s.SavedTo != "" {
		row("model saved to", s.SavedTo)
	}
	if s.MetricsIn != "" {
		row("metrics in", s.MetricsIn)
	}
	return tw.Flush()
}

// smaller is ", 4.9× smaller than what" for a ratio r, ", 1.3× larger
// than what" below 1, "" when unknown.
func smaller(r float64, what string) string {
	switch {
	case !(r > 0):
		return ""
	case r < 1:
		return fmt.Sprintf(", %s larger than %s", Times(1/r), what)
	}
	return fmt.Sprintf(", %s smaller than %s", Times(r), what)
}

// BytesIEC formats n with binary units, as 'fedzip simulate' prints sizes:
// 950 B, 1.2 KiB, 2.3 MiB.
func BytesIEC(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
