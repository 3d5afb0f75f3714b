package main

import (
	"bytes"
	"fmt"
	"image"
	"image/png"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// barClasses are the classes of writeBars's images: where a bright bar
// lies in a dark, noisy 12×12 image.
var barClasses = []string{"top", "bottom", "left", "right"}

// barImage returns a 12×12 grey image of class c (an index into
// barClasses): a bar 2 pixels wide and 8 to 10 long, bright (180–255),
// near the side the class names, shifted by up to a pixel, on a background
// of uniform noise in 0–79.
func barImage(r *rand.Rand, c int) *image.Gray {
	const n = 12
	img := image.NewGray(image.Rect(0, 0, n, n))
	for i := range img.Pix {
		img.Pix[i] = uint8(r.IntN(80))
	}
	at := 1 + r.IntN(2)                // the bar's distance from its side
	from, to := r.IntN(2), n-r.IntN(2) // its extent along the side
	for a := from; a < to; a++ {
		for b := at; b < at+2; b++ {
			x, y := a, b // top
			switch barClasses[c] {
			case "bottom":
				x, y = a, n-1-b
			case "left":
				x, y = b, a
			case "right":
				x, y = n-1-b, a
			}
			img.Pix[y*n+x] = uint8(180 + r.IntN(76))
		}
	}
	return img
}

// barSet returns the images of a client that holds perClass[c] images of
// class c (an index into barClasses).
func barSet(r *rand.Rand, perClass []int) [][]*image.Gray {
	set := make([][]*image.Gray, len(perClass))
	for c, n := range perClass {
		for range n {
			set[c] = append(set[c], barImage(r, c))
		}
	}
	return set
}

// writeBarFolders writes sets as an image folder of the client/class
// layout: root/siteK/CLASS/I.png holds sets[K][class][I].
func writeBarFolders(t *testing.T, root string, sets [][][]*image.Gray) {
	t.Helper()
	for k, set := range sets {
		for c, imgs := range set {
			dir := filepath.Join(root, fmt.Sprint("site", k), barClasses[c])
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			for i, img := range imgs {
				var b bytes.Buffer
				if err := png.Encode(&b, img); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, fmt.Sprint(i, ".png")), b.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
}

// writeBarCSV writes set as CSV rows without a header: the label, then
// the 144 raw pixels row by row. A label is the class's number in an image
// folder, where classes are numbered in the sorted order of their names.
func writeBarCSV(t *testing.T, path string, set [][]*image.Gray) {
	t.Helper()
	sorted := slices.Sorted(slices.Values(barClasses))
	var b strings.Builder
	for c, imgs := range set {
		label := slices.Index(sorted, barClasses[c])
		for _, img := range imgs {
			fmt.Fprint(&b, label)
			for _, v := range img.Pix {
				fmt.Fprintf(&b, ",%d", v)
			}
			b.WriteByte('\n')
		}
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

// writeBarData writes the data of TestCoordinatorTrainsOnFiles's 3
// clients into dir: photos, an image folder of the client/class layout,
// holds site0's and site1's images; table, a CSV, holds site2's. heldOut
// is what each holds out with the fraction holdout. The clients hold
// different counts (30, 38 and 46 images), so that the total they hold
// out (6 + 8 + 9 with 0.2) is not the fraction of the whole (22.8).
func writeBarData(t *testing.T, dir string, holdout float64) (photos, table string, heldOut []int) {
	t.Helper()
	r := rand.New(rand.NewPCG(1, 2))
	sets := make([][][]*image.Gray, 3)
	for k := range sets {
		perClass := []int{6 + 2*k, 7 + 2*k, 8 + 2*k, 9 + 2*k}
		sets[k] = barSet(r, perClass)
		n := 0
		for _, m := range perClass {
			n += m
		}
		heldOut = append(heldOut, int(math.Round(holdout*float64(n)))) // dataset.HoldOut's count
	}
	photos, table = filepath.Join(dir, "photos"), filepath.Join(dir, "site2.csv")
	writeBarFolders(t, photos, sets[:2])
	writeBarCSV(t, table, sets[2])
	return photos, table, heldOut
}

// TestWriteBarData writes TestCoordinatorTrainsOnFiles's data into
// $FEDZIP_WRITE_BARS; it is skipped without it. docs/data.md runs it.
func TestWriteBarData(t *testing.T) {
	dir := os.Getenv("FEDZIP_WRITE_BARS")
	if dir == "" {
		t.Skip("set FEDZIP_WRITE_BARS=DIR to write the bar images into DIR")
	}
	photos, table, _ := writeBarData(t, dir, 0)
	t.Logf("wrote %s and %s", photos, table)
}

// TestCoordinatorTrainsOnFiles is issue 14's second "done when": a
// coordinator with no data and no server-side evaluation trains a conv net
// from a layer spec with 3 client processes over mTLS, each reading its
// data from files: two their part of a folder of PNGs (the client/class
// layout, split naturally), the third a CSV of its own images' pixels.
// Each holds out a fifth of its examples, on which, every round, it
// evaluates the model it trains from. Every round's line must carry the
// federated figures and count every held-out example of the 3 clients,
// and the last round's accuracy, of a model trained for 2 rounds, must be
// far above chance (1/4).
func TestCoordinatorTrainsOnFiles(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process end-to-end test in -short mode")
	}
	const (
		wait    = 2 * time.Minute // each step, on a starved machine (2 busy cores, -race)
		clients = 3               // two on the image folder, one on the CSV
		rounds  = 3
		holdout = 0.2
	)
	dir, bin, certs := buildWithCerts(t)
	photos, table, heldOut := writeBarData(t, dir, holdout)
	allHeldOut := 0
	for _, n := range heldOut {
		allHeldOut += n
	}
	sources := []struct{ dataset, partition, clients, index string }{
		{"images:" + photos + ",layout=client/class", "natural", "2", "0"},
		{"images:" + photos + ",layout=client/class", "natural", "2", "1"},
		{"csv:" + table + ",shape=1x12x12,scale=255,classes=4", "iid", "1", "0"}, // only its own data, whole
	}

	grpcAddr, raftAddr := freePort(t), freePort(t)
	coord := start(t, bin, "coordinator", "coordinator", "--log-format", "json", "--listen", grpcAddr, "--raft-addr", raftAddr,
		"--state-dir", filepath.Join(dir, "coord"), "--join-secret", "e2e",
		// No --dataset and no --eval: the shape and classes are all the
		// coordinator knows of the data.
		"--model", "conv:4x3,pool:2,fc:4", "--input-shape", "1x12x12", "--classes", "4",
		"--rounds", fmt.Sprint(rounds), "--clients-per-round", fmt.Sprint(clients), "--min-clients", fmt.Sprint(clients),
		"--fed-eval-every", "1", "--local-epochs", "5",
		// The old defaults: a top-k fraction of this 188-parameter net is
		// a coordinate or two, and this test is about the data.
		"--upload-codec", "stcm", "--download-codec", "none", "--strategy", "fedavg",
		"--tls-cert", filepath.Join(certs, "server.pem"), "--tls-key", filepath.Join(certs, "server-key.pem"),
		"--client-ca", filepath.Join(certs, "ca.pem"), "--raft-cert", filepath.Join(certs, "node.pem"), "--raft-key", filepath.Join(certs, "node-key.pem"),
		"--raft-ca", filepath.Join(certs, "peer-ca.pem"))
	procs := make([]*proc, clients)
	for i, s := range sources {
		procs[i] = start(t, bin, fmt.Sprintf("client%d", i), "client", "--log-format", "json", "--coordinator", grpcAddr,
			"--ca", filepath.Join(certs, "ca.pem"), "--cert", filepath.Join(certs, "client.pem"), "--key", filepath.Join(certs, "client-key.pem"),
			"--dataset", s.dataset, "--partition", s.partition, "--clients", s.clients, "--client-index", s.index, "--holdout", fmt.Sprint(holdout),
			"--name", fmt.Sprint("site", i), "--join-secret", "e2e", "--state-dir", filepath.Join(dir, fmt.Sprintf("state%d", i)), "--timeout", "5m")
	}
	waitLog(t, coord, "training to finish", 2*wait, func() bool {
		for _, c := range procs {
			select {
			case <-c.done: // a client may finish before the coordinator logs it
				if code := c.cmd.ProcessState.ExitCode(); code != 0 {
					t.Fatalf("%s exited %d during training", c.name, code)
				}
			default:
			}
		}
		return coord.find("training finished", nil) != nil
	})

	var last float64
	for r := 1; r <= rounds; r++ {
		l := coord.find("round closed", map[string]float64{"round": float64(r)})
		if l == nil {
			t.Fatalf("no line for round %d", r)
		}
		t.Logf("round %d: fed_accuracy %v fed_loss %v fed_examples %v fed_reports %v fed_version %v", r, l["fed_accuracy"], l["fed_loss"], l["fed_examples"], l["fed_reports"], l["fed_version"])
		if _, ok := l["test_accuracy"]; ok {
			t.Fatalf("round %d: the coordinator evaluated on data of its own: %v", r, l)
		}
		if l["reported"] != float64(clients) {
			t.Fatalf("round %d closed with %v updates, want %d: %v", r, l["reported"], clients, l)
		}
		acc, ok := l["fed_accuracy"].(float64)
		if !ok || l["fed_reports"] != float64(clients) || l["fed_examples"] != float64(allHeldOut) || l["fed_version"] != float64(r-1) {
			t.Fatalf("round %d: want the federated evaluation of version %d by %d clients of %d held-out examples: %v", r, r-1, clients, allHeldOut, l)
		}
		last = acc
	}
	// The last round evaluates the model after the one before it. The
	// initial model is at chance, about 1/4.
	if last < 0.8 {
		t.Fatalf("federated accuracy of the model after %d rounds %.3f, want >= 0.8", rounds-1, last)
	}
	for i, c := range procs {
		waitLog(t, c, "the client to exit", wait, func() bool {
			select {
			case <-c.done:
				return true
			default:
				return false
			}
		})
		if code := c.cmd.ProcessState.ExitCode(); code != 0 {
			t.Fatalf("%s exited %d", c.name, code)
		}
		// Its log is whole now. It evaluated what it held out: all of
		// it, and only that.
		for r := 1; r <= rounds; r++ {
			if l := c.find("evaluated", map[string]float64{"round": float64(r)}); l == nil || l["examples"] != float64(heldOut[i]) {
				t.Fatalf("%s in round %d: want an evaluation of its %d held-out examples, got %v", c.name, r, heldOut[i], l)
			}
		}
	}
	if log := coord.dump(); strings.Contains(log, photos) || strings.Contains(log, table) {
		t.Fatalf("the coordinator's log names the clients' data")
	}
}
