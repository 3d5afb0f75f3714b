// Package report reads the per-round metrics that "fedzip simulate
// --metrics-out" writes (one JSON object a line) and turns one or more runs
// into PNG plots and a markdown summary.
//
// Reading is bounded: a line longer than MaxLineBytes or a file with more
// than MaxRounds rounds is refused, and a bad line is reported with its
// number. Plots are deterministic: the same runs give the same bytes.
package report

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
)

// Limits of Read.
const (
	// MaxLineBytes is the longest line Read accepts, newline excluded.
	MaxLineBytes = 1 << 20
	// MaxRounds is the most rounds Read accepts in one file.
	MaxRounds = 1_000_000
)

// Round is one line of a metrics file.
type Round struct {
	Round int
	// Evaluated says whether the round was evaluated on the test set;
	// TestAccuracy and TestLoss are zero when it was not.
	Evaluated    bool
	TestAccuracy float64 // in [0, 1]
	TestLoss     float64
	TrainLoss    float64
	Clients      int
	// UploadBytes and DownloadBytes are this round's bytes, not totals.
	UploadBytes   int64
	DownloadBytes int64
	// DenseUploadBytes and DenseDownloadBytes are what the round would
	// have cost with dense float32 models (0 in files that predate them).
	DenseUploadBytes   int64
	DenseDownloadBytes int64
	Seconds            float64
	// Epsilon is the privacy spent after this round (0: no DP).
	Epsilon float64
	// FedEvaluated says whether the round carries a federated evaluation
	// (sim.Metrics.FedEval): the clients' weighted accuracy and loss on
	// their held-out examples, of model version FedVersion (Round−1).
	FedEvaluated         bool
	FedAccuracy, FedLoss float64
	FedVersion           uint64
	FedExamples          uint64
}

// TotalBytes is the round's every byte that crossed the network: its
// upload and download (files that predate download_bytes count uploads
// only). Read checks that the sum of all rounds' totals fits an int64.
func (r Round) TotalBytes() int64 { return r.UploadBytes + r.DownloadBytes }

// Run is one metrics file: its rounds in increasing order.
type Run struct {
	Label  string
	Rounds []Round
}

// line is what Read decodes; pointers tell absent from zero.
type line struct {
	Round         *int     `json:"round"`
	TestAccuracy  *float64 `json:"test_accuracy"`
	TestLoss      *float64 `json:"test_loss"`
	TrainLoss     *float64 `json:"train_loss"`
	Clients       *int     `json:"clients"`
	UploadBytes   *int64   `json:"upload_bytes"`
	DownloadBytes *int64   `json:"download_bytes"`
	DenseUpload   *int64   `json:"dense_upload_bytes"`
	DenseDownload *int64   `json:"dense_download_bytes"`
	Seconds       *float64 `json:"seconds"`
	Epsilon       *float64 `json:"epsilon"`
	FedEval       *struct {
		Version  uint64   `json:"model_version"`
		Examples uint64   `json:"examples"`
		Loss     *float64 `json:"loss"`
		Accuracy *float64 `json:"accuracy"`
	} `json:"fed_eval"`
}

// ReadFile reads a metrics file. An empty label means the file's name
// without its extension. Errors name the file.
func ReadFile(path, label string) (Run, error) {
	if label == "" {
		label = strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	}
	f, err := os.Open(path)
	if err != nil {
		return Run{}, err
	}
	defer f.Close()
	run, err := Read(f, label)
	if err != nil {
		return Run{}, fmt.Errorf("%s: %w", path, err)
	}
	return run, nil
}

// Read reads metrics lines from r. Blank lines are skipped and fields it
// does not know are ignored. Each line must be a JSON object with a round
// number greater than the line before's and upload_bytes; test_accuracy
// is null or absent in rounds that were not evaluated, else in [0, 1].
// A bad line returns a *LineError wrapping ErrMalformed or ErrLineTooLong.
func Read(r io.Reader, label string) (Run, error) {
	run := Run{Label: label}
	sc := bufio.NewScanner(r)
	// Room for the longest line, its "\r\n", and one byte more so that a
	// longer line is seen as such rather than as the scanner's limit.
	sc.Buffer(make([]byte, 0, 64<<10), MaxLineBytes+3)
	n := 0
	var upload, total, dense int64
	for sc.Scan() {
		n++
		b := sc.Bytes()
		if len(b) > MaxLineBytes {
			return Run{}, &LineError{n, ErrLineTooLong}
		}
		if len(bytes.TrimSpace(b)) == 0 {
			continue
		}
		if len(run.Rounds) == MaxRounds {
			return Run{}, &LineError{n, fmt.Errorf("%w (%d)", ErrTooManyRounds, MaxRounds)}
		}
		rd, err := parseLine(b)
		if err != nil {
			return Run{}, &LineError{n, fmt.Errorf("%w: %w", ErrMalformed, err)}
		}
		if k := len(run.Rounds); k > 0 && rd.Round <= run.Rounds[k-1].Round {
			return Run{}, &LineError{n, fmt.Errorf("%w: round %d after round %d", ErrMalformed, rd.Round, run.Rounds[k-1].Round)}
		}
		if rd.UploadBytes > math.MaxInt64-upload {
			return Run{}, &LineError{n, fmt.Errorf("%w: total upload_bytes overflows", ErrMalformed)}
		}
		upload += rd.UploadBytes
		// The totals of the summary and the plots: upload + download, and
		// dense FedAvg's.
		for _, f := range []struct {
			sum  *int64
			a, b int64
			what string
		}{{&total, rd.UploadBytes, rd.DownloadBytes, "upload_bytes + download_bytes"}, {&dense, rd.DenseUploadBytes, rd.DenseDownloadBytes, "dense bytes"}} {
			if f.a > math.MaxInt64-*f.sum || f.b > math.MaxInt64-*f.sum-f.a {
				return Run{}, &LineError{n, fmt.Errorf("%w: total %s overflows", ErrMalformed, f.what)}
			}
			*f.sum += f.a + f.b
		}
		run.Rounds = append(run.Rounds, rd)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return Run{}, &LineError{n + 1, ErrLineTooLong}
		}
		return Run{}, err
	}
	if len(run.Rounds) == 0 {
		return Run{}, ErrEmpty
	}
	return run, nil
}

func parseLine(b []byte) (Round, error) {
	var l line
	if err := json.Unmarshal(b, &l); err != nil {
		var syn *json.SyntaxError
		if errors.As(err, &syn) {
			return Round{}, fmt.Errorf("not JSON at byte %d: %v", syn.Offset, err)
		}
		return Round{}, err
	}
	var r Round
	switch {
	case l.Round == nil:
		return r, errors.New("no round")
	case *l.Round < 1:
		return r, fmt.Errorf("round %d, want 1 or more", *l.Round)
	case l.UploadBytes == nil:
		return r, errors.New("no upload_bytes")
	}
	r.Round = *l.Round
	if l.TestAccuracy != nil {
		a := *l.TestAccuracy
		if !(a >= 0 && a <= 1) {
			return r, fmt.Errorf("test_accuracy %g out of [0, 1]", a)
		}
		r.Evaluated, r.TestAccuracy = true, a
	}
	if e := l.FedEval; e != nil {
		switch {
		case e.Accuracy == nil || !(*e.Accuracy >= 0 && *e.Accuracy <= 1):
			return r, errors.New("fed_eval.accuracy missing or out of [0, 1]")
		case e.Loss == nil || !(*e.Loss >= 0):
			return r, errors.New("fed_eval.loss missing or negative")
		}
		r.FedEvaluated, r.FedAccuracy, r.FedLoss, r.FedVersion, r.FedExamples = true, *e.Accuracy, *e.Loss, e.Version, e.Examples
	}
	for _, f := range []struct {
		name string
		v    *float64
		dst  *float64
	}{
		{"test_loss", l.TestLoss, &r.TestLoss},
		{"train_loss", l.TrainLoss, &r.TrainLoss},
		{"seconds", l.Seconds, &r.Seconds},
		{"epsilon", l.Epsilon, &r.Epsilon},
	} {
		if f.v != nil {
			if *f.v < 0 {
				return r, fmt.Errorf("%s %g is negative", f.name, *f.v)
			}
			*f.dst = *f.v
		}
	}
	for _, f := range []struct {
		name string
		v    *int64
		dst  *int64
	}{
		{"upload_bytes", l.UploadBytes, &r.UploadBytes},
		{"download_bytes", l.DownloadBytes, &r.DownloadBytes},
		{"dense_upload_bytes", l.DenseUpload, &r.DenseUploadBytes},
		{"dense_download_bytes", l.DenseDownload, &r.DenseDownloadBytes},
	} {
		if f.v != nil {
			if *f.v < 0 {
				return r, fmt.Errorf("%s %d is negative", f.name, *f.v)
			}
			*f.dst = *f.v
		}
	}
	if l.Clients != nil {
		if *l.Clients < 0 {
			return r, fmt.Errorf("clients %d is negative", *l.Clients)
		}
		r.Clients = *l.Clients
	}
	return r, nil
}
