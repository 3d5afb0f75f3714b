package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedzip/fedzip/report"
)

// TestSimulateDownloadCodec runs the same small simulation with dense and
// compressed downloads, on 1 and 3 workers: with none every round
// downloads the dense model; with a codec the rounds after the first
// download less, the summary totals and ratio add up, and the results do
// not depend on the workers.
func TestSimulateDownloadCodec(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		codec   string
		smaller bool
	}{
		{"none", false},
		{"topk=0.1,bits=8", true},
		{"topk=0.05,bits=ternary", true},
	} {
		t.Run(tc.codec, func(t *testing.T) {
			var ref *report.Simulation
			for _, w := range []string{"1", "3"} {
				metrics := filepath.Join(dir, strings.NewReplacer("=", "", ",", "").Replace(tc.codec)+w+".jsonl")
				code, stdout, stderr := runCmd("simulate", "--dataset", "synthetic", "--clients", "20", "--fraction", "0.5",
					"--model", "mlp:16", "--rounds", "5", "--download-codec", tc.codec, "--download-max-lag", "2",
					"--workers", w, "--metrics-out", metrics, "-o", "json", "--quiet", "--deliver", "")
				if code != exitOK {
					t.Fatalf("exit %d: %s", code, stderr)
				}
				var s report.Simulation
				if err := json.Unmarshal([]byte(stdout), &s); err != nil {
					t.Fatal(err)
				}
				var down, dense, denseUp int64
				for i, m := range readMetrics(t, metrics) {
					d, dd, du := int64(m["download_bytes"].(float64)), int64(m["dense_download_bytes"].(float64)), int64(m["dense_upload_bytes"].(float64))
					if want := int64(10 * 4 * s.Params); dd != want || du != want {
						t.Fatalf("round %d: dense bytes %d down, %d up, want %d", i+1, dd, du, want)
					}
					switch {
					case !tc.smaller && d != dd:
						t.Fatalf("round %d: download %d, dense %d", i+1, d, dd)
					case tc.smaller && i > 0 && d >= dd:
						t.Fatalf("round %d: download %d not smaller than dense %d", i+1, d, dd)
					}
					down, dense, denseUp = down+d, dense+dd, denseUp+du
				}
				if s.DownloadBytes != down || s.DenseDownloadBytes != dense || s.DenseUploadBytes != denseUp || s.DownloadCodec != tc.codec {
					t.Fatalf("summary %+v; metrics total %d downloaded, %d dense", s, down, dense)
				}
				if ratio := float64(dense) / float64(down); s.DownloadRatio != ratio || tc.smaller != (ratio > 1.5) {
					t.Fatalf("download ratio %v, want %v", s.DownloadRatio, ratio)
				}
				if tc.smaller != (s.FinalGlobalAccuracy > 0) {
					t.Fatalf("global model accuracy %v with download codec %s", s.FinalGlobalAccuracy, tc.codec)
				}
				if ref == nil {
					ref = &s
				} else if s.FinalAccuracy != ref.FinalAccuracy || s.FinalLoss != ref.FinalLoss || s.DownloadBytes != ref.DownloadBytes || s.FinalGlobalAccuracy != ref.FinalGlobalAccuracy {
					t.Fatalf("workers %s: %+v, 1 worker %+v", w, s, *ref)
				}
			}
		})
	}
}

func TestSimulateBadDownloadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--download-codec", "stcm"}, "momentum"},
		{[]string{"--download-codec", "dgc"}, "momentum"},
		{[]string{"--download-codec", "topk=3"}, "--download-codec"},
		{[]string{"--download-codec", "zip"}, "--download-codec"},
		{[]string{"--download-max-lag", "0"}, "--download-max-lag"},
	} {
		code, _, stderr := runCmd(append([]string{"simulate"}, tc.args...)...)
		if code != exitUsage || !strings.Contains(stderr, tc.want) || strings.Count(strings.TrimRight(stderr, "\n"), "\n") != 0 {
			t.Errorf("%v: exit %d, stderr %q", tc.args, code, stderr)
		}
	}
}

// TestCoordinatorDownloadFlags checks that the coordinator refuses a
// download codec the server cannot encode with, or a lag out of range,
// as usage errors before it opens anything, and that the flag also comes
// from the environment.
func TestCoordinatorDownloadFlags(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--download-codec", "topk=0.1,momentum=0.9"}, "momentum"},
		{[]string{"--download-codec", "dgc"}, "momentum"},
		{[]string{"--download-codec", "topk=2"}, "--download-codec"},
		{[]string{"--download-codec", "topk=0.1,bits=8", "--download-max-lag", "0"}, "--download-max-lag 0"},
		{[]string{"--download-codec", "stc", "--download-max-lag", "1001"}, "--download-max-lag 1001"},
	} {
		args := append([]string{"coordinator", "--insecure", "--state-dir", filepath.Join(dir, "x"), "--listen", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0"}, tc.args...)
		code, _, stderr := runCmd(args...)
		if code != exitUsage || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, %q; want a usage error naming %q", tc.args, code, stderr, tc.want)
		}
	}
	t.Setenv("FEDZIP_DOWNLOAD_CODEC", "topk=0.1,momentum=0.5")
	if code, _, stderr := runCmd("coordinator", "--insecure", "--state-dir", filepath.Join(dir, "y")); code != exitUsage || !strings.Contains(stderr, "momentum") {
		t.Errorf("codec from the environment: exit %d, %q", code, stderr)
	}
}
