package deliver

import (
	"crypto/ed25519"
	"errors"
	"runtime"
	"testing"
)

// computeBomb is a 1 MB file whose prediction costs about 10¹² multiply-
// adds: 60 convolutions with 64×64 kernels on a 2048×2048 input, each
// output 4 M floats (within the default activation limit), then a 64×64
// pool and an fc.
func computeBomb() *File {
	const side, k, layers = 2048, 64, 60
	f := &File{Input: side * side, Shape: Shape{1, side, side}}
	h := side
	for i := range layers {
		w := make([]float32, k*k)
		for j := range w {
			w[j] = 1e-4
		}
		f.Tensors = append(f.Tensors, Tensor{Name: "conv" + string(rune('A'+i%26)) + string(rune('a'+i/26)), Shape: []int{1, 1, k, k}, Encoding: Float32, Values: w})
		f.Layers = append(f.Layers, Layer{Op: OpConv, Weights: []int{i}, Bias: -1, Stride: 1, Pad: 31})
		h = h + 2*31 - k + 1
	}
	f.Layers = append(f.Layers, Layer{Op: OpMaxPool, Kernel: k, Stride: k, Bias: -1})
	h = (h-k)/k + 1
	f.Tensors = append(f.Tensors, Tensor{Name: "fc.weight", Shape: []int{2, h * h}, Encoding: Float32, Values: make([]float32, 2*h*h)})
	f.Layers = append(f.Layers, Layer{Weights: []int{layers}, Bias: -1})
	return f
}

// TestRedteamComputeBomb: a device model file that is small but costs
// about 10¹² multiply-adds per prediction is refused unless it is signed
// by the key the device trusts, and the signature is checked before the
// file is parsed (nothing but the file itself is held). Signed, it loads:
// the signer is trusted for compute, and Net.Ops tells the cost before the
// first prediction.
func TestRedteamComputeBomb(t *testing.T) {
	enc, err := Encode(computeBomb(), testKey)
	if err != nil {
		t.Fatal(err)
	}
	other, _, _ := ed25519.GenerateKey(nil)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err = Load(enc.Data, other)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrSignature) {
		t.Fatalf("a file signed by another key: %v, want ErrSignature", err)
	}
	if a := after.TotalAlloc - before.TotalAlloc; a > 64<<10 {
		t.Errorf("%d bytes allocated before the signature was refused", a)
	}
	n, err := Load(enc.Data, testPub())
	if err != nil {
		t.Fatal(err)
	}
	if n.Ops() < 9e11 {
		t.Errorf("Ops() = %d, want about 10^12", n.Ops())
	}
	t.Logf("a %d-byte file: %.3g multiply-adds per prediction", len(enc.Data), float64(n.Ops()))
}
